"""The web transport's HTTP channel: request headers have a deadline (slowloris).

Twisted's own HTTP timeout is an idle timeout (12 hours by default), reset by every
byte, so a client dribbling one header byte every few seconds holds its connection
forever, and a WebSocket upgrade is only seen once all headers are in. Here a
connection must deliver each request's complete headers within ``header_deadline``
seconds of connecting or of starting that request; keep-alive connections between
requests fall under the idle timeout. Once a request is upgraded to a WebSocket,
the WebSocket protocol owns the socket and this channel's timers stand down.
"""

from __future__ import annotations

from twisted.web.http import HTTPChannel

from wampchat.logs import Logger

log = Logger()

# Idle keep-alive HTTP connections (page, /healthz, /metrics) are closed after this.
IDLE_TIMEOUT = 60.0


class DeadlineHTTPChannel(HTTPChannel):
    """An HTTPChannel whose request headers must be complete within header_deadline."""

    header_deadline = 10.0
    _deadline_call = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def lineReceived(self, line: bytes) -> None:
        self._arm()                          # a no-op while one is pending
        super().lineReceived(line)

    def allHeadersReceived(self) -> None:
        self._disarm()
        super().allHeadersReceived()

    def timeoutConnection(self) -> None:
        if self.transport is None:           # upgraded: the WebSocket owns the socket now
            return
        super().timeoutConnection()

    def connectionLost(self, reason) -> None:
        self._disarm()
        super().connectionLost(reason)

    def _arm(self) -> None:
        if self._deadline_call is None and self.transport is not None:
            self._deadline_call = self.callLater(self.header_deadline, self._too_slow)

    def _disarm(self) -> None:
        call, self._deadline_call = self._deadline_call, None
        if call is not None and call.active():
            call.cancel()

    def _too_slow(self) -> None:
        self._deadline_call = None
        if self.transport is not None:
            log.info("closed a connection from {peer}: no complete HTTP request within {seconds} s",
                     peer=str(self.transport.getPeer()), seconds=self.header_deadline)
            self.transport.abortConnection()


def deadline_channel(header_deadline: float) -> type[DeadlineHTTPChannel]:
    """A DeadlineHTTPChannel class with the given deadline (a Site's `protocol`)."""
    return type("DeadlineHTTPChannel", (DeadlineHTTPChannel,), {"header_deadline": header_deadline})
