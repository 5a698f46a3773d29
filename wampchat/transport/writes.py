"""Writes to client sockets: gathered while one incoming chunk is handled, then sent at once.

Twisted's ``transport.write`` queues the bytes, registers the socket for writing
(an ``epoll_ctl``), and sends them on the next reactor turn, when the socket is
reported writable, then unregisters it (another ``epoll_ctl``). For a router that
answers most requests with one small frame per connection, that turn is a tenth of
a handshake's and of an RPC's CPU in the benchmark profile.

Here, while the router handles what one connection sent (``WriteBatch.handling``),
the frames for each destination are gathered; at the end, each destination gets
one ``send()`` on its socket. Outside of that (timers, database answers) a frame is
sent at once. Whenever Twisted still holds unsent bytes for a socket, or the socket
takes only part of a send, the rest goes through ``transport.write`` behind them, so
the order on the wire is always the order of the writes and Twisted's flow control
(pausing a producer on a full buffer) works as before. Any transport other than a
plain TCP connection (TLS, memory, tests) always gets ``transport.write``.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import tcp

# Transports whose socket may be written directly (not TLS, which wraps its own buffer).
_DIRECT_TYPES = (tcp.Server, tcp.Client)


def send_now(transport: Any, data: bytes) -> None:
    """Send data on transport's socket right away when nothing is queued ahead of it."""
    if type(transport) in _DIRECT_TYPES and transport.connected \
            and not transport.disconnecting and not transport._aborting \
            and not transport._tempDataLen and len(transport.dataBuffer) == transport.offset:
        try:
            sent = transport.socket.send(data)
        except OSError:
            # Full (EAGAIN) or broken: Twisted sends it later, or finds the error and
            # reports the connection lost, as it would have.
            sent = 0
        if sent >= len(data):
            return
        data = data[sent:]
    transport.write(data)


class WriteBatch:
    """Frames for each transport gathered while an incoming chunk is handled."""

    def __init__(self) -> None:
        self._depth = 0                                   # nested handling() calls
        self._pending: dict[Any, list[bytes]] = {}        # transport -> frames, in order

    def write(self, transport: Any, data: bytes) -> None:
        if not self._depth:
            send_now(transport, data)
            return
        frames = self._pending.get(transport)
        if frames is None:
            self._pending[transport] = [data]
        else:
            frames.append(data)

    def handling(self, receive: Callable[[bytes], None], data: bytes) -> None:
        """receive(data), gathering its writes; the outermost handling sends them at the end."""
        self._depth += 1
        try:
            receive(data)
        finally:
            self._depth -= 1
            if not self._depth and self._pending:
                self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for transport, frames in pending.items():
            send_now(transport, frames[0] if len(frames) == 1 else b"".join(frames))


# One per process: the reactor is single-threaded.
WRITES = WriteBatch()
