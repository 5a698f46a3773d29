"""WAMP over RawSocket, for backend components: serializers, message size, violations.

Same contract as the WebSocket transport: one ``RouterSession`` per connection,
the process-wide shared serializers (one serialization per kind per message), and
an undecodable, malformed or oversize message ends only that session with ABORT
(before WELCOME) or GOODBYE (after) ``wamp.error.protocol_violation``. Autobahn's
own handling would drop the connection silently or raise out of ``dataReceived``.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.rawsocket import WampRawSocketServerFactory, WampRawSocketServerProtocol
from autobahn.wamp.exception import ProtocolError, TransportLost
from autobahn.wamp.serializer import Serializer

from wampchat.auth.authenticator import TransportInfo
from wampchat.logs import Logger
from wampchat.router.session import RouterContext
from wampchat.transport.websocket import (HoldsAdmissionSlot, OutboundGuard, end_slow_consumer,
                                          peer_address, refuse_connection, shared_serializers)
from wampchat.transport.writes import WRITES

log = Logger()

# RawSocket's handshake can announce a maximum from 2**9 to 2**24 bytes.
MIN_MESSAGE_SIZE = 512
MAX_MESSAGE_SIZE = 2 ** 24
MAX_CONNECTIONS_REPLY = bytes((0x7F, 0x40, 0x00, 0x00))


class RouterRawSocketProtocol(HoldsAdmissionSlot, WampRawSocketServerProtocol):
    """One WAMP-over-RawSocket connection to the router (Autobahn ITransport)."""

    factory: RouterRawSocketFactory

    _closing = False
    _guard: OutboundGuard | None = None

    _refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        address = peer_address(self.transport)
        refusal = self.factory.context.admission.acquire(address)
        if refusal is not None:
            self._refused = True
            refuse_connection(self.factory.context, address, refusal)
            # RawSocket's handshake error 4: "maximum connection count reached".
            self.transport.write(MAX_CONNECTIONS_REPLY)
            self.transport.loseConnection()
            return
        self._slot = address

    def dataReceived(self, data: bytes) -> None:
        if not self._refused:
            # WebSocket peers' frames caused by these bytes go out once at the end.
            WRITES.handling(super().dataReceived, data)

    def _on_handshake_complete(self) -> None:
        """Serializer agreed: create the router session for this connection."""
        # Autobahn copied the factory's serializer; use the shared instance itself.
        self._serializer = self.factory.serializers[self._serializer.RAWSOCKET_SERIALIZER_ID]
        context = self.factory.context
        session = context.session(TransportInfo(kind="rawsocket", peer=self.peer or "unknown"))
        session.address = self._slot or ""
        self._session = session
        self._guard = OutboundGuard(context.limits.outbound_buffer_bytes, context.clock,
                                    end_slow_consumer, session)
        self._guard.attach(self.transport)
        session.onOpen(self)

    def lengthLimitExceeded(self, length: int) -> None:
        # The frame header announced more than we accept: refuse before buffering it.
        self._violation(f"message of {length} bytes is over the limit of "
                        f"{self.factory.max_message_size} bytes")

    def stringReceived(self, payload: bytes) -> None:
        """One complete RawSocket message: decode it and hand it to the session."""
        session = self._session
        if session is None or self._closing:
            return
        if len(payload) > self.factory.max_message_size:
            # MAX_LENGTH is rounded up to a power of two for the handshake; the
            # configured limit is the one enforced.
            self.lengthLimitExceeded(len(payload))
            return
        try:
            messages = self._serializer.unserialize(payload)
        except ProtocolError as exc:
            self._violation(str(exc))
            return
        for msg in messages:
            session.onMessage(msg)

    def _violation(self, text: str) -> None:
        session = self._session
        if session is not None:
            session.protocol_violation(text)
        else:
            log.warn("protocol violation from {peer}: {text}", peer=self.peer, text=text)
            self.abort()

    # -- ITransport --------------------------------------------------------------------

    def send(self, msg: Any) -> None:
        """Serialize (cached per shared serializer) and send; drops what cannot go out."""
        if not self.isOpen():
            raise TransportLost()
        observer = self.factory.context.observer
        try:
            payload, _ = self._serializer.serialize(msg)
        except Exception as exc:      # a value this serializer cannot encode: only this peer
            log.warn("cannot serialize a {kind} for {peer}: {error}", kind=type(msg).__name__,
                     peer=self.peer, error=str(exc))
            observer.dropped("unserializable")
            return
        if self._max_len_send and len(payload) > self._max_len_send:
            log.warn("dropped a {kind} of {size} bytes for {peer}: over the peer's limit",
                     kind=type(msg).__name__, size=len(payload), peer=self.peer)
            observer.dropped("message_too_large")
            return
        if self._guard is not None and not self._guard.admit(len(payload) + 4):
            return
        self.sendString(payload)

    def isOpen(self) -> bool:
        return self._session is not None and not self._closing

    def close(self) -> None:
        if self.transport is None or self._closing:
            return
        if self._guard is not None and self._guard.overflowed:
            # loseConnection would wait for a buffer this peer is not reading.
            self.abort()
            return
        self._closing = True
        self.transport.loseConnection()

    def abort(self) -> None:
        self._closing = True
        super().abort()


class RouterRawSocketFactory(WampRawSocketServerFactory):
    """RawSocket server factory of one transport: context, size limit, shared serializers."""

    protocol = RouterRawSocketProtocol

    def __init__(self, context: RouterContext,
                 serializers: tuple[str, ...] = ("json", "msgpack", "cbor"),
                 max_message_size: int = 1048576) -> None:
        if not MIN_MESSAGE_SIZE <= max_message_size <= MAX_MESSAGE_SIZE:
            raise ValueError(f"max_message_size must be {MIN_MESSAGE_SIZE}..{MAX_MESSAGE_SIZE}")
        self.context = context
        self.max_message_size = max_message_size
        chosen = shared_serializers(serializers)
        super().__init__(self._no_session_factory, serializers=chosen)
        # RawSocket serializer id (1 json, 2 msgpack, 3 cbor) -> shared instance
        self.serializers: dict[int, Serializer] = {s.RAWSOCKET_SERIALIZER_ID: s for s in chosen}
        self.setProtocolOptions(maxMessagePayloadSize=max_message_size)
        self.noisy = False

    @staticmethod
    def _no_session_factory() -> None:
        raise RuntimeError("router sessions are created by RouterRawSocketProtocol")
