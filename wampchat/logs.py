"""The project's `Logger`: events below the node's log level are dropped where they are made.

twisted.logger builds every event (a dict, the time, the namespace) and hands it
to the observers, which filter by level; an info event at `--log-level warn`
still cost ~6 us, and a first-time login made three of them. `drop_below(level)`,
called by the command line when it starts logging, makes those calls return at
once. Until then (tests, twistd) every event reaches the observers as before.
"""

from __future__ import annotations

from twisted.logger import Logger as _TwistedLogger, LogLevel

_RANK = {level: rank for rank, level in enumerate(LogLevel.iterconstants())}   # debug 0 .. critical 4
_lowest_emitted = 0


def drop_below(level: LogLevel) -> None:
    """Events of a level below `level` are not emitted at all (debug: all are)."""
    global _lowest_emitted
    _lowest_emitted = _RANK[level]


class Logger(_TwistedLogger):
    """twisted.logger's Logger, gated by `drop_below`."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs) -> None:
        if _RANK.get(level, len(_RANK)) < _lowest_emitted:
            return
        super().emit(level, format, **kwargs)
