"""Drive tests/js/chat_participant.js (Autobahn|JS in Node) from a test, one JSON line at a time.

The Node process is spawned on the test's reactor; every line it prints lands in a
DeferredQueue. Commands get increasing ids and `request()` waits (bounded) for the
reply carrying that id, keeping the chat events that arrive meanwhile for `next_event()`.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredQueue

from tests.integration.conftest import reactor, within
from tests.integration.processes import REPO, child_env
from tests.integration.test_js_interop import _memory_cap_flags, _node_binary

SCRIPT = REPO / "tests" / "js" / "chat_participant.js"
WAIT = 5.0                  # seconds: the bound on every wait for a line
LIFETIME = 60               # seconds the Node process may live at most (its own deadline)


class _Lines(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.lines: DeferredQueue = DeferredQueue()
        self.stderr: list[bytes] = []
        self.ended: Deferred = Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        for line in complete:
            if line.strip():
                self.lines.put(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self.stderr.append(data)

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value)


class JsParticipant:
    """One Autobahn|JS session in its own Node process."""

    def __init__(self, url: str, realm: str, token: str) -> None:
        node = _node_binary()
        self._proto = _Lines()
        argv = [node, "--experimental-websocket", *_memory_cap_flags(), str(SCRIPT), url, realm,
                token, str(LIFETIME)]
        self._process = reactor().spawnProcess(self._proto, node, argv, env=child_env(),
                                               path=str(REPO))
        self._ids = 0
        self._events: list[dict[str, Any]] = []      # chat events seen while awaiting replies
        self.details: dict[str, Any] = {}

    def stderr(self) -> str:
        return b"".join(self._proto.stderr).decode(errors="replace")

    async def _line(self) -> dict[str, Any]:
        try:
            return await within(self._proto.lines.get(), WAIT)
        except Exception as exc:
            raise AssertionError(f"no line from chat_participant.js within {WAIT} s "
                                 f"({exc!r}); stderr:\n{self.stderr()}") from None

    async def joined(self) -> dict[str, Any]:
        line = await self._line()
        assert line.get("event") == "joined", (line, self.stderr())
        self.details = line
        return line

    async def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send one command; its reply (`error` replies included, the caller checks)."""
        self._ids += 1
        ident = self._ids
        self._process.write(json.dumps({"id": ident, "cmd": cmd, **fields}).encode() + b"\n")
        while True:
            line = await self._line()
            if line.get("id") == ident:
                return line
            if line.get("event") == "event":
                self._events.append(line)
            else:
                raise AssertionError(f"unexpected line while waiting for {cmd}: {line}")

    async def next_event(self) -> dict[str, Any]:
        if self._events:
            return self._events.pop(0)
        line = await self._line()
        assert line.get("event") == "event", line
        return line

    def pending(self) -> list[dict[str, Any]]:
        """Chat events received and not yet taken (for quiet checks)."""
        while self._proto.lines.pending:
            line = self._proto.lines.pending.pop(0)
            if line.get("event") == "event":
                self._events.append(line)
        return list(self._events)

    async def leave(self) -> None:
        """leave, then wait for the process to end (killed if it does not)."""
        if self._proto.ended.called:
            return
        self._ids += 1
        self._process.write(json.dumps({"id": self._ids, "cmd": "leave"}).encode() + b"\n")
        await self.ended()

    async def ended(self) -> None:
        try:
            await within(self._proto.ended, WAIT)
        except Exception:
            self.kill()

    def abort(self) -> None:
        """The process dies at once: its WebSocket closes without GOODBYE."""
        self.kill()

    def kill(self) -> None:
        if not self._proto.ended.called:
            self._process.signalProcess("KILL")
