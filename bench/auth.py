"""Authenticated handshakes: local JWT validation against a cached JWKS vs introspection per HELLO.

    .venv/bin/python -m bench.auth            # ~2 minutes
    .venv/bin/python -m bench.auth --quick    # ~30 seconds

Three processes besides this one (the orchestrator):

- the development issuer (`--serve-issuer`), pinned to core 1: discovery, JWKS, the
  token endpoint and token introspection, counting JWKS and introspection requests;
- two routers, each pinned to core 0 with `taskset -c 0` and started together:
  `local` is `wampchat run` with the `keycloak` ticket authenticator (tokens checked
  locally against the cached JWKS; the product), `introspect` (`--serve-router`) is
  the same config with a baseline authenticator that POSTs every token to the
  issuer's /token/introspect (client-authenticated, keep-alive connections with
  TCP_NODELAY: its best case) and
  builds the session from the answer. Neither router has a database (user_id is
  None), so the figures are the authentication path alone;
- the load generator: Node with the `ws` package (script below, pinned to core 1),
  C workers each in a closed loop of: open WebSocket, HELLO (ticket), CHALLENGE,
  AUTHENTICATE (an access token from the issuer's password grant), WELCOME, close.
  Latency is from starting the connect to the WELCOME.

Per load run: a warm-up (the first login fetches the JWKS), then a measured window
around which this process reads the router's CPU time and the issuer's request
counters: handshakes/s, p50/p99 latency, router CPU ms per handshake, JWKS (and
introspection) requests per 1000 connections, and how busy each process kept its
core (a router core well below 100% means the limit was elsewhere: the shared
core 1, or the round trips). Requests are counted within the window and
handshakes completed within it, so a window's edges can make 1000 read 998. The two routers alternate over
the repetitions; each figure is the median with its min-max spread. JSON goes to
bench/results/auth-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.run import (HANDSHAKE_JS, LOAD_CORE, REPO, RESULTS_DIR, SERVER_CORE, Server, drive_load,
                       fmt, free_port, machine, proc_stat, serve_counted_issuer, summarize)

MODES = ("local", "introspect")
CLIENT_ID = "wampchat"
BACKEND_CLIENT, BACKEND_SECRET = "wampchat-backend", "wampchat-backend-secret"
USERS = ("alice", "bob", "admin")


# -- the router config (both modes) --------------------------------------------------------

def router_config(port: int, issuer_url: str) -> str:
    return f"""\
# written by bench/auth.py for one benchmark run
version: 2
workers:
  - type: router
    realms:
      - name: bench
        roles:
          - {{name: user}}
          - {{name: admin}}
          - {{name: backend}}
    transports:
      - type: web
        endpoint: {{type: tcp, interface: 127.0.0.1, port: {port}}}
        paths:
          ws:
            type: websocket
            serializers: [json]
            options:
              compression: false
            auth:
              ticket:
                type: keycloak
                issuer: "{issuer_url}"
                client_id: {CLIENT_ID}
"""


# -- the issuer process ---------------------------------------------------------------------

def serve_issuer(port: int, core: int | None) -> None:
    """The dev issuer on 127.0.0.1:port, with /healthz and /bench-stats (request counters)."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    from twisted.internet import reactor

    from wampchat.dev.issuer import DevIssuer

    issuer = DevIssuer(f"http://127.0.0.1:{port}/realms/wampchat", reactor)
    serve_counted_issuer(reactor, issuer, port,
                         {"jwks": "jwks", "introspect": "introspect", "token": "token_grant"})


# -- the introspection baseline (bench only) ------------------------------------------------

class IntrospectionAuthenticator:
    """Ticket auth that asks the issuer about every token (RFC 7662), as a gateway would.

    The same identity rules as the keycloak authenticator where the answer allows:
    active, issuer, the client in aud or azp, typ Bearer; roles mapped the same way.
    """

    authmethod = "ticket"
    takes_transport_token = True

    def __init__(self, config: Any, http: Any, clock: Any) -> None:
        self._config = config
        self._http = http
        self._clock = clock
        self._url = f"{config.issuer.rstrip('/')}/protocol/openid-connect/token/introspect"

    async def hello(self, hello):
        from wampchat.auth.authenticator import Challenge
        token = hello.transport.bearer_token
        return await self._accept(token) if token else Challenge("ticket")

    async def authenticate(self, hello, signature, extra):
        return await self._accept(signature)

    async def _accept(self, token: str):
        from wampchat.auth import roles
        from wampchat.auth.authenticator import Accept
        from wampchat.errors import BadCredentials, RoleRefused, Unavailable

        try:
            response = await self._http.post(self._url, data={"token": token},
                                             auth=(BACKEND_CLIENT, BACKEND_SECRET),
                                             timeout=5.0, reactor=self._clock)
            answer = json.loads(await response.content())
        except Exception:
            raise Unavailable("the introspection endpoint cannot be reached") from None
        if response.code != 200 or not isinstance(answer, dict):
            raise Unavailable(f"introspection answered HTTP {response.code}")
        aud = answer.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if (answer.get("active") is not True or answer.get("typ") != "Bearer"
                or answer.get("iss") != self._config.issuer
                or (self._config.client_id not in audiences
                    and answer.get("azp") != self._config.client_id)
                or not isinstance(answer.get("sub"), str)):
            raise BadCredentials("the token is not active for this client")
        found = list((answer.get("realm_access") or {}).get("roles") or [])
        found += ((answer.get("resource_access") or {}).get(self._config.client_id) or {}
                  ).get("roles") or []
        authrole = roles.authrole_for(found, self._config.role_mapping)
        if authrole is None:
            raise RoleRefused("no role mapping rule matches the token's roles")
        return Accept(authid=answer.get("email") or answer.get("preferred_username")
                      or answer["sub"], authrole=authrole, authmethod="ticket",
                      authprovider="keycloak",
                      authextra={"user_id": None, "keycloak_id": answer["sub"],
                                 "email": answer.get("email"), "roles": found,
                                 "activity_status": "online"},
                      expires_at=answer["exp"] + self._config.leeway,
                      credential_expires_at=answer["exp"], subject=answer["sub"],
                      sid=answer.get("sid"))


class _NoDelayEndpoints:
    """Plain TCP to the issuer with TCP_NODELAY.

    Twisted's HTTP client writes a request's headers and its body in separate
    reactor turns; with Nagle on, the body waits for the peer's delayed ACK (~40 ms
    on Linux), which would make the baseline look far worse than it has to be.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def endpointForURI(self, uri):
        from twisted.internet.endpoints import TCP4ClientEndpoint
        endpoint = TCP4ClientEndpoint(self._reactor, uri.host.decode("ascii"), uri.port)

        class NoDelay:
            def connect(self, factory):
                def set_nodelay(protocol):
                    protocol.transport.setTcpNoDelay(True)
                    return protocol
                return endpoint.connect(factory).addCallback(set_nodelay)
        return NoDelay()


def serve_introspecting_router(config_path: str) -> None:
    """The bench router config with IntrospectionAuthenticator in place of local validation."""
    from treq.client import HTTPClient
    from twisted.internet import reactor
    from twisted.web.client import Agent, HTTPConnectionPool

    from wampchat.config import load_config
    from wampchat.node import build_node

    config = load_config(config_path)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 32           # keep-alive: the baseline's best case
    http = HTTPClient(Agent.usingEndpointFactory(reactor, _NoDelayEndpoints(reactor), pool=pool))
    node = build_node(config, reactor,
                      keycloak_factory=lambda kc: IntrospectionAuthenticator(kc, http, reactor))
    node.service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", node.service.stopService)
    reactor.run()


# -- the load generator (Node, `ws`) --------------------------------------------------------

LOAD_JS = r"""
'use strict';
const { performance } = require('node:perf_hooks');
const readline = require('node:readline');
const WebSocket = require('ws');
const o = JSON.parse(process.argv[1]);
let recording = false, stopping = false, ok = 0, failed = 0, latencies = [], reasons = {};
let t0 = 0, t1 = 0, next = 0;
function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }
""" + HANDSHAKE_JS + r"""async function worker() {
  while (!stopping) {
    const r = await handshake(o.tokens[next++ % o.tokens.length]);
    if (!recording) continue;
    if (r.ok) { ok++; latencies.push(r.ms); } else { failed++; reasons[r.reason] = (reasons[r.reason] || 0) + 1; }
  }
}
async function main() {
  const workers = Array.from({ length: o.concurrency }, worker);
  await new Promise((r) => setTimeout(r, o.warmup * 1000));
  emit({ phase: 'ready' });
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((r) => rl.once('line', r));
  recording = true; t0 = performance.now();
  await new Promise((r) => setTimeout(r, o.duration * 1000));
  recording = false; t1 = performance.now();
  emit({ phase: 'done' });
  stopping = true;
  await Promise.all(workers);
  rl.close();
  latencies.sort((a, b) => a - b);
  const cpu = process.cpuUsage();
  emit({ phase: 'result', handshakes: ok, failed, reasons, window_s: (t1 - t0) / 1000,
         rate_per_s: ok / ((t1 - t0) / 1000), p50_ms: pct(latencies, 0.5), p99_ms: pct(latencies, 0.99),
         load_cpu_s: (cpu.user + cpu.system) / 1e6 });
}
main().catch((e) => { emit({ phase: 'error', error: String(e && e.stack || e) }); process.exit(2); });
"""


def issuer_stats(issuer: Server) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{issuer.port}/bench-stats", timeout=5) as r:
        return json.loads(r.read())


def fetch_tokens(issuer: Server, logins_per_user: int) -> list[str]:
    """Access tokens from the issuer's password grant: a few logins of each demo user."""
    url = f"http://127.0.0.1:{issuer.port}/realms/wampchat/protocol/openid-connect/token"
    tokens = []
    for _ in range(logins_per_user):
        for user in USERS:
            form = urllib.parse.urlencode({"grant_type": "password", "client_id": CLIENT_ID,
                                           "username": user, "password": user}).encode()
            with urllib.request.urlopen(url, data=form, timeout=5) as response:
                tokens.append(json.loads(response.read())["access_token"])
    return tokens


def run_load(router: Server, issuer: Server, tokens: list[str], args) -> dict:
    """One load run against router; the load result plus router CPU and issuer counters."""
    options = {"url": router.url, "realm": "bench", "tokens": tokens,
               "concurrency": args.concurrency, "warmup": args.warmup,
               "duration": args.duration, "timeout": 10}
    command = ["taskset", "-c", LOAD_CORE, "node", "-e", LOAD_JS, json.dumps(options)]
    before = None
    figures: dict[str, Any] = {}

    def ready(_message: dict, load) -> None:
        nonlocal before
        before = (router.cpu_seconds(), issuer.cpu_seconds(), issuer_stats(issuer),
                  proc_stat(load.pid)[1], time.monotonic())

    def done(_message: dict, load) -> None:
        if before is None:
            return
        after = issuer_stats(issuer)
        wall = time.monotonic() - before[4]
        figures.update({"router_core_share": (router.cpu_seconds() - before[0]) / wall,
                        "load_core_share": (proc_stat(load.pid)[1] - before[3]) / wall,
                        "issuer_core_share": (issuer.cpu_seconds() - before[1]) / wall,
                        "router_cpu_s": router.cpu_seconds() - before[0],
                        "issuer_cpu_s": issuer.cpu_seconds() - before[1],
                        "jwks_requests": after["jwks"] - before[2]["jwks"],
                        "introspections": after["introspect"] - before[2]["introspect"]})

    result, stderr = drive_load(command, args.warmup + args.duration + 60, ready, done)
    if result is None or result["phase"] == "error":
        raise RuntimeError(f"load against {router.name} failed: {(result or {}).get('error')}\n"
                           + stderr)
    result.update(figures)
    count = result["handshakes"]
    result["router_cpu_ms_per_handshake"] = 1000 * result["router_cpu_s"] / count if count else None
    result["issuer_cpu_ms_per_handshake"] = 1000 * result["issuer_cpu_s"] / count if count else None
    result["jwks_per_1000"] = 1000 * result["jwks_requests"] / count if count else None
    result["introspections_per_1000"] = 1000 * result["introspections"] / count if count else None
    return result


# (label, key, higher is better)
FIGURES = [
    ("handshakes/s", "rate_per_s", True),
    ("p50 ms", "p50_ms", False),
    ("p99 ms", "p99_ms", False),
    ("router CPU ms/handshake", "router_cpu_ms_per_handshake", False),
    ("issuer CPU ms/handshake", "issuer_cpu_ms_per_handshake", False),
    ("JWKS req per 1000 conn", "jwks_per_1000", False),
    ("introspections per 1000", "introspections_per_1000", False),
    ("failed handshakes", "failed", False),
    ("router core busy", "router_core_share", False),
    ("load generator core busy", "load_core_share", False),
    ("issuer core busy", "issuer_core_share", False),
]


def table(runs: dict[str, list[dict]]) -> dict:
    rows = {}
    for label, key, higher in FIGURES:
        row = rows[label] = {"higher_is_better": higher}
        for mode in MODES:
            row[mode] = summarize([r.get(key) for r in runs.get(mode, [])])
        if row.get("local") and row.get("introspect") and row["introspect"]["median"]:
            row["local_over_introspect"] = row["local"]["median"] / row["introspect"]["median"]
    return rows


def cell(summary: dict | None) -> str:
    if not summary:
        return "-"
    spread = summary["spread_pct"]
    return fmt(summary["median"]) + (f" ±{spread / 2:.0f}%" if spread else "")


def print_table(rows: dict) -> None:
    header = f"{'figure':<26} {'local JWKS':>16} {'introspection':>16} {'local/introspect':>17}"
    print(header)
    print("-" * len(header))
    for label, row in rows.items():
        ratio = row.get("local_over_introspect")
        print(f"{label:<26} {cell(row.get('local')):>16} {cell(row.get('introspect')):>16} "
              f"{fmt(ratio) if ratio is not None else '-':>17}")
    print("(median of the repetitions, ± half the min-max spread in % of the median)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.auth",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short steps: about 30 seconds")
    parser.add_argument("--repetitions", type=int, help="per router (default 3, --quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds (default 8, --quick 3)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--wampchat", default=str(REPO / ".venv" / "bin" / "wampchat"))
    parser.add_argument("--serve-issuer", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-router", metavar="CONFIG", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve_issuer:
        serve_issuer(args.serve_issuer, args.core)
        return 0
    if args.serve_router:
        serve_introspecting_router(args.serve_router)
        return 0
    args.duration = args.duration or (3.0 if args.quick else 8.0)
    args.repetitions = args.repetitions or (1 if args.quick else 3)
    if shutil.which("taskset") is None or shutil.which("node") is None:
        raise SystemExit("bench needs taskset and node on PATH")
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    started_at = time.strftime("%Y%m%dT%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="wampchat-bench-auth-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    issuer_port = free_port()
    issuer_url = f"http://127.0.0.1:{issuer_port}/realms/wampchat"
    issuer = Server("issuer", [sys.executable, "-m", "bench.auth", "--serve-issuer",
                               str(issuer_port), "--core", LOAD_CORE],
                    issuer_port, workdir / "issuer.log")
    routers = []
    for mode in MODES:
        port = free_port()
        config = workdir / f"{mode}.yaml"
        config.write_text(router_config(port, issuer_url))
        command = ([args.wampchat, "run", "--config", str(config), "--log-level", "warn"]
                   if mode == "local" else
                   [sys.executable, "-m", "bench.auth", "--serve-router", str(config)])
        routers.append(Server(mode, command, port, workdir / f"{mode}.log"))
    runs: dict[str, list[dict]] = {}
    clock_start = time.monotonic()
    try:
        issuer.start(env)
        for router in routers:
            router.start(env)
            print(f"{router.name}: router pid {router.process.pid} on core {SERVER_CORE}, "
                  f"port {router.port}", flush=True)
        for repetition in range(args.repetitions):
            order = routers if repetition % 2 == 0 else list(reversed(routers))
            for router in order:
                tokens = fetch_tokens(issuer, logins_per_user=5)   # fresh: 300 s lifetime
                result = run_load(router, issuer, tokens, args)
                runs.setdefault(router.name, []).append(result)
                print(f"  rep {repetition + 1} {router.name:<10} {fmt(result['rate_per_s'])}/s "
                      f"p50 {fmt(result['p50_ms'])} p99 {fmt(result['p99_ms'])} ms, router CPU "
                      f"{fmt(result['router_cpu_ms_per_handshake'])} ms/handshake, JWKS "
                      f"{result['jwks_requests']}, introspections {result['introspections']}, "
                      f"failed {result['failed']} {result['reasons'] or ''}", flush=True)
    finally:
        exit_codes = {server.name: server.stop() for server in (*routers, issuer)}
        shutil.rmtree(workdir, ignore_errors=True)
    rows = table(runs)
    print()
    print_table(rows)
    throughput = rows["handshakes/s"].get("local_over_introspect")
    cpu = rows["router CPU ms/handshake"]
    if throughput is not None:
        print(f"\nlocal validation: {throughput:.2f}x the introspection baseline's handshakes/s")
    if cpu.get("local") and cpu.get("introspect"):
        print(f"router CPU per handshake: {cpu['introspect']['median'] / cpu['local']['median']:.2f}x"
              " as much with introspection")
    print(f"concurrency {args.concurrency}, {args.duration:.0f} s measured per run after "
          f"{args.warmup:.0f} s warm-up, {args.repetitions} run(s) per router; routers on core "
          f"{SERVER_CORE}, issuer and load generator on core {LOAD_CORE}; exit codes {exit_codes};"
          f" whole run {time.monotonic() - clock_start:.0f} s")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"auth-{started_at}.json"
    out.write_text(json.dumps({"started_at": started_at, "machine": machine(),
                               "concurrency": args.concurrency, "duration_s": args.duration,
                               "warmup_s": args.warmup, "repetitions": args.repetitions,
                               "table": rows, "runs": runs}, indent=2))
    print(f"results: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
