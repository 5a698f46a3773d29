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
    """Counts open WAMP connections and failed logins; 0 for a limit means no limit.

    An address with ``max_failed_logins`` refused logins within ``block_seconds`` is
    blocked for ``block_seconds``: its new connections are closed at accept, before any
    HTTP or WebSocket work, so a flood of forged tokens costs the router almost nothing
    and everyone else is still served.
    """

    def __init__(self, max_connections: int = 0, max_per_address: int = 0,
                 max_failed_logins: int = 0, block_seconds: float = 30.0,
                 clock: IReactorTime | None = None) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.max_failed_logins = max_failed_logins if clock is not None else 0
        self.block_seconds = block_seconds
        self._clock = clock
        self.open = 0
        self._by_address: Counter[str] = Counter()
        # address -> [window start, failures in the window, blocked until]
        self._failures: dict[str, list[float]] = {}

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

    def login_failed(self, address: str) -> bool:
        """Count a refused login from address; True when this one got the address blocked."""
        if not self.max_failed_logins:
            return False
        now = self._clock.seconds()
        entry = self._failures.get(address)
        if entry is None or now - entry[0] > self.block_seconds:
            if len(self._failures) > 100000:
                self._prune(now)
            entry = self._failures[address] = [now, 0.0, 0.0]
        entry[1] += 1
        if entry[1] == self.max_failed_logins:
            entry[2] = now + self.block_seconds
            return True
        return False

    def blocked(self, address: str) -> bool:
        """Whether connections from address are refused now (too many failed logins)."""
        entry = self._failures.get(address) if self._failures else None
        if entry is None or not entry[2]:
            return False
        if self._clock.seconds() < entry[2]:
            return True
        del self._failures[address]
        return False

    def _prune(self, now: float) -> None:
        """Forget addresses whose window and block are over (bounds the table's size)."""
        for address, (start, _, until) in list(self._failures.items()):
            if now - start > self.block_seconds and now >= until:
                del self._failures[address]

    def release(self, address: str) -> None:
        """Give back a slot taken by acquire(address)."""
        self.open -= 1
        left = self._by_address[address] - 1
        if left > 0:
            self._by_address[address] = left
        else:
            del self._by_address[address]


def admission_for(limits, clock: IReactorTime) -> Admission:
    """The Admission a node's LimitsConfig asks for (one per node)."""
    return Admission(limits.max_connections, limits.max_connections_per_address,
                     limits.max_failed_logins_per_address, limits.failed_login_block_seconds,
                     clock)


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
