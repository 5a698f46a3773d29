"""Cheaper per-connection and per-frame work inside Autobahn's WebSocket protocol.

Imported for its effect by the WebSocket transport. Each change keeps Autobahn's
behaviour and was chosen from the benchmark profile (bench/RESULTS.md):

- Autobahn pretty-prints its ~40 protocol options for a debug log line on every new
  connection, whether debug logging is on or not (8% of a handshake's CPU), and names
  five methods per connection the same way (``hltype``: inspect calls and string
  styling, ~2 us each) and styles the peer and the close reason (``hlval``, which
  formats a whole Failure): all become lazy in its modules, so a debug line still shows
  the same text and nothing is computed when debug lines are filtered out.
- Autobahn's timers per connection (auto-ping, handshake timeouts) go through txaio's
  batched timer, which wraps each callback in a closure (a function, three cells and a
  tuple that the garbage collector walks, per connection): `lean_batched_timer` lets a
  call without arguments keep the callback itself.
- Autobahn unmasks every incoming frame with a masker it builds per frame through CFFI
  (an import, two buffer allocations and a copy: ~3 us for a 60-byte frame) and
  validates UTF-8 the same way. wsaccel's C maskers and validator do the same work in
  a tenth of the time; Autobahn used them itself before it switched to NVX.
"""

from __future__ import annotations

import pprint
from typing import Any, Callable

from autobahn import util as autobahn_util
from autobahn.twisted import websocket as autobahn_twisted_websocket
from autobahn.websocket import protocol as autobahn_websocket_protocol
from txaio._common import _BatchedTimer


class _LazyText(str):
    """An empty str that renders `obj` with `render` only when it is actually formatted."""

    render: Callable[[Any], str]

    def __new__(cls, obj: Any) -> "_LazyText":
        lazy = super().__new__(cls, "")
        lazy.obj = obj
        return lazy

    def __str__(self) -> str:
        return self.render(self.obj)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class _LazyPformat(_LazyText):
    render = staticmethod(pprint.pformat)


class _LazyHltype(_LazyText):
    render = staticmethod(lambda obj: autobahn_util.hltype(obj))


class _LazyHlval(_LazyText):
    render = staticmethod(lambda obj: autobahn_util.hlval(obj))


autobahn_websocket_protocol.pformat = _LazyPformat
autobahn_websocket_protocol.hltype = _LazyHltype
autobahn_websocket_protocol.hlval = _LazyHlval
autobahn_twisted_websocket.hltype = _LazyHltype
autobahn_twisted_websocket.hlval = _LazyHlval


class _LeanBatchedTimer(_BatchedTimer):
    """txaio's batched timer, a call without arguments kept without a closure around it."""

    def call_later(self, delay, func, *args, **kwargs):
        call = super().call_later(delay, func, *args, **kwargs)
        if not args and not kwargs:
            call._call = func            # the closure txaio made is freed at once
        return call


def lean_batched_timer(timer: _BatchedTimer) -> _BatchedTimer:
    """`timer` (what txaio.make_batched_timer built for a factory), made lean in place."""
    timer.__class__ = _LeanBatchedTimer
    return timer


try:
    from wsaccel.utf8validator import Utf8Validator
    from wsaccel.xormask import createXorMasker
except ImportError:        # pragma: no cover - wsaccel is a dependency; Autobahn's own still work
    USES_WSACCEL = False
else:
    autobahn_websocket_protocol.create_xor_masker = createXorMasker
    autobahn_websocket_protocol.Utf8Validator = Utf8Validator
    USES_WSACCEL = True
