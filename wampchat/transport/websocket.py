"""WAMP over WebSocket: subprotocols, token capture, auto-ping, message size, violations.

One ``RouterWebSocketFactory`` serves one listening transport (or the ``/ws``
resource of the web transport). Each connection becomes one ``RouterSession``
created from the transport's ``RouterContext``.

Serializers are shared: ``SHARED_SERIALIZERS`` holds one instance per kind for the
whole process. Autobahn caches a message's bytes per inner object serializer, so
one EVENT fanned out to many subscribers is serialized once per serializer kind,
whatever transport or factory those subscribers came through.

Autobahn's own ``onMessage`` fails the connection with close code 1002 on a
``ProtocolError``; here the session answers instead (ABORT before WELCOME,
GOODBYE after, ``wamp.error.protocol_violation``) and then the connection closes.
"""

from __future__ import annotations

from typing import Any, Callable

from autobahn.twisted.websocket import WampWebSocketServerFactory, WampWebSocketServerProtocol
from autobahn.wamp.exception import ProtocolError, TransportLost
from autobahn.wamp.serializer import Serializer
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import succeed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from wampchat import errors
from wampchat.auth.authenticator import TransportInfo
from wampchat.config_types import WebSocketOptions
from wampchat.logs import Logger
from wampchat.router.session import RouterContext, RouterSession
from wampchat.transport import autobahn_tuning  # noqa: F401  (cheaper frames; see there)
from wampchat.transport.serializers import (RouterCBORSerializer, RouterJsonSerializer,
                                            RouterMsgPackSerializer)
from wampchat.transport.writes import WRITES

log = Logger()

# serializer id ("json", "msgpack", "cbor") -> the one instance every transport uses
SHARED_SERIALIZERS: dict[str, Serializer] = {
    "json": RouterJsonSerializer(),
    "msgpack": RouterMsgPackSerializer(),
    "cbor": RouterCBORSerializer(),
}

# Headers kept in TransportInfo.http_headers: never credentials (no token in logs).
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def shared_serializers(names: tuple[str, ...] | list[str]) -> list[Serializer]:
    """The shared serializer instances for names, in order. Raises ValueError if unknown."""
    unknown = [name for name in names if name not in SHARED_SERIALIZERS]
    if unknown:
        raise ValueError(f"unknown serializers {unknown}; expected json, msgpack or cbor")
    return [SHARED_SERIALIZERS[name] for name in names]


def bearer_from_header(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


@implementer(IPushProducer)
class OutboundGuard:
    """Bounds what one connection may have queued for a peer that does not read.

    Registered as the streaming producer of the TCP transport: Twisted pauses it
    when the socket's write buffer is full and resumes it when the buffer drains.
    Bytes written while paused are counted; over ``limit`` the session is a slow
    consumer and ``on_overflow(subject)`` runs once, on a later reactor turn (never
    inside the broker's fan-out that was writing). A function and its argument, not a
    closure: every connection has a guard, and fewer objects per session are less
    for the garbage collector to walk.
    """

    def __init__(self, limit: int, clock: Any, on_overflow: Callable[[Any], None],
                 subject: Any) -> None:
        self._limit = limit
        self._clock = clock
        self._on_overflow = on_overflow
        self._subject = subject
        self._paused = False
        self._queued_while_paused = 0       # bytes written since the last pause
        self.overflowed = False

    def attach(self, transport: Any) -> None:
        """Become the transport's producer (the web transport's HTTP channel was one)."""
        try:
            transport.registerProducer(self, True)
        except RuntimeError:
            # After a WebSocket upgrade on the web site, the HTTP channel that no longer
            # reads this connection is still registered: take its place.
            transport.unregisterProducer()
            transport.registerProducer(self, True)

    def admit(self, nbytes: int) -> bool:
        """Whether nbytes more may be written; False once the peer is a slow consumer."""
        if self.overflowed:
            return False
        if self._paused:
            self._queued_while_paused += nbytes
            if self._limit > 0 and self._queued_while_paused > self._limit:
                self.overflowed = True
                self._clock.callLater(0, self._on_overflow, self._subject)
                return False
        return True

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._queued_while_paused = 0

    def stopProducing(self) -> None:
        self._paused = False


def end_slow_consumer(session: RouterSession) -> None:
    """GOODBYE wampchat.close.slow_consumer to a session whose outbound buffer is full."""
    session.count_dropped("slow_consumer")
    log.warn("session {session_id} from {peer} is a slow consumer: ending it",
             session_id=session.id, peer=session.info.peer)
    session.close_by_router(errors.CLOSE_SLOW_CONSUMER,
                            "the client did not keep up with its messages")


def peer_address(transport) -> str:
    """The client's IP address (the admission limits count per address)."""
    peer = transport.getPeer() if transport is not None else None
    return str(getattr(peer, "host", None) or peer or "unknown")


def refuse_connection(context: RouterContext, peer: str | None, refusal: str) -> None:
    """Log and count a connection turned away by the admission limits."""
    context.observer.login("refused", "connection_limit")
    log.warn("connection from {peer} refused: {refusal}", peer=peer, refusal=refusal)


# The last WebSocket frame built, per kind (text/binary): a fan-out sends the same payload
# object (serialized once per serializer) to every subscriber of that serializer, so the
# frame around it is built once too (the raw ceiling's sendPreparedMessage).
_last_frames: dict[bool, tuple[bytes, PreparedMessage]] = {}


def _prepared(payload: bytes, is_binary: bool) -> PreparedMessage:
    last = _last_frames.get(is_binary)
    if last is not None and last[0] is payload:
        return last[1]
    prepared = PreparedMessage(payload, is_binary, False, False)   # server frames: unmasked
    _last_frames[is_binary] = (payload, prepared)
    return prepared


class HoldsAdmissionSlot:
    """Mixin of the router's socket protocols: on close the admission slot is given back,
    and the connection lets go of what leads back to it."""

    _slot: str | None = None        # the client address whose admission slot this holds

    def connectionLost(self, reason) -> None:
        try:
            super().connectionLost(reason)      # type: ignore[misc]
        finally:
            if self._slot is not None:
                self.factory.context.admission.release(self._slot)   # type: ignore[attr-defined]
                self._slot = None
            # Without these a closed connection is a cycle (its guard's callback and its
            # session lead back here; Autobahn's fired is_closed holds it), freed only by
            # a full garbage collection, whose pause grows with all it walks: 37 objects a
            # connection, 70 ms for 2000 closed ones. Now it goes when the reactor drops it.
            self._session = self._guard = None
            self.is_closed = succeed(None)


class RouterWebSocketProtocol(HoldsAdmissionSlot, WampWebSocketServerProtocol):
    """One WAMP-over-WebSocket connection to the router (Autobahn ITransport)."""

    factory: RouterWebSocketFactory

    _info: TransportInfo | None = None
    _guard: OutboundGuard | None = None

    def onConnect(self, request: ConnectionRequest) -> tuple[str, dict[str, str]]:
        """Pick the first WAMP subprotocol we speak; keep the peer and any bearer token."""
        for subprotocol in request.protocols:
            serializer_id = subprotocol[len("wamp.2."):] if subprotocol.startswith("wamp.2.") else None
            serializer = self.factory.serializers.get(serializer_id or "")
            if serializer is not None:
                self._serializer = serializer
                break
        else:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST,
                                 "this router speaks the WebSocket subprotocols "
                                 + ", ".join(self.factory.protocols))
        admission = self.factory.context.admission
        address = peer_address(self.transport)
        if admission.blocked(address):
            # blocked while this connection was being accepted: no handshake work for it
            raise ConnectionDeny(429, "too many failed logins from this address")
        refusal = admission.acquire(address)
        if refusal is not None:
            refuse_connection(self.factory.context, self.peer, refusal)
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, refusal)
        self._slot = address
        self._info = TransportInfo(kind="websocket", peer=self.peer or str(request.peer),
                                   bearer_token=self._token_of(request),
                                   http_headers={name: value for name, value in request.headers.items()
                                                 if name.lower() not in _SECRET_HEADERS})
        return subprotocol, {}

    def _token_of(self, request: ConnectionRequest) -> str | None:
        token = bearer_from_header(request.headers.get("authorization"))
        if token is None and self.factory.options.allow_query_token:
            values = request.params.get("token") or []
            token = values[0] if values and values[0] else None
        return token

    def onOpen(self) -> None:
        """Handshake done: create the router session for this connection."""
        assert self._info is not None
        session = self.factory.context.session(self._info)
        session.address = self._slot or ""
        self._session = session
        self._guard = OutboundGuard(self.factory.context.limits.outbound_buffer_bytes,
                                    self.factory.context.clock, end_slow_consumer, session)
        self._guard.attach(self.transport)
        self._freeze_handshake_state()
        session.onOpen(self)

    def _freeze_handshake_state(self) -> None:
        # Autobahn's lists from the opening handshake are only read from here on; as tuples
        # of strings the garbage collector stops walking them (up to four per connection).
        self.websocket_protocols = tuple(self.websocket_protocols or ())
        self.websocket_extensions = tuple(self.websocket_extensions or ())
        if not self.websocket_extensions_in_use:
            self.websocket_extensions_in_use = ()
        self._valid_events = tuple(self._valid_events or ())

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's formats the arguments of a debug log line (hltype, hlval) on every read.
        # What the router sends while handling these bytes goes out once at the end.
        WRITES.handling(self._dataReceived, data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Every frame (the router's, Autobahn's handshake answer, close and ping) through
        the router's write path, in order; Autobahn's also formatted debug-log arguments
        and kept traffic statistics on every write (a tenth of a fan-out's CPU)."""
        if sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)
        else:
            WRITES.write(self.transport, data)

    def onMessageEnd(self) -> None:
        # Autobahn's also fires a "message" event through a Deferred per message; nothing
        # in the router listens to it.
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Decode and hand to the session; a bad frame is a protocol violation, not a crash."""
        session = self._session
        if session is None:
            return
        try:
            # Raises ProtocolError for undecodable bytes, a malformed message, or a
            # binary frame on a text serializer (and the reverse).
            messages = self._serializer.unserialize(payload, isBinary)
        except ProtocolError as exc:
            session.protocol_violation(str(exc))
            return
        for msg in messages:
            session.onMessage(msg)

    # -- ITransport --------------------------------------------------------------------

    def send(self, msg: Any) -> None:
        """Serialize (cached per shared serializer) and send; drops what cannot go out."""
        if not self.isOpen():
            raise TransportLost()
        try:
            payload, is_binary = self._serializer.serialize(msg)
        except Exception as exc:      # a value this serializer cannot encode: only this peer
            log.warn("cannot serialize a {kind} for {peer}: {error}", kind=type(msg).__name__,
                     peer=self.peer, error=str(exc))
            self.factory.context.observer.dropped("unserializable")
            return
        size = len(payload)
        if self._guard is not None and not self._guard.admit(size):
            return
        if 0 < self.maxMessagePayloadSize < size:
            # An outgoing message over max_message_size: this peer cannot take it.
            log.warn("dropped a {kind} of {size} bytes for {peer}: over the message size limit",
                     kind=type(msg).__name__, size=size, peer=self.peer)
            self.factory.context.observer.dropped("message_too_large")
            return
        # Uncompressed, the prepared frame goes to sendData (below); compressed per connection.
        self.sendPreparedMessage(_prepared(payload, is_binary))

    def isOpen(self) -> bool:
        # Autobahn's check is "has a session"; a closing WebSocket cannot send either.
        return self._session is not None and self.state == WebSocketProtocol.STATE_OPEN

    def close(self) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendClose(WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL)

    def abort(self) -> None:
        if self.state != WebSocketProtocol.STATE_CLOSED:
            self._fail_connection(WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY)


def _accept_deflate(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
    """Accept the client's first permessage-deflate offer, as the browser sends it."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


class RouterWebSocketFactory(WampWebSocketServerFactory):
    """WebSocket server factory of one transport: context, options, shared serializers.

    ``options.max_message_size`` limits both a frame and a whole message; with
    permessage-deflate Autobahn applies it to the inflated size (it bounds the
    inflation itself), so a small compressed bomb is refused with close 1009.
    """

    protocol = RouterWebSocketProtocol

    def __init__(self, context: RouterContext, options: WebSocketOptions | None = None,
                 serializers: tuple[str, ...] = ("json", "msgpack", "cbor"),
                 url: str | None = None) -> None:
        self.context = context
        self.options = options or WebSocketOptions()
        chosen = shared_serializers(serializers)
        # Sessions are made in RouterWebSocketProtocol.onOpen with the TransportInfo of
        # their connection, never through Autobahn's session factory.
        super().__init__(self._no_session_factory, url=url, serializers=chosen,
                         server="wampchat", reactor=context.clock)
        # serializer id -> shared instance; the base class keeps the same in _serializers.
        self.serializers: dict[str, Serializer] = {s.SERIALIZER_ID: s for s in chosen}
        self.noisy = False
        autobahn_tuning.lean_batched_timer(self._batched_timer)
        opts = self.options
        self.setProtocolOptions(
            maxFramePayloadSize=opts.max_message_size,
            maxMessagePayloadSize=opts.max_message_size,
            autoPingInterval=opts.auto_ping_interval,
            autoPingTimeout=opts.auto_ping_timeout,
            openHandshakeTimeout=opts.open_handshake_timeout,
            # Send the close frame (1009, 1002, ...) before dropping, so the peer learns why.
            failByDrop=False,
            perMessageCompressionAccept=_accept_deflate if opts.compression else (lambda _: None),
        )
        # Autobahn copies its ~40 protocol options from the factory onto every connection
        # unless the protocol class already has them: a class of this factory's own that
        # carries them keeps every idle session smaller (and its connect cheaper).
        # (Callables are wrapped so they do not turn into methods of the class.)
        self.protocol = type(self.protocol.__name__, (self.protocol,), {
            attr: staticmethod(value) if callable(value) else value
            for attr, value in ((a, getattr(self, a)) for a in self.protocol.CONFIG_ATTRS)})

    @staticmethod
    def _no_session_factory() -> None:
        raise RuntimeError("router sessions are created by RouterWebSocketProtocol.onOpen")
