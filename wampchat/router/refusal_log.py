"""Refused logins in the log: at most one line per reason per interval, with a count.

A database outage or a flood of forged tokens refuses thousands of logins a second;
one line per refusal would bury everything else in the log. The metrics still count
every refusal (wampchat_logins_total{outcome="refused"}).
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.interfaces import IReactorTime

from wampchat.logs import Logger

log = Logger()


class RefusalLog:
    """Logs a refused login unless one with the same reason was logged within `interval`."""

    def __init__(self, clock: IReactorTime, interval: float = 1.0) -> None:
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}          # reason -> when a line was last written
        self._held_back: Counter[str] = Counter()  # reason -> refusals not logged since

    def refused(self, peer: str, reason: str, retryable: bool) -> bool:
        """Log this refusal (True) or count it for the next line of its reason (False)."""
        now = self._clock.seconds()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._held_back[reason] += 1
            return False
        self._last[reason] = now
        held_back = self._held_back.pop(reason, 0)
        if held_back:
            log.warn("login refused from {peer}: {reason} ({held_back} more with this reason "
                     "since the last line)", peer=peer, reason=reason, retryable=retryable,
                     held_back=held_back)
        else:
            log.warn("login refused from {peer}: {reason}", peer=peer, reason=reason,
                     retryable=retryable)
        return True
