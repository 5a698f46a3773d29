"""In-process transports: a pair of connected ends passing WAMP message objects.

In-process components (the chat and activity services) attach to the router as
real WAMP sessions over this, with the same HELLO/WELCOME as any socket client.
Messages are delivered on a later reactor turn, in order, like a socket, so a
handler publishing from an event never re-enters the broker mid fan-out.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from autobahn.wamp.exception import TransportLost
from autobahn.wamp.serializer import JsonSerializer
from autobahn.wamp.types import TransportDetails
from twisted.internet.interfaces import IReactorTime

from wampchat.auth.authenticator import TransportInfo


class MemoryTransport:
    """One end of an in-process pair (Autobahn ITransport)."""

    # Autobahn's ApplicationSession reads the serializer id for its SessionDetails.
    _serializer = JsonSerializer()

    def __init__(self, clock: IReactorTime, handler: Any) -> None:
        self._clock = clock
        self._handler = handler              # the ITransportHandler on this end
        self.peer: MemoryTransport | None = None
        self._inbox: deque = deque()         # messages for our handler, in order
        self._flush_pending = False
        self._open = True
        self.transport_details = TransportDetails(channel_type=TransportDetails.CHANNEL_TYPE_FUNCTION,
                                                  peer="memory")

    # ITransport ---------------------------------------------------------------------

    def send(self, msg: Any) -> None:
        if not self._open or self.peer is None:
            raise TransportLost()
        self.peer._deliver(msg)

    def isOpen(self) -> bool:
        return self._open

    @property
    def is_closed(self) -> bool:
        return not self._open

    def close(self) -> None:
        """Close both ends; each handler's onClose runs on a later turn.

        Like a socket, what the peer sent before the close still reaches it (an ABORT
        followed by close is seen by the client); this end stops reading at once.
        """
        self._inbox.clear()
        for end in (self, self.peer):
            if end is not None and end._open:
                end._open = False
                self._clock.callLater(0, end._closed)

    abort = close

    # delivery -----------------------------------------------------------------------

    def _deliver(self, msg: Any) -> None:
        self._inbox.append(msg)
        if not self._flush_pending:
            self._flush_pending = True
            self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        while self._inbox:
            self._handler.onMessage(self._inbox.popleft())

    def _closed(self) -> None:
        self._inbox.clear()
        self._handler.onClose(True)


def connect_pair(clock: IReactorTime, router_side: Any, client_side: Any) -> tuple[MemoryTransport, MemoryTransport]:
    """Connect two ITransportHandlers and open both (the client's onOpen says HELLO)."""
    router_end = MemoryTransport(clock, router_side)
    client_end = MemoryTransport(clock, client_side)
    router_end.peer, client_end.peer = client_end, router_end
    router_side.onOpen(router_end)
    client_side.onOpen(client_end)
    return router_end, client_end


MEMORY_INFO = TransportInfo(kind="memory", peer="memory")
