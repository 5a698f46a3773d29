"""Helpers to run a real router node as a separate process (`wampchat run`, `twistd -n`).

``RouterProcess`` writes a temporary crossbar-like YAML config (realm ``test``, a
``web`` transport and a ``rawsocket`` transport on free ports of 127.0.0.1, static
ticket principals), starts the command with ``subprocess.Popen`` (output to a temp
file), waits for ``GET /healthz`` to answer 200, and stops it with SIGTERM. Every
wait is bounded; ``kill()`` is safe to call at any time and is what teardown uses.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import treq
import yaml
from autobahn.twisted.rawsocket import WampRawSocketClientFactory
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from twisted.internet import protocol, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.integration.conftest import REALM, WAIT, Client, reactor, within

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent            # the venv's bin/ (pytest runs from it)
WAMPCHAT = str(BIN / "wampchat")
TWISTD = str(BIN / "twistd")

PRINCIPALS = {"svc": {"ticket": "s3cret", "role": "backend"},
              "alice": {"ticket": "alice-pw", "role": "user"}}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
SERIALIZERS = {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _everything(name: str) -> dict[str, Any]:
    return {"name": name, "permissions": [
        {"uri": "", "match": "prefix",
         "allow": {"call": True, "register": True, "publish": True, "subscribe": True},
         "disclose": {"caller": True, "publisher": True}}]}


def node_config(web_port: int, raw_port: int) -> dict[str, Any]:
    """The config document: realm `test`, a web transport and a rawsocket transport."""
    auth = {"ticket": {"type": "static", "principals": PRINCIPALS}}
    return {
        "version": 2,
        "workers": [{
            "type": "router",
            "realms": [{"name": REALM, "roles": [
                _everything("backend"),
                {"name": "user", "permissions": [
                    {"uri": "com.", "match": "prefix",
                     "allow": {"call": True, "register": True, "subscribe": True,
                               "publish": True},
                     "disclose": {"caller": True, "publisher": True}}]}]}],
            "transports": [
                {"type": "web",
                 "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": web_port},
                 "paths": {"ws": {"type": "websocket",
                                  "serializers": ["json", "msgpack", "cbor"],
                                  "options": {"auto_ping_interval": 0},
                                  "auth": auth}}},
                {"type": "rawsocket",
                 "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": raw_port},
                 "serializers": ["json", "msgpack", "cbor"],
                 "auth": copy.deepcopy(auth)},
            ],
            "components": [],
        }],
    }


def write_config(directory: Path, document: dict[str, Any], name: str = "node.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def command_for(kind: str, config: Path) -> list[str]:
    if kind == "run":
        return [WAMPCHAT, "run", "--config", str(config)]
    if kind == "twistd":
        return [TWISTD, "-n", "--pidfile=", "wampchat", "--config", str(config)]
    raise ValueError(kind)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("WAMPCHAT_CONFIG", "WAMPCHAT_INTERFACE", "WAMPCHAT_PORT"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor(), seconds, lambda: None)


class RouterProcess:
    """One router node in its own process; always call kill() in teardown."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = Path(directory)
        self.web_port = free_port()
        self.raw_port = free_port()
        while self.raw_port == self.web_port:
            self.raw_port = free_port()
        self.config_path = write_config(self.directory, node_config(self.web_port, self.raw_port))
        self.log_path = self.directory / f"{kind}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}/ws"

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    async def start(self) -> None:
        """Start the process; return once /healthz answers 200 (or fail within 20 s)."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(command_for(self.kind, self.config_path), cwd=self.directory,
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=child_env())
        url = f"http://127.0.0.1:{self.web_port}/healthz".encode()
        deadline = reactor().seconds() + START_TIMEOUT
        last = "no answer"
        while reactor().seconds() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.kind} exited with {self.proc.returncode} before it "
                                     f"was healthy:\n{self.output()}")
            try:
                d = treq.get(url, persistent=False)
                d.addTimeout(2.0, reactor())
                response = await d
                body = await treq.content(response)
                if response.code == 200:
                    return
                last = f"HTTP {response.code} {body[:200]!r}"
            except Exception as exc:     # not listening yet
                last = repr(exc)
            await sleep(0.1)
        raise AssertionError(f"{self.kind}: /healthz not 200 within {START_TIMEOUT} s ({last}):\n"
                             f"{self.output()}")

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """The exit code, once the process ended (AssertionError after timeout seconds)."""
        assert self.proc is not None
        deadline = reactor().seconds() + timeout
        while self.proc.poll() is None:
            if reactor().seconds() >= deadline:
                raise AssertionError(f"{self.kind} still running {timeout} s later:\n"
                                     f"{self.output()}")
            await sleep(0.05)
        return self.proc.returncode

    def assert_clean_exit(self, code: int) -> None:
        """The exit code after SIGTERM says the node shut down cleanly.

        `wampchat run` exits 0. `twistd` (since Twisted 21) deliberately re-raises the
        signal that stopped its reactor once shutdown is complete (twisted.scripts.twistd:
        app._exitWithSignal), so its status is "killed by SIGTERM" (-15) after a clean
        shutdown; for it the log must also show the reactor's orderly end.
        """
        output = self.output()
        if self.kind == "twistd":
            assert code in (0, -signal.SIGTERM), f"twistd exited with {code}:\n{output}"
            assert "Main loop terminated." in output and "Server Shut Down." in output, output
        else:
            assert code == 0, f"{self.kind} exited with {code}:\n{output}"
        assert "Traceback" not in output, output

    async def stop(self) -> None:
        """SIGTERM; the process must exit cleanly within 10 s."""
        self.terminate()
        self.assert_clean_exit(await self.wait())

    def kill(self) -> None:
        """End the process now if it still runs (teardown; safe to repeat)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None


# -- clients ---------------------------------------------------------------------------------

class TicketClient(Client):
    """Joins REALM as `authid` with a static ticket; keeps the WELCOME's SessionDetails."""

    def __init__(self, authid: str, ticket: str) -> None:
        super().__init__(["ticket"], ticket)
        self._authid = authid
        self.welcome = None

    def onConnect(self) -> None:
        self.join(self.config.realm, authmethods=["ticket"], authid=self._authid)

    def onChallenge(self, challenge) -> str:
        assert challenge.method == "ticket", challenge
        return self._ticket

    def onJoin(self, details) -> None:
        self.welcome = details
        super().onJoin(details)


class Clients:
    """Every client a test opens; close() ends them all (bounded waits)."""

    def __init__(self) -> None:
        self.sessions: list[TicketClient] = []

    async def websocket(self, port: int, authid: str = "svc", ticket: str = "s3cret",
                        serializer: str = "json", path: str = "ws") -> TicketClient:
        session = TicketClient(authid, ticket)
        factory = WampWebSocketClientFactory(lambda: session, url=f"ws://127.0.0.1:{port}/{path}",
                                             serializers=[SERIALIZERS[serializer]()])
        return await self._join(port, factory, session)

    async def rawsocket(self, port: int, authid: str = "svc", ticket: str = "s3cret",
                        serializer: str = "json") -> TicketClient:
        session = TicketClient(authid, ticket)
        factory = WampRawSocketClientFactory(lambda: session,
                                             serializer=SERIALIZERS[serializer]())
        return await self._join(port, factory, session)

    async def _join(self, port: int, factory, session: TicketClient) -> TicketClient:
        self.sessions.append(session)
        await TCP4ClientEndpoint(reactor(), "127.0.0.1", port, timeout=WAIT).connect(factory)
        await within(session.joined)
        return session

    async def close(self) -> None:
        for session in self.sessions:
            try:
                if session.is_attached():
                    session.leave()
                elif session.is_connected():
                    session.disconnect()
            except Exception:
                pass
        for session in self.sessions:
            if not session.disconnected.called:
                try:
                    await within(session.disconnected, 2.0)
                except Exception:
                    transport = getattr(session, "_transport", None)
                    inner = getattr(transport, "transport", None)
                    if inner is not None:
                        inner.abortConnection()


# -- child processes run to completion, without blocking the reactor -------------------------

class _Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value)


async def run_process(argv: list[str], timeout: float = 30.0, cwd: str | None = None,
                      env: dict[str, str] | None = None) -> tuple[str, str, int]:
    """(stdout, stderr, exit code) of argv, like getProcessOutputAndValue but killed on timeout."""
    collector = _Collect()
    transport = reactor().spawnProcess(collector, argv[0], argv, env=env or child_env(),
                                       path=cwd)
    call = reactor().callLater(timeout, lambda: transport.signalProcess("KILL"))
    try:
        ended = await collector.ended
    finally:
        if call.active():
            call.cancel()
    out = b"".join(collector.out).decode(errors="replace")
    err = b"".join(collector.err).decode(errors="replace")
    if ended.signal is not None or ended.exitCode is None:
        raise AssertionError(f"{argv} killed (signal {ended.signal}, timeout {timeout} s)\n"
                             f"stdout: {out}\nstderr: {err}")
    return out, err, ended.exitCode
