"""The `web` transport's front door: a WebSocket upgrade skips the HTTP resource tree.

Every connection's request line is read first. A ``GET`` of the WebSocket path goes
straight to the WAMP WebSocket protocol, which parses the upgrade itself (as a plain
`websocket` transport does); anything else (the page, /healthz, /metrics, the dev
issuer...) goes to the twisted.web ``Site``. Going through ``Site`` and
``WebSocketResource`` for each upgrade parsed every request twice and cost about a
fifth of a handshake's CPU in the benchmark profile. The Site still mounts the
WebSocket resource, for an upgrade on a connection that already served a page.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol

from wampchat.logs import Logger

log = Logger()

MAX_REQUEST_LINE = 8192


class FirstLineDispatch(Protocol):
    """Buffers the request line, then hands the connection (and the bytes) on."""

    def __init__(self, front: UpgradeDispatchFactory) -> None:
        self._front = front
        self._buffer = b""
        self._deadline = None

    def connectionMade(self) -> None:
        self._deadline = self._front.clock.callLater(self._front.deadline, self._too_slow)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_REQUEST_LINE:
                self._stop()
                self.transport.abortConnection()
            return
        peer = self.transport.getPeer()
        if self._front.blocked(getattr(peer, "host", "")):
            # blocked while this connection waited: no parsing, no handshake for it
            self._stop()
            self.transport.abortConnection()
            return
        target = self._front.choose(self._buffer[:end])
        protocol = target.buildProtocol(peer)
        self._stop()
        if protocol is None:
            self.transport.abortConnection()
            return
        buffered, self._buffer = self._buffer, b""
        self.transport.protocol = protocol          # the TCP transport now feeds it
        protocol.makeConnection(self.transport)
        protocol.dataReceived(buffered)

    def connectionLost(self, reason) -> None:
        self._stop()

    def _too_slow(self) -> None:
        self._deadline = None
        log.info("closed a connection from {peer}: no request line within {seconds} s",
                 peer=str(self.transport.getPeer()), seconds=self._front.deadline)
        self.transport.abortConnection()

    def _stop(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()


class UpgradeDispatchFactory(Factory):
    """Connections of a `web` transport: WebSocket upgrades of ws_path to websocket_factory,
    everything else to site."""

    noisy = False

    def __init__(self, site: Any, websocket_factory: Any, ws_path: str, clock: Any,
                 deadline: float, blocked: Any = lambda address: False) -> None:
        self.site = site
        self.blocked = blocked              # address -> whether its connections are refused
        self.websocket_factory = websocket_factory
        self.clock = clock
        self.deadline = deadline
        path = b"/" + ws_path.strip("/").encode("utf-8")
        self._exact = b"GET " + path + b" "
        self._with_query = b"GET " + path + b"?"

    def choose(self, request_line: bytes) -> Any:
        if request_line.startswith(self._exact) or request_line.startswith(self._with_query):
            return self.websocket_factory
        return self.site

    def buildProtocol(self, addr) -> FirstLineDispatch:
        return FirstLineDispatch(self)

    def doStart(self) -> None:
        self.site.doStart()
        self.websocket_factory.doStart()

    def doStop(self) -> None:
        self.site.doStop()
        self.websocket_factory.doStop()
