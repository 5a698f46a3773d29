"""Integration fixtures: a real router on 127.0.0.1 port 0 and real Autobahn clients.

``TestAuthenticators`` accept ``anonymous`` (authrole "user") and ``ticket`` with a
ticket ``"role:authid"``; a token on the upgrade request (``Authorization: Bearer``
or ``?token=``) in that same form authenticates the HELLO directly. Every HELLO's
TransportInfo is recorded so tests can see what the transport captured.

The ``net`` fixture owns every listener and client a test makes and closes them
all at teardown, with bounded waits.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Callable

import pytest_twisted
from autobahn.twisted.rawsocket import WampRawSocketClientFactory
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import (WampWebSocketClientFactory, WebSocketClientFactory,
                                        WebSocketClientProtocol)
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint

from wampchat.auth.authenticator import Accept, Challenge, Hello
from wampchat.config_types import (Endpoint, PermissionConfig, RealmConfig, RoleConfig,
                                   TransportConfig, WebSocketOptions)
from wampchat.errors import BadCredentials
from wampchat.metrics import Metrics
from wampchat.router.realm import Realm
from wampchat.router.session import RouterContext
from wampchat.transport.web import listen

REALM = "test"
WAIT = 5.0          # seconds: the bound on every wait in these tests

CLIENT_SERIALIZERS = {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}


def reactor():
    # pytest-twisted installs the reactor at configure time; import it only once that ran.
    from twisted.internet import reactor as installed
    return installed


def within(d: Deferred, seconds: float = WAIT) -> Deferred:
    """d, failing with TimeoutError if it has not fired after seconds."""
    return d.addTimeout(seconds, reactor())


def _everything(name: str) -> RoleConfig:
    return RoleConfig(name, (PermissionConfig(uri="", match="prefix", call=True, register=True,
                                              publish=True, subscribe=True,
                                              disclose_publisher=True, disclose_caller=True),))


REALM_CONFIG = RealmConfig(REALM, (_everything("backend"), _everything("user")))


def _accept_ticket(ticket: str, method: str) -> Accept:
    role, _, authid = ticket.partition(":")
    if role not in ("backend", "user") or not authid:
        raise BadCredentials("ticket must be 'role:authid'")
    return Accept(authid=authid, authrole=role, authmethod=method, authprovider="test")


class AnonymousForTests:
    """anonymous: welcomed as authrole "user" with a numbered authid."""

    authmethod = "anonymous"
    takes_transport_token = False

    def __init__(self, hellos: list[Hello]) -> None:
        self._hellos = hellos

    async def hello(self, hello: Hello) -> Accept:
        self._hellos.append(hello)
        return Accept(authid=f"anon-{len(self._hellos)}", authrole="user",
                      authmethod="anonymous", authprovider="test")

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        raise BadCredentials("anonymous has no challenge")


class TicketForTests:
    """ticket "role:authid"; a transport token of the same form skips the CHALLENGE."""

    authmethod = "ticket"
    takes_transport_token = True

    def __init__(self, hellos: list[Hello]) -> None:
        self._hellos = hellos

    async def hello(self, hello: Hello) -> Accept | Challenge:
        self._hellos.append(hello)
        if hello.transport.bearer_token:
            return _accept_ticket(hello.transport.bearer_token, "ticket")
        return Challenge("ticket")

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        return _accept_ticket(signature, "ticket")


class TestRouter:
    """One realm, the test authenticators, a Metrics; listens on transports on demand."""

    __test__ = False    # not a test class, despite the name

    def __init__(self) -> None:
        self.hellos: list[Hello] = []       # every HELLO the authenticators saw, in order
        self.realm = Realm(REALM_CONFIG, reactor())
        self.metrics = Metrics()
        self.metrics.watch_realm(self.realm)
        self.context = RouterContext({REALM: self.realm},
                                     {"anonymous": AnonymousForTests(self.hellos),
                                      "ticket": TicketForTests(self.hellos)},
                                     reactor(), observer=self.metrics)


class Client(ApplicationSession):
    """An Autobahn session that joins REALM and reports join/leave as Deferreds."""

    def __init__(self, authmethods: list[str], ticket: str | None = None) -> None:
        super().__init__(ComponentConfig(REALM))
        self._authmethods = authmethods
        self._ticket = ticket
        self.joined: Deferred = Deferred()
        self.left: Deferred = Deferred()          # fires with CloseDetails
        self.disconnected: Deferred = Deferred()

    def onConnect(self) -> None:
        self.join(REALM, authmethods=self._authmethods)

    def onChallenge(self, challenge) -> str:
        return self._ticket or ""

    def onJoin(self, details) -> None:
        self.joined.callback(details)

    def onLeave(self, details) -> None:
        if not self.joined.called:
            self.joined.errback(RuntimeError(f"not welcomed: {details.reason} {details.message}"))
        if not self.left.called:
            self.left.callback(details)
        self.disconnect()

    def onDisconnect(self) -> None:
        if not self.joined.called:
            self.joined.errback(RuntimeError("disconnected before WELCOME"))
        if not self.disconnected.called:
            self.disconnected.callback(None)


class RawWebSocket(WebSocketClientProtocol):
    """A WebSocket client that sends whatever bytes a test wants and records replies."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred = Deferred()
        self.frames: DeferredQueue = DeferredQueue()   # (payload, is_binary) per message
        self.closed: Deferred = Deferred()             # fires with the close code

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.put((payload, isBinary))

    def onClose(self, wasClean: bool, code, reason) -> None:
        if not self.opened.called:
            self.opened.errback(RuntimeError(f"WebSocket not opened: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback(code)

    async def next_json(self) -> list:
        payload, is_binary = await within(self.frames.get())
        assert not is_binary
        return json.loads(payload)


class RawSocketPeer(protocol.Protocol):
    """A bare TCP RawSocket peer: handshake by hand, frames by hand."""

    def __init__(self) -> None:
        self.buffer = b""
        self.lost: Deferred = Deferred()
        self._waiting: Deferred | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    def connectionLost(self, reason) -> None:
        if not self.lost.called:
            self.lost.callback(None)
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    async def read(self, count: int) -> bytes:
        await self.read_until(lambda buffer: len(buffer) >= count)
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    async def read_until(self, done: Callable[[bytes], bool]) -> bytes:
        """Wait (each wait bounded) until done(buffer) holds; the buffer stays in place."""
        while not done(self.buffer):
            if self.lost.called:
                raise ConnectionError(f"lost with {len(self.buffer)} bytes received")
            self._waiting = Deferred()
            await within(self._waiting)
        return self.buffer

    def send_frame(self, payload: bytes) -> None:
        self.transport.write(struct.pack("!I", len(payload)) + payload)

    async def read_frame(self) -> bytes:
        (length,) = struct.unpack("!I", await self.read(4))
        return await self.read(length & 0xFFFFFF)


class Net:
    """Listeners and clients of one test; `close()` ends them all."""

    def __init__(self) -> None:
        self.router = TestRouter()
        self._ports: list[Any] = []
        self._clients: list[Client] = []
        self._protocols: list[Any] = []     # raw clients' protocols

    async def listen(self, kind: str = "web", **settings: Any) -> int:
        """Listen on a fresh port of 127.0.0.1; the port number."""
        options = settings.pop("options", WebSocketOptions(auto_ping_interval=0))
        config = TransportConfig(type=kind, endpoint=Endpoint("127.0.0.1", 0), options=options,
                                 **settings)
        port = await listen(reactor(), config, self.router.context, self.router.metrics)
        self._ports.append(port)
        return port.getHost().port

    async def websocket(self, port: int, serializer: str = "json", path: str = "ws",
                        authmethods: list[str] | None = None, ticket: str | None = None,
                        headers: dict[str, str] | None = None, query: str = "") -> Client:
        """A joined client over WebSocket."""
        session = Client(authmethods or ["anonymous"], ticket)
        factory = WampWebSocketClientFactory(
            lambda: session, url=f"ws://127.0.0.1:{port}/{path}{query}",
            serializers=[CLIENT_SERIALIZERS[serializer]()], headers=headers)
        return await self._join(port, factory, session)

    async def rawsocket(self, port: int, serializer: str = "json",
                        authmethods: list[str] | None = None, ticket: str | None = None) -> Client:
        """A joined client over RawSocket."""
        session = Client(authmethods or ["anonymous"], ticket)
        factory = WampRawSocketClientFactory(lambda: session,
                                             serializer=CLIENT_SERIALIZERS[serializer]())
        return await self._join(port, factory, session)

    async def _join(self, port: int, factory: Any, session: Client) -> Client:
        self._clients.append(session)
        await TCP4ClientEndpoint(reactor(), "127.0.0.1", port, timeout=WAIT).connect(factory)
        await within(session.joined)
        return session

    async def raw_websocket(self, port: int, path: str = "ws",
                            subprotocol: str = "wamp.2.json", compress: bool = False) -> RawWebSocket:
        """An open WebSocket that speaks no WAMP by itself."""
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/{path}", protocols=[subprotocol])
        factory.protocol = RawWebSocket
        if compress:
            from autobahn.websocket.compress import (PerMessageDeflateOffer,
                                                     PerMessageDeflateResponse,
                                                     PerMessageDeflateResponseAccept)

            def accept(response):
                if isinstance(response, PerMessageDeflateResponse):
                    return PerMessageDeflateResponseAccept(response)
                return None

            factory.setProtocolOptions(perMessageCompressionOffers=[PerMessageDeflateOffer()],
                                       perMessageCompressionAccept=accept)
        client = await TCP4ClientEndpoint(reactor(), "127.0.0.1", port, timeout=WAIT).connect(factory)
        self._protocols.append(client)
        await within(client.opened)
        return client

    async def raw_rawsocket(self, port: int, serializer_id: int = 1) -> RawSocketPeer:
        """A TCP peer that did the RawSocket handshake (max 16 MiB, the given serializer)."""
        peer = await TCP4ClientEndpoint(reactor(), "127.0.0.1", port, timeout=WAIT).connect(
            protocol.Factory.forProtocol(RawSocketPeer))
        self._protocols.append(peer)
        peer.transport.write(bytes([0x7F, 0xF0 | serializer_id, 0, 0]))
        reply = await peer.read(4)
        assert reply[0] == 0x7F and reply[1] & 0x0F == serializer_id
        return peer

    async def close(self) -> None:
        for session in self._clients:
            if session.is_attached():
                session.leave()
            elif session.is_connected():
                session.disconnect()
        for session in self._clients:
            if not session.disconnected.called:
                try:
                    await within(session.disconnected, 2.0)
                except Exception:
                    pass        # already logged by the failing test, if it matters
        for proto in self._protocols:
            if proto.transport is not None and proto.transport.connected:
                proto.transport.abortConnection()
        for port in self._ports:
            await port.stopListening()


@pytest_twisted.async_yield_fixture
async def net():
    """A TestRouter plus every socket the test opens, all closed at the end."""
    network = Net()
    yield network
    await network.close()
