"""Cheaper per-connection and per-frame work inside Autobahn's WebSocket protocol.

Imported for its effect by the WebSocket transport. Each change keeps Autobahn's
behaviour and was chosen from the benchmark profile (bench/RESULTS.md):

- Autobahn pretty-prints its ~40 protocol options for a debug log line on every new
  connection, whether debug logging is on or not (8% of a handshake's CPU): its
  module's ``pformat`` becomes lazy, so a debug line still shows the same text.
- Autobahn unmasks every incoming frame with a masker it builds per frame through CFFI
  (an import, two buffer allocations and a copy: ~3 us for a 60-byte frame) and
  validates UTF-8 the same way. wsaccel's C maskers and validator do the same work in
  a tenth of the time; Autobahn used them itself before it switched to NVX.
"""

from __future__ import annotations

import pprint
from typing import Any

from autobahn.websocket import protocol as autobahn_websocket_protocol


class _LazyPformat(str):
    """An empty str that pretty-prints its object only when it is actually formatted."""

    def __new__(cls, obj: Any) -> "_LazyPformat":
        lazy = super().__new__(cls, "")
        lazy.obj = obj
        return lazy

    def __str__(self) -> str:
        return pprint.pformat(self.obj)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


autobahn_websocket_protocol.pformat = _LazyPformat

try:
    from wsaccel.utf8validator import Utf8Validator
    from wsaccel.xormask import createXorMasker
except ImportError:        # pragma: no cover - wsaccel is a dependency; Autobahn's own still work
    USES_WSACCEL = False
else:
    autobahn_websocket_protocol.create_xor_masker = createXorMasker
    autobahn_websocket_protocol.Utf8Validator = Utf8Validator
    USES_WSACCEL = True
