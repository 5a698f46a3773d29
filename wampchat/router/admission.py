"""Admission limits: connection slots per node and per client address, and message rates.

One ``Admission`` is shared by every transport of a node, so the node-wide limit
holds whichever port a flood comes in on. Slots are taken when a connection asks
to become a WAMP transport (WebSocket upgrade, RawSocket connect) and given back
when it closes; in-process components never take one.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.interfaces import IReactorTime


class Admission:
    """Counts open WAMP connections; 0 for a limit means no limit."""

    def __init__(self, max_connections: int = 0, max_per_address: int = 0) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.open = 0
        self._by_address: Counter[str] = Counter()

    def acquire(self, address: str) -> str | None:
        """Take a slot for a connection from address; the refusal text when none is left."""
        if self.max_connections and self.open >= self.max_connections:
            return f"this router already holds its maximum of {self.max_connections} connections"
        if self.max_per_address and self._by_address[address] >= self.max_per_address:
            return (f"too many connections from {address} "
                    f"(at most {self.max_per_address} per address)")
        self.open += 1
        self._by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        """Give back a slot taken by acquire(address)."""
        self.open -= 1
        left = self._by_address[address] - 1
        if left > 0:
            self._by_address[address] = left
        else:
            del self._by_address[address]


class TokenBucket:
    """A message rate limit: `rate` tokens per second, at most `burst` saved up."""

    __slots__ = ("_clock", "_rate", "_burst", "_tokens", "_stamp")

    def __init__(self, clock: IReactorTime, rate: float, burst: float) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = max(1.0, burst)
        self._tokens = self._burst
        self._stamp = clock.seconds()

    def take(self) -> bool:
        """Spend one token if there is one (True), else False: the message is over the rate."""
        now = self._clock.seconds()
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
