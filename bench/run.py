"""The wampchat benchmark: wampchat, Crossbar.io and the raw Autobahn transport, side by side in one run.

    .venv/bin/python -m bench.run            # ~11 minutes (make bench)
    .venv/bin/python -m bench.run --quick    # ~2 minutes, one repetition, short steps

Processes besides this orchestrator (pinned to core 1):

- PostgreSQL: an embedded pgserver (or the server of $DATABASE_URL) with one database
  per router, both with wampchat's users schema; its processes are moved to core 1;
- the development issuer (`--serve-issuer`, core 1): N bench users, their RS256 access
  tokens minted at start into a file for the load generator, discovery, the JWKS, and a
  JWKS request counter at /bench-stats;
- three servers, each under `taskset -c 0`, started together, same realm `bench`, same
  roles and permissions, ticket auth with the same tokens:
  `wampchat` is `wampchat run` with the keycloak authenticator (local validation against
  the cached JWKS, just-in-time users in its database); `crossbar` is Crossbar.io from its
  own venv (bench/.crossbar-venv, made by `make bench`) with the `function` authenticator
  bench/crossbar/authenticator.py (PyJWT against the same JWKS, the same users table);
  `raw` is bench/raw_server.py (one RS256 verification per handshake, no database);
- the load generator bench/load.js (Node, `ws`, raw WAMP JSON or MessagePack), core 1,
  once per scenario, repetition and server (the order of the servers rotates between
  repetitions, so drift on a shared machine hits all alike).

Scenarios: authenticated handshakes (connect, HELLO, CHALLENGE, AUTHENTICATE, WELCOME,
GOODBYE, close) of existing and of first-time users; pub/sub fan-out to 100 and 1000
subscribers, json and msgpack (steps `saturation` and `fixed_rate`); RPC to an echo callee
with 1, 10 and 100 callers; router RSS per idle authenticated session at 1000 and 5000
sessions (each server restarted first). Latency "at the same load" (step `fixed_rate`, open
loop): every server is offered the same rate, half (--fixed-rate-share) of the slowest
server's closed-loop rate measured in the first repetition of that scenario, which has no
fixed_rate step (absolute rates with --fixed-rate-events/-calls/-handshakes instead); a
fixed absolute rate meant a different load on every machine, and on a fast one every server
sat at the client's own latency. Around every measured step the load generator
waits, so the CPU time of all of a server's processes (from /proc) is read exactly for that
window: the headline figure is operations per second of router CPU time, which holds far
better than wall-clock rates on a shared machine. Each figure is the median of the
repetitions with its min-max spread; the load generator's own CPU is printed. JSON goes
to bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CROSSBAR_VENV = BENCH_DIR / ".crossbar-venv"
SERVER_CORE, LOAD_CORE = "0", "1"
SERVERS = ("wampchat", "crossbar", "raw")

REALM = "bench"
CLIENT_ID = "wampchat"
ISSUER_REALM = "wampchat"
# One definition for both routers (bench/crossbar/config.py translates it for Crossbar).
ROLES = [
    {"name": "user", "permissions": [
        {"uri": "bench.fanout.", "match": "prefix", "allow": {"publish": True, "subscribe": True},
         "disclose": {}},
        {"uri": "bench.echo.", "match": "prefix", "allow": {"call": True}, "disclose": {}},
    ]},
    {"name": "backend", "permissions": [
        {"uri": "", "match": "prefix",
         "allow": {"call": True, "register": True, "publish": True, "subscribe": True},
         "disclose": {}},
    ]},
]
ROLE_MAPPING = [{"role": "wampchat-backend", "authrole": "backend"}, {"authrole": "user"}]


@dataclass(frozen=True)
class Scenario:
    """One load.js invocation: its arguments and the steps it measures."""

    name: str
    args: tuple[str, ...]     # "{rep}" is replaced by the repetition number
    unit: str                 # "handshakes", "events", "calls" or "memory"
    restart: bool = False     # restart each server before every run (memory)
    # The fixed_rate step ("{rate}" in args): offered `unit`s/s, or None for a share of the
    # slowest server's closed-loop rate (see offered_rate); one offer is `per_offer` units
    # (a publication to N subscribers is N events).
    fixed_rate: float | None = None
    per_offer: int = 1


def scenarios(fixed_rate_events: float | None, first_block: int, idle: str,
              fixed_rate_calls: float | None = None,
              fixed_rate_handshakes: float | None = None) -> list[Scenario]:
    """The scenarios; a fixed rate of None is a share of the slowest server's (offered_rate)."""
    def handshake(which: str, args: tuple[str, ...], rate: float | None = None) -> Scenario:
        return Scenario(f"handshake {which}", ("--scenario", "handshake", "--concurrency", "16",
                                               *args), "handshakes", fixed_rate=rate)

    def fanout(n: int, window: int, serializer: str) -> Scenario:
        return Scenario(f"fanout {n} {serializer}",
                        ("--scenario", "fanout", "--subscribers", str(n), "--window", str(window),
                         "--rate", "{rate}", "--serializer", serializer), "events",
                        fixed_rate=fixed_rate_events, per_offer=n)

    def rpc(callers: int) -> Scenario:
        return Scenario(f"rpc {callers}", ("--scenario", "rpc", "--callers", str(callers),
                                           "--rate", "{rate}"), "calls", fixed_rate=fixed_rate_calls)

    return [
        handshake("existing", ("--token-set", "existing", "--rate", "{rate}"), fixed_rate_handshakes),
        # a block of first-time users per repetition, each once; bounded by count, not time
        handshake("first-time", ("--token-set", "first:{rep}", "--duration", "120")),
        fanout(100, 4, "json"), fanout(100, 4, "msgpack"),
        fanout(1000, 2, "json"), fanout(1000, 2, "msgpack"),
        rpc(1), rpc(10), rpc(100),
        Scenario("idle sessions", ("--scenario", "idle", "--sessions", idle, "--settle", "2"),
                 "memory", restart=True),
    ]


# -- servers ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wampchat_config(port: int, issuer: str, dsn: str) -> str:
    """wampchat's bench node: realm `bench`, ROLES, keycloak ticket auth, users in `dsn`."""
    def permission(p: dict) -> str:
        allow = ", ".join(f"{k}: {'true' if p['allow'].get(k) else 'false'}"
                          for k in ("call", "register", "publish", "subscribe"))
        return (f"              - uri: \"{p['uri']}\"\n                match: {p['match']}\n"
                f"                allow: {{{allow}}}\n"
                f"                disclose: {{caller: false, publisher: false}}\n")
    roles = "".join(f"          - name: {role['name']}\n            permissions:\n"
                    + "".join(permission(p) for p in role["permissions"]) for role in ROLES)
    mapping = "".join(f"                  - {{{', '.join(f'{k}: {v}' for k, v in rule.items())}}}\n"
                      for rule in ROLE_MAPPING)
    return f"""\
# written by bench/run.py for one benchmark run
version: 2
workers:
  - type: router
    realms:
      - name: {REALM}
        roles:
{roles}    transports:
      - type: web
        endpoint: {{type: tcp, interface: 127.0.0.1, port: {port}}}
        paths:
          ws:
            type: websocket
            serializers: [json, msgpack]
            options:
              compression: false
            auth:
              ticket:
                type: keycloak
                issuer: "{issuer}"
                client_id: {CLIENT_ID}
                algorithms: [RS256]
                role_mapping:
{mapping}database:
  dsn: "{dsn}"
  pool_size: 5
limits:
  max_connections: 0
  max_connections_per_address: 0
  message_rate: 0
"""


@dataclass
class Server:
    """A server process pinned to `core`, and where it serves."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen | None = None
    core: str = SERVER_CORE
    health_path: str = "/healthz"
    env: dict[str, str] | None = None          # replaces the env given to start()
    cwd: Path = REPO

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, env: dict[str, str], timeout: float = 20.0) -> float:
        """Start it and wait for its health URL; returns seconds from spawn to ready."""
        log = open(self.log_path, "ab")
        started = time.monotonic()
        self.process = subprocess.Popen(["taskset", "-c", self.core, *self.command], cwd=self.cwd,
                                        env=self.env or env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        health = f"http://127.0.0.1:{self.port}{self.health_path}"
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(health, timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: no answer on {health} after {timeout} s:\n"
                           + self.log_tail())

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its descendants so far."""
        return sum(proc_stat(pid)[1] for pid in process_tree(self.process.pid))

    def rss_bytes(self) -> int:
        return sum(proc_stat(pid)[2] for pid in process_tree(self.process.pid))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL (of every descendant too) after `timeout`; the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        tree = process_tree(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return self.process.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def proc_stat(pid: int) -> tuple[int, float, int]:
    """(parent pid, user + system CPU seconds, RSS bytes) of a process, from /proc; zeros if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()   # after "pid (comm)"
    except OSError:
        return 0, 0.0, 0
    # fields[0] is field 3 (state) of proc(5): ppid 4, utime 14, stime 15, rss 24 (pages)
    return (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"),
            int(fields[21]) * os.sysconf("SC_PAGE_SIZE"))


def process_tree(root: int) -> list[int]:
    """root and every descendant of it."""
    children: dict[int, list[int]] = {}                 # parent pid -> child pids
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            children.setdefault(proc_stat(int(entry))[0], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def core_busy_seconds(core: str) -> float:
    """Busy time of one CPU core so far (all processes), from /proc/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{core} "):
                fields = [int(v) for v in line.split()[1:]]
                idle = fields[3] + fields[4]                  # idle + iowait
                return (sum(fields[:8]) - idle) / ticks
    return 0.0


# -- the development issuer (a process of its own) ------------------------------------------

def bench_users(count: int):
    from wampchat.dev.issuer import DemoUser
    return tuple(DemoUser(f"bench-{i:05d}", secrets.token_hex(8), f"bench-{i:05d}@bench.invalid",
                          f"Bench User {i}", ("user",)) for i in range(count))


def serve_counted_issuer(reactor, issuer, port: int, counted: dict[str, str]) -> None:
    """Serve issuer's realms on 127.0.0.1:port with /healthz and /bench-stats, then run
    the reactor. counted maps a stats name to an issuer method whose calls it counts
    (e.g. {"jwks": "jwks"}: the certs endpoint calls issuer.jwks() once per GET)."""
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from twisted.web.static import Data

    from wampchat.dev.issuer import realms_resource

    counts = dict.fromkeys(counted, 0)
    for name, method in counted.items():
        original = getattr(issuer, method)

        def counting(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)
        setattr(issuer, method, counting)

    class Stats(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(counts).encode()

    root = Resource()
    root.putChild(b"realms", realms_resource(issuer))
    root.putChild(b"healthz", Data(b"ok", "text/plain"))
    root.putChild(b"bench-stats", Stats())
    reactor.listenTCP(port, Site(root), interface="127.0.0.1")
    reactor.run()


def serve_issuer(port: int, tokens_path: str, existing: int, blocks: int, block_size: int) -> None:
    """DevIssuer on 127.0.0.1:port; mints every bench token into tokens_path, then serves
    /realms, /healthz and /bench-stats (JWKS requests so far)."""
    from twisted.internet import reactor

    from wampchat.dev.issuer import DevIssuer

    users = bench_users(existing + blocks * block_size)
    issuer = DevIssuer(f"http://127.0.0.1:{port}/realms/{ISSUER_REALM}", reactor, users=users,
                       client_id=CLIENT_ID)
    exp = int(time.time()) + 6 * 3600              # outlives any run (Keycloak's are 5 min)
    names = [user.username for user in users]
    tokens = {"existing": [issuer.mint(name, exp=exp) for name in names[:existing]],
              "first": [[issuer.mint(name, exp=exp) for name in
                         names[existing + b * block_size: existing + (b + 1) * block_size]]
                        for b in range(blocks)],
              "backend": issuer.mint(issuer.backend_client_id, client_id=issuer.backend_client_id,
                                     exp=exp)}
    Path(tokens_path).write_text(json.dumps(tokens))
    serve_counted_issuer(reactor, issuer, port, {"jwks": "jwks"})


def jwks_requests(issuer_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{issuer_port}/bench-stats", timeout=5) as answer:
        return json.loads(answer.read())["jwks"]


# -- the database ---------------------------------------------------------------------------

class Databases:
    """A PostgreSQL server (embedded, or $DATABASE_URL's) and one fresh database per router."""

    def __init__(self) -> None:
        self.embedded = None
        self.server_dsn = ""
        self.created: list[str] = []

    def start(self) -> None:
        from wampchat.dev.database import EmbeddedPostgres, configured_dsn
        self.server_dsn = configured_dsn()
        if self.server_dsn is None:
            self.embedded = EmbeddedPostgres()
            self.server_dsn = self.embedded.start()
            pin_postmaster(self.embedded.pgdata, int(LOAD_CORE))

    def create(self, name: str, migrate: bool) -> str:
        """A new database; with `migrate`, wampchat's migrations applied (for Crossbar)."""
        import psycopg2
        from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT, make_dsn
        database = f"bench_{name}_{secrets.token_hex(4)}"
        connection = psycopg2.connect(self.server_dsn)
        connection.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        connection.close()
        self.created.append(database)
        dsn = make_dsn(self.server_dsn, dbname=database)
        if migrate:
            connection = psycopg2.connect(dsn)
            with connection, connection.cursor() as cursor:
                for sql in sorted((REPO / "wampchat" / "users" / "migrations").glob("*.sql")):
                    cursor.execute(sql.read_text())
            connection.close()
        return dsn

    def close(self) -> None:
        import psycopg2
        from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT
        if self.created and self.embedded is None:
            connection = psycopg2.connect(self.server_dsn)
            connection.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
            with connection.cursor() as cursor:
                for database in self.created:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            connection.close()
        if self.embedded is not None:
            self.embedded.close()


def pin_postmaster(pgdata: Path, core: int) -> None:
    """Move PostgreSQL (postmaster and children; later backends inherit) off the router core."""
    try:
        postmaster = int((Path(pgdata) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    for pid in process_tree(postmaster):
        try:
            os.sched_setaffinity(pid, {core})
        except OSError:
            pass


# -- one load generator run -----------------------------------------------------------------

class Profiler:
    """py-spy sampling a server's processes during each measured step (core 1, --nonblocking).

    Output: collapsed stacks per step, then the top frames by own and by inclusive samples.
    """

    def __init__(self, py_spy: str, directory: Path, servers: set[str], rate: int = 250) -> None:
        self.py_spy, self.directory, self.servers, self.rate = py_spy, directory, servers, rate
        self.summaries: dict[str, dict] = {}      # "server/scenario/step" -> top frames

    def start(self, server: Server, label: str) -> tuple[subprocess.Popen, Path] | None:
        if server.name not in self.servers:
            return None
        path = self.directory / (label.replace("/", "_").replace(" ", "-") + ".txt")
        process = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, self.py_spy, "record", "--pid", str(server.process.pid),
             "--rate", str(self.rate), "--format", "raw", "--output", str(path), "--nonblocking",
             "--subprocesses"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return process, path

    def stop(self, running: tuple[subprocess.Popen, Path] | None, label: str) -> None:
        if running is None:
            return
        process, path = running
        process.send_signal(signal.SIGINT)              # py-spy writes its output on SIGINT
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if path.exists():
            self.summaries[label] = top_frames(path.read_text(errors="replace"))


def top_frames(collapsed: str, count: int = 15) -> dict:
    """Top frames of py-spy's collapsed stacks: by own samples and by inclusive samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        # per function, not per line: "name (file.py:123)" -> "name (file.py)"
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";") if frame]
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
        # inclusive: what the reactor calls into, without the reactor and process frames
        for frame in set(frames):
            if not frame.startswith(("process ", "<module>")) and "(twisted/" not in frame \
                    and "(wampchat/cli.py)" not in frame:
                inclusive[frame] = inclusive.get(frame, 0) + n

    def top(counts: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:count]
        return [(frame, round(100.0 * n / total, 1)) for frame, n in ranked]
    return {"samples": total, "own_pct": top(own) if total else [],
            "inclusive_pct": top(inclusive) if total else []}


# Node code shared by bench.auth and bench.logins (each defines `o` with url, realm and
# timeout, `performance` and `WebSocket` first): one WAMP ticket handshake (open, HELLO,
# CHALLENGE, AUTHENTICATE, WELCOME or ABORT, close) resolving {ok, ms, reason}, and a
# percentile of a sorted array.
HANDSHAKE_JS = r"""
function handshake(token) {
  return new Promise((resolve) => {
    const start = performance.now();
    let outcome = null;
    const ws = new WebSocket(o.url, 'wamp.2.json', { perMessageDeflate: false });
    const timer = setTimeout(() => { outcome = outcome || { ok: false, reason: 'timeout' }; ws.terminate(); },
                             o.timeout * 1000);
    ws.on('open', () => ws.send(JSON.stringify([1, o.realm, { roles: { caller: {}, subscriber: {} },
                                                             authmethods: ['ticket'] }])));
    ws.on('message', (data) => {
      const m = JSON.parse(data);
      const ms = performance.now() - start;
      if (m[0] === 4) ws.send(JSON.stringify([5, token, {}]));
      else if (m[0] === 2) { outcome = { ok: true, ms }; ws.close(1000); }
      else if (m[0] === 3) {
        const why = /overloaded/.test((m[1] && m[1].message) || '') ? ' (queue full)' : '';
        outcome = { ok: false, ms, reason: m[2] + why }; ws.close(1000);
      }
    });
    ws.on('error', (e) => { outcome = outcome || { ok: false, reason: String(e.code || e.message) }; });
    ws.on('close', () => { clearTimeout(timer); resolve(outcome || { ok: false, reason: 'closed' }); });
  });
}
function pct(sorted, p) { return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null; }
"""


def drive_load(command: list[str], watchdog_s: float, on_ready: Callable[[dict, Any], None],
               on_done: Callable[[dict, Any], None], **popen: Any) -> tuple[dict | None, str]:
    """Run a load generator that speaks JSON lines: "ready" (it waits for "go" on stdin),
    "done" (a step ended), then "result" or "error". on_ready/on_done(message, process)
    take the server's figures around each step. Returns (result or error message, stderr
    tail); the process is killed after watchdog_s, or when this ends early."""
    load = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)
    watchdog = threading.Timer(watchdog_s, load.kill)
    watchdog.start()
    result = None
    try:
        for line in load.stdout:
            message = json.loads(line)
            phase = message.get("phase")
            if phase == "ready":
                on_ready(message, load)
                load.stdin.write("go\n")
                load.stdin.flush()
            elif phase == "done":
                on_done(message, load)
            elif phase in ("result", "error"):
                result = message
        load.wait(10)
    finally:
        watchdog.cancel()
        if load.poll() is None:
            load.kill()
            load.wait()
    failed = result is None or result.get("phase") == "error"
    return result, (load.stderr.read()[-2000:] if failed and load.stderr else "")


def offered_rate(scenario: Scenario, repetition: int, runs: dict[tuple[str, str], list[dict]],
                 servers: list[str], share: float) -> float:
    """The fixed_rate step's offered load in `scenario.unit`s/s for this repetition (0: none).

    "The same load" for every server, chosen so that it means something on any machine:
    `share` of the slowest server's closed-loop rate, the median of its earlier repetitions
    of this scenario. The first repetition measures those rates and has no fixed_rate step.
    An absolute --fixed-rate-* value applies to every repetition instead.
    """
    if scenario.fixed_rate is not None:
        return scenario.fixed_rate
    if repetition == 0:
        return 0.0
    medians = []
    for server in servers:
        rates = [step["rate_per_s"] for r in runs.get((server, scenario.name), [])
                 for name, step in r["steps"].items() if name != "fixed_rate"]
        if rates:
            medians.append(statistics.median(rates))
    return share * min(medians) if medians else 0.0


def run_load(server: Server, scenario: Scenario, duration: float, env: dict[str, str],
             timeout: float, tokens_path: Path, issuer_port: int, repetition: int,
             profiler: Profiler | None = None, rate: float = 0.0) -> dict:
    """Run load.js once against `server`; the result with each step's server figures added.

    `rate`: the fixed_rate step's offered `scenario.unit`s/s (0: no such step).
    """
    offers = max(1, round(rate / scenario.per_offer)) if rate > 0 else 0
    args = [arg.replace("{rep}", str(repetition)).replace("{rate}", str(offers))
            for arg in scenario.args]
    command = ["taskset", "-c", LOAD_CORE, "node", str(BENCH_DIR / "load.js"), "--url", server.url,
               "--realm", REALM, "--tokens", str(tokens_path), "--duration", str(duration),
               "--timeout", str(int(timeout)), *args]
    marks: dict[str, tuple] = {}                            # step -> figures at ready
    server_steps: dict[str, dict] = {}                      # step -> server figures
    profiling = None

    def ready(message: dict, _load) -> None:
        nonlocal profiling
        if profiler is not None:
            profiling = profiler.start(
                server, f"{server.name}/{scenario.name}/{message['step']}/{repetition}")
        marks[message["step"]] = (server.cpu_seconds(), core_busy_seconds(SERVER_CORE),
                                  time.monotonic(), server.rss_bytes(),
                                  jwks_requests(issuer_port))

    def done(message: dict, _load) -> None:
        nonlocal profiling
        cpu0, busy0, wall0, rss0, jwks0 = marks[message["step"]]
        cpu = server.cpu_seconds() - cpu0
        if profiler is not None:
            profiler.stop(profiling, f"{server.name}/{scenario.name}/{message['step']}/"
                          f"{repetition}")
            profiling = None
        server_steps[message["step"]] = {
            "server_cpu_s": cpu,
            "core_other_cpu_s": max(0.0, core_busy_seconds(SERVER_CORE) - busy0 - cpu),
            "server_wall_s": time.monotonic() - wall0,
            "server_rss_ready_bytes": rss0,
            "server_rss_bytes": server.rss_bytes(),
            "jwks_requests": jwks_requests(issuer_port) - jwks0,
        }

    # load.js stops itself at `timeout`
    result, stderr = drive_load(command, timeout + 15, ready, done, env=env)
    if result is None or result.get("phase") == "error":
        raise RuntimeError(f"load.js against {server.name} ({scenario.name}) failed: "
                           f"{(result or {}).get('error', 'no result')}\n{stderr}")
    baseline_rss = None
    for step, figures in result["steps"].items():
        figures.update(server_steps.get(step, {}))
        count = figures.get("events", figures.get("calls", figures.get("handshakes", 0)))
        cpu = figures.get("server_cpu_s") or 0.0
        figures["ops_per_server_cpu_s"] = count / cpu if cpu > 0 and count else None
        figures["server_core_busy"] = cpu / figures["window_wall_s"] if figures["window_wall_s"] else None
        if "handshakes" in figures and figures["handshakes"]:
            figures["jwks_per_1000"] = 1000 * figures.get("jwks_requests", 0) / figures["handshakes"]
        if step.startswith("idle_"):
            # RSS growth from before the first session, per session open now
            if baseline_rss is None:
                baseline_rss = figures["server_rss_ready_bytes"]
            figures["kib_per_session"] = ((figures["server_rss_bytes"] - baseline_rss)
                                          / figures["sessions"] / 1024)
        if step == "fixed_rate":
            figures["offered_per_s"] = offers * scenario.per_offer
    return result


# -- figures ------------------------------------------------------------------------------

# (label, step, key path in a step's figures, higher is better)
METRICS = {
    "handshakes": [
        ("handshakes/s", "closed_loop", ("rate_per_s",), True),
        ("p50 ms", "closed_loop", ("latency", "p50_ms"), False),
        ("p99 ms", "closed_loop", ("latency", "p99_ms"), False),
        ("handshakes/router-CPU-s", "closed_loop", ("ops_per_server_cpu_s",), True),
        ("JWKS fetches/1000 conn", "closed_loop", ("jwks_per_1000",), False),
        ("offered/s at fixed rate", "fixed_rate", ("offered_per_s",), False),
        ("p99 ms at fixed rate", "fixed_rate", ("latency", "p99_ms"), False),
    ],
    "events": [
        ("events/s", "saturation", ("rate_per_s",), True),
        ("p99 ms", "saturation", ("latency", "p99_ms"), False),
        ("events/router-CPU-s", "saturation", ("ops_per_server_cpu_s",), True),
        ("offered/s at fixed rate", "fixed_rate", ("offered_per_s",), False),
        ("p99 ms at fixed rate", "fixed_rate", ("latency", "p99_ms"), False),
    ],
    "calls": [
        ("calls/s", "closed_loop", ("rate_per_s",), True),
        ("p50 ms", "closed_loop", ("latency", "p50_ms"), False),
        ("p99 ms", "closed_loop", ("latency", "p99_ms"), False),
        ("calls/router-CPU-s", "closed_loop", ("ops_per_server_cpu_s",), True),
        ("offered/s at fixed rate", "fixed_rate", ("offered_per_s",), False),
        ("p99 ms at fixed rate", "fixed_rate", ("latency", "p99_ms"), False),
    ],
    "memory": [],        # filled from the idle counts (idle_<n>)
}


def memory_metrics(idle: str) -> list[tuple]:
    return [(f"KiB RSS/session @{n}", f"idle_{n}", ("kib_per_session",), False)
            for n in idle.split(",")]


def dig(figures: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(figures, dict) or key not in figures:
            return None
        figures = figures[key]
    return figures


def summarize(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values), "n": len(values),
            "spread_pct": 100.0 * (max(values) - min(values)) / median if median else None,
            "values": values}


def aggregate(runs: dict[tuple[str, str], list[dict]], scenario_list: list[Scenario],
              servers: list[str]) -> dict:
    """scenario -> metric -> server -> summary, plus wampchat/crossbar and wampchat/raw."""
    table: dict[str, dict] = {}
    for scenario in scenario_list:
        rows = table[scenario.name] = {}
        for label, step, path, higher_better in METRICS[scenario.unit]:
            row = {"higher_is_better": higher_better}
            for server in servers:
                row[server] = summarize([dig(r["steps"].get(step, {}), path)
                                         for r in runs.get((server, scenario.name), [])])
            if not any(row[server] for server in servers):
                continue                  # a step this scenario does not have
            rows[label] = row
            for other in ("crossbar", "raw"):
                if row.get("wampchat") and row.get(other) and row[other]["median"]:
                    row[f"wampchat_over_{other}"] = row["wampchat"]["median"] / row[other]["median"]
    return table


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(summary: dict | None) -> str:
    if not summary:
        return "-"
    spread = summary["spread_pct"]
    if spread is None or summary["n"] < 2:
        return fmt(summary["median"])
    return f"{fmt(summary['median'])} ±{spread / 2:.0f}%"


def table_lines(table: dict, servers: list[str], markdown: bool = False) -> list[str]:
    columns = [*servers, "wc/crossbar", "wc/raw"]
    lines = []
    if markdown:
        lines.append("| scenario | figure | " + " | ".join(columns) + " |")
        lines.append("|---|---|" + "---:|" * len(columns))
    else:
        header = f"{'scenario':<20} {'figure':<25}" + "".join(f"{c:>17}" for c in columns)
        lines += [header, "-" * len(header)]
    for scenario, rows in table.items():
        for index, (label, row) in enumerate(rows.items()):
            cells = [cell(row.get(server)) for server in servers]
            cells += [fmt(row.get(f"wampchat_over_{other}")) for other in ("crossbar", "raw")]
            name = scenario if index == 0 else ""
            if markdown:
                lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
            else:
                lines.append(f"{name:<20} {label:<25}" + "".join(f"{c:>17}" for c in cells))
    note = "(median of the repetitions, ± half the min-max spread in % of the median; " \
           "wc/x = wampchat median / x median)"
    lines.append(note)
    return lines


def load_cpu_summary(runs: dict[tuple[str, str], list[dict]]) -> dict:
    """The load generator's own CPU time, and the server core's use by others."""
    total = busiest = window_cpu = window_wall = others = server_cpu = 0.0
    for results in runs.values():
        for result in results:
            total += result["load_cpu_total_s"]
            for figures in result["steps"].values():
                window_cpu += figures["load_cpu_s"]
                window_wall += figures["window_wall_s"]
                server_cpu += figures.get("server_cpu_s", 0.0)
                others += figures.get("core_other_cpu_s", 0.0)
                busiest = max(busiest, figures["load_cpu_s"] / figures["window_wall_s"])
    return {"total_cpu_s": total, "measured_windows_cpu_s": window_cpu,
            "measured_windows_server_cpu_s": server_cpu,
            "measured_windows_wall_s": window_wall, "busiest_window_core_share": busiest,
            "server_core_used_by_others_s": others}


def load_cpu_by_scenario(runs: dict[tuple[str, str], list[dict]]) -> dict:
    """scenario -> server -> (load CPU s, server CPU s) over the measured windows."""
    out: dict[str, dict] = {}
    for (server, scenario), results in runs.items():
        load = sum(f["load_cpu_s"] for r in results for f in r["steps"].values())
        router = sum(f.get("server_cpu_s", 0.0) for r in results for f in r["steps"].values())
        out.setdefault(scenario, {})[server] = {"load_cpu_s": load, "server_cpu_s": router}
    return out


# -- the run --------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one repetition, 1 s steps, small first-time blocks and idle counts")
    parser.add_argument("--repetitions", type=int, help="default 3 (--quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per measured step "
                        "(default 3, --quick 1)")
    parser.add_argument("--fixed-rate-share", type=float, default=0.5,
                        help="the fixed_rate steps offer this share of the slowest server's "
                        "closed-loop rate, measured in the first repetition of the same scenario "
                        "(which has no fixed_rate step); default %(default)s")
    parser.add_argument("--fixed-rate-events", type=int,
                        help="offered events/s of the fan-out fixed_rate step in every "
                        "repetition, instead of --fixed-rate-share")
    parser.add_argument("--fixed-rate-calls", type=int,
                        help="offered calls/s of the RPC fixed_rate step (as above)")
    parser.add_argument("--fixed-rate-handshakes", type=int,
                        help="offered handshakes/s of the handshake fixed_rate step (as above)")
    parser.add_argument("--existing-users", type=int, default=200)
    parser.add_argument("--first-time-users", type=int,
                        help="first-time logins per repetition (default 3000, --quick 200): "
                        "about 3 s for the fastest server, as long as the other steps (1000 "
                        "took it 1 s)")
    parser.add_argument("--idle", help="idle session counts (default 1000,5000; --quick 500,1000)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated subset of " + ",".join(SERVERS))
    parser.add_argument("--scenarios", default="",
                        help="comma-separated names or prefixes, e.g. 'rpc,handshake existing'")
    parser.add_argument("--wampchat", default=str(REPO / ".venv" / "bin" / "wampchat"))
    parser.add_argument("--crossbar", default=str(CROSSBAR_VENV / "bin" / "crossbar"))
    parser.add_argument("--crossbar-auth", choices=("function", "dynamic"), default="function",
                        help="Crossbar's authenticator: in the router worker (function, the "
                        "default) or a WAMP procedure of a component (dynamic)")
    parser.add_argument("--keep-logs", action="store_true", help="copy server logs into bench/results/")
    parser.add_argument("--profile", default="", metavar="SERVERS",
                        help="py-spy the measured steps of these servers (e.g. wampchat); "
                        "slows them: not for the headline figures")
    parser.add_argument("--py-spy", default=str(CROSSBAR_VENV / "bin" / "py-spy"))
    parser.add_argument("--serve-issuer", nargs=5, metavar=("PORT", "TOKENS", "EXISTING",
                                                            "BLOCKS", "BLOCK_SIZE"),
                        help=argparse.SUPPRESS)      # internal: the issuer process
    return parser.parse_args(argv)


def build_servers(names: list[str], workdir: Path, args, issuer: str, jwks_url: str,
                  databases: Databases, env: dict[str, str]) -> list[Server]:
    servers = []
    for name in names:
        port = free_port()
        if name == "wampchat":
            config = workdir / "bench-wampchat.yaml"
            config.write_text(wampchat_config(port, issuer, databases.create("wampchat", False)))
            command = [args.wampchat, "run", "--config", str(config), "--log-level", "warn"]
            servers.append(Server(name, command, port, workdir / f"{name}.log"))
        elif name == "crossbar":
            from bench.crossbar.config import node_config, write_cbdir
            cbdir = write_cbdir(workdir / "crossbar" / ".crossbar", node_config(
                port, REALM, ROLES, issuer, jwks_url, databases.create("crossbar", True),
                CLIENT_ID, ROLE_MAPPING, auth=args.crossbar_auth))
            command = [args.crossbar, "start", "--cbdir", str(cbdir), "--loglevel", "warn"]
            # the authenticator module is imported from this checkout by Crossbar's worker
            servers.append(Server(name, command, port, workdir / f"{name}.log",
                                  env=dict(env, PYTHONPATH=str(REPO)), cwd=workdir / "crossbar"))
        elif name == "raw":
            command = [sys.executable, "-m", "bench.raw_server", "--port", str(port),
                       "--jwks-url", jwks_url, "--issuer", issuer]
            servers.append(Server(name, command, port, workdir / f"{name}.log"))
        else:
            raise SystemExit(f"unknown server {name!r}; expected one of {', '.join(SERVERS)}")
    return servers


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve_issuer:
        port, tokens, existing, blocks, size = args.serve_issuer
        serve_issuer(int(port), tokens, int(existing), int(blocks), int(size))
        return 0
    duration = args.duration or (1.0 if args.quick else 3.0)
    repetitions = args.repetitions or (1 if args.quick else 3)
    first_block = args.first_time_users or (200 if args.quick else 3000)
    idle = args.idle or ("500,1000" if args.quick else "1000,5000")
    METRICS["memory"] = memory_metrics(idle)
    if shutil.which("taskset") is None or shutil.which("node") is None:
        raise SystemExit("bench needs taskset and node on PATH")
    if os.cpu_count() and os.cpu_count() < 2:
        raise SystemExit("bench needs two CPU cores (servers on core 0, load generator on core 1)")
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "crossbar" in names and not Path(args.crossbar).exists():
        raise SystemExit(f"{args.crossbar} is missing: `make bench` installs Crossbar.io into "
                         f"{CROSSBAR_VENV.relative_to(REPO)}")
    os.sched_setaffinity(0, {int(LOAD_CORE)})             # keep this orchestrator off the server core
    scenario_list = scenarios(args.fixed_rate_events, first_block, idle, args.fixed_rate_calls,
                              args.fixed_rate_handshakes)
    if args.scenarios:
        wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
        scenario_list = [s for s in scenario_list if any(s.name.startswith(w) for w in wanted)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DATABASE_URL", None)                         # the node gets its DSN from the config
    started_at = time.strftime("%Y%m%dT%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="wampchat-bench-"))
    tokens_path = workdir / "tokens.json"
    runs: dict[tuple[str, str], list[dict]] = {}            # (server, scenario) -> results
    failures: list[str] = []
    startup: dict[str, list[float]] = {}
    clock_start = time.monotonic()
    databases = Databases()
    servers: list[Server] = []
    issuer_port = free_port()
    issuer_url = f"http://127.0.0.1:{issuer_port}/realms/{ISSUER_REALM}"
    jwks_url = f"{issuer_url}/protocol/openid-connect/certs"
    issuer = Server("issuer", [sys.executable, "-m", "bench.run", "--serve-issuer", str(issuer_port),
                               str(tokens_path), str(args.existing_users), str(repetitions),
                               str(first_block)], issuer_port, workdir / "issuer.log", core=LOAD_CORE)
    exit_codes: dict[str, int | None] = {}
    checkout_state = checkout()
    print(f"measuring commit {checkout_state['commit']}"
          + (f" with uncommitted changes in {', '.join(checkout_state['uncommitted'])}"
             if checkout_state["uncommitted"] else ""), flush=True)
    profiler = None
    if args.profile:
        if not Path(args.py_spy).exists():
            raise SystemExit(f"{args.py_spy} is missing: pip install py-spy into "
                             f"{CROSSBAR_VENV.relative_to(REPO)} (not into wampchat's venv)")
        profile_dir = RESULTS_DIR / f"{started_at}-profile"
        profile_dir.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(args.py_spy, profile_dir, {s.strip() for s in args.profile.split(",")})
    try:
        databases.start()
        minting = issuer.start(env, timeout=300)
        print(f"issuer: {args.existing_users} existing + {repetitions}x{first_block} first-time "
              f"user tokens minted, ready in {minting:.1f} s (core {LOAD_CORE})", flush=True)
        servers = build_servers(names, workdir, args, issuer_url, jwks_url, databases, env)
        for server in servers:
            startup.setdefault(server.name, []).append(server.start(env, timeout=60))
            print(f"{server.name}: ready in {startup[server.name][-1]:.2f} s on port {server.port} "
                  f"(pid {server.process.pid}, core {SERVER_CORE})", flush=True)
        for scenario in scenario_list:
            for repetition in range(repetitions):
                # one offered load for every server of this repetition
                rate = offered_rate(scenario, repetition, runs, names, args.fixed_rate_share)
                shift = repetition % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    if scenario.restart:
                        exit_codes[server.name] = server.stop()
                        startup[server.name].append(server.start(env, timeout=60))
                    timeout = 120 + 4 * duration
                    try:
                        result = run_load(server, scenario, duration, env, timeout, tokens_path,
                                          issuer_port, repetition, profiler, rate)
                    except RuntimeError as error:
                        failures.append(str(error))
                        print(f"  {scenario.name:<20} rep {repetition + 1} {server.name:<8} "
                              f"FAILED: {str(error)[:300]}", flush=True)
                        if server.process.poll() is not None:
                            startup[server.name].append(server.start(env, timeout=60))
                        continue
                    runs.setdefault((server.name, scenario.name), []).append(result)
                    print(f"  {scenario.name:<20} rep {repetition + 1} {server.name:<8} "
                          + progress_line(result), flush=True)
    finally:
        exit_codes.update({server.name: server.stop() for server in servers})
        issuer.stop()
        if args.keep_logs:
            RESULTS_DIR.mkdir(exist_ok=True)
            for server in (*servers, issuer):
                if server.log_path.exists():
                    shutil.copy(server.log_path, RESULTS_DIR / f"{started_at}-{server.name}.log")
        databases.close()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - clock_start
    table = aggregate(runs, scenario_list, names)
    table["start-up"] = {"s to ready (/healthz)": {
        "higher_is_better": False, **{name: summarize(values) for name, values in startup.items()}}}
    row = table["start-up"]["s to ready (/healthz)"]
    for other in ("crossbar", "raw"):
        if row.get("wampchat") and row.get(other):
            row[f"wampchat_over_{other}"] = row["wampchat"]["median"] / row[other]["median"]
    load_cpu = load_cpu_summary(runs)
    print()
    for line in table_lines(table, names):
        print(line)
    print(f"\nload generator (node, core {LOAD_CORE}): {load_cpu['total_cpu_s']:.1f} s CPU in all; "
          f"{load_cpu['measured_windows_cpu_s']:.1f} s CPU in the measured windows, while the "
          f"servers used {load_cpu['measured_windows_server_cpu_s']:.1f} s (busiest window: "
          f"{100 * load_cpu['busiest_window_core_share']:.0f}% of its core)")
    for scenario, per_server in load_cpu_by_scenario(runs).items():
        print(f"  {scenario:<20} " + ", ".join(
            f"{server} load {v['load_cpu_s']:.1f} s / server {v['server_cpu_s']:.1f} s"
            for server, v in per_server.items()))
    print(f"other processes on core {SERVER_CORE} during the measured windows: "
          f"{load_cpu['server_core_used_by_others_s']:.1f} s CPU "
          f"({100 * load_cpu['server_core_used_by_others_s'] / max(load_cpu['measured_windows_wall_s'], 1e-9):.0f}%"
          " of the windows; wall-clock figures suffer, per-server-CPU-s figures much less)")
    print(f"server exit codes after SIGTERM: {exit_codes}; failed runs: {len(failures)}; "
          f"whole run {elapsed:.0f} s")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{started_at}.json"
    out.write_text(json.dumps({
        "started_at": started_at,
        "command": " ".join([sys.executable, "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(), "checkout": checkout_state, "duration_per_step_s": duration,
        "repetitions": repetitions,
        "fixed_rate_share": args.fixed_rate_share,
        "fixed_rate_events_per_s": args.fixed_rate_events,
        "fixed_rate_calls_per_s": args.fixed_rate_calls,
        "fixed_rate_handshakes_per_s": args.fixed_rate_handshakes,
        "first_time_users_per_rep": first_block,
        "existing_users": args.existing_users, "idle_counts": idle, "startup_s": startup,
        "exit_codes": exit_codes, "failures": failures, "load_generator": load_cpu,
        "load_generator_by_scenario": load_cpu_by_scenario(runs), "table": table,
        "markdown_table": "\n".join(table_lines(table, names, markdown=True)),
        "runs": {f"{server}/{scenario}": results for (server, scenario), results in runs.items()},
    }, indent=2))
    if profiler is not None:
        print_profiles(profiler.summaries)
        (profile_dir / "summary.json").write_text(json.dumps(profiler.summaries, indent=2))
        print(f"profiles: {profile_dir.relative_to(REPO)}/")
    print(f"results: {out.relative_to(REPO)}")
    return 1 if failures else 0


def print_profiles(summaries: dict[str, dict], count: int = 12) -> None:
    for label, summary in summaries.items():
        print(f"\nprofile {label}: {summary['samples']} samples; top own time:")
        for frame, pct in summary["own_pct"][:count]:
            print(f"  {pct:5.1f}%  {frame}")
        print("  top inclusive:")
        for frame, pct in summary["inclusive_pct"][:count]:
            print(f"  {pct:5.1f}%  {frame}")


def progress_line(result: dict) -> str:
    parts = []
    for step, figures in result["steps"].items():
        latency = figures.get("latency") or {}
        extra = ""
        if "kib_per_session" in figures:
            extra = f", {fmt(figures['kib_per_session'])} KiB/session"
        if figures.get("missing_events"):
            extra += f", {figures['missing_events']} events missing"
        if figures.get("failed"):
            extra += f", {figures['failed']} failed {figures.get('failure_reasons')}"
        parts.append(f"{step}: {fmt(figures['rate_per_s'])}/s p50 {fmt(latency.get('p50_ms'))} "
                     f"p99 {fmt(latency.get('p99_ms'))} ms, server CPU "
                     f"{fmt(figures.get('server_cpu_s'))} s (others on its core "
                     f"{fmt(figures.get('core_other_cpu_s'))} s), load CPU {fmt(figures['load_cpu_s'])} s"
                     + extra)
    return "; ".join(parts)


def checkout() -> dict:
    """The commit measured, and the files under wampchat/ that differ from it (what ran)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": [line[3:] for line in git("status", "--porcelain", "--", "wampchat").splitlines()]}


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                          if line.startswith("model name")), "")
    except OSError:
        pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    crossbar = ""
    if (CROSSBAR_VENV / "bin" / "python").exists():
        crossbar = subprocess.run([str(CROSSBAR_VENV / "bin" / "python"), "-c",
                                   "import crossbar, autobahn; print(crossbar.__version__, "
                                   "autobahn.__version__)"],
                                  capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "python": sys.version.split()[0], "node": node,
            "crossbar_autobahn": crossbar,
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}


if __name__ == "__main__":
    sys.exit(main())
