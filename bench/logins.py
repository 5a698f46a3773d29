"""Logins per second with just-in-time users, and database round trips per login.

    .venv/bin/python -m bench.logins            # ~1 minute
    .venv/bin/python -m bench.logins --quick    # ~20 seconds

The database is DATABASE_URL when set, else an embedded PostgreSQL (pgserver)
started for the run; either way the run works in a scratch database it drops.

Two processes besides this one (the orchestrator):

- the router (`--serve-router`, pinned to core 0): the shipped crossbar-like.yaml
  (components dropped) on the scratch database, with the development issuer
  mounted at /realms/wampchat, so the router fetches the JWKS over HTTP as from
  Keycloak. For the benchmark only, `ResilientPool.run_query`, `run_operation` and
  `run_prepared` wrapped to count statements (each is one round trip: one statement in
  its own transaction), and /bench/ serves tokens of the dev issuer and the counters;
- the load generator: Node with `ws` (pinned to core 1), C workers each in a
  closed loop of: open WebSocket, HELLO (ticket), CHALLENGE, AUTHENTICATE (the
  access token), WELCOME or ABORT, close. Each token is used once per scenario.

Scenarios, in this order:

- `first-time`: users the database has never seen (the JIT path: one statement that
  finds the row or inserts it, shared by the logins that arrive while two such
  statements are running: `LOGIN_STATEMENTS` in wampchat/users/postgres.py);
- `again, cached`: the same users at once again (the directory's cache, TTL 30 s);
- `existing, not cached`: users whose rows exist (inserted by this script, as if
  created by another node) but that this router has not seen (the same one statement);
- `stalled database` (unless --no-stall): another connection holds ACCESS
  EXCLUSIVE on `users` while more new users than pool connections plus waiting
  slots (database.max_waiting) log in: how long a refused login waits, how many
  queries waited for a connection at most, how many were refused at once (by the pool,
  or because a full batch of logins was waiting already).

The pool's `last_login_at` write-behind (one UPDATE per touch interval for all
logins in it) is reported as counted; in a short run it is usually 0.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.run import HANDSHAKE_JS, LOAD_CORE, REPO, Server, free_port, machine, proc_stat

RESULTS_DIR = REPO / "bench" / "results"


# -- the router process -------------------------------------------------------------------

def serve_router(options: dict[str, Any]) -> None:
    """The shipped node on options["dsn"], with counted statements and /bench/ endpoints."""
    from dataclasses import replace

    from twisted.internet import reactor
    from twisted.web.resource import Resource

    from wampchat.cli import build_runtime, start_logging
    from wampchat.config import load_config
    from wampchat.dev.issuer import DevIssuer, realms_resource
    from wampchat.users.pool import ResilientPool
    from wampchat.users.postgres import PostgresUserStore

    counts = dict.fromkeys(STATEMENT_KINDS, 0)

    def counted(method, sql_of=lambda sql: sql):
        async def wrapper(self, statement, *args, **kwargs):
            verb = sql_of(statement).lstrip().split(None, 1)[0].upper()
            counts[verb if verb in counts else "other"] += 1
            return await method(self, statement, *args, **kwargs)
        return wrapper

    ResilientPool.run_query = counted(ResilientPool.run_query)
    ResilientPool.run_operation = counted(ResilientPool.run_operation)
    ResilientPool.run_prepared = counted(ResilientPool.run_prepared, lambda prepared: prepared.sql)
    stores: list[PostgresUserStore] = []
    store_init = PostgresUserStore.__init__

    def kept(self, *args, **kwargs):
        store_init(self, *args, **kwargs)
        stores.append(self)
    PostgresUserStore.__init__ = kept

    port = options["port"]
    issuer_url = f"http://127.0.0.1:{port}/realms/wampchat"
    config = load_config(str(REPO / "crossbar-like.yaml"), environ={
        "WAMPCHAT_PORT": str(port), "KEYCLOAK_REALM_URL": issuer_url,
        "DATABASE_URL": options["dsn"]})
    config = replace(config, components=(),
                     limits=replace(config.limits, message_rate=0.0, max_connections=0,
                                    max_connections_per_address=0))
    issuer = DevIssuer(issuer_url, reactor)
    bench = Resource()
    bench.putChild(b"tokens", _json_resource(lambda args: [
        issuer.mint("alice", sub=f"{args['prefix']}-{i}", email=f"{args['prefix']}-{i}@bench.test",
                    preferred_username=f"{args['prefix']}-{i}")
        for i in range(int(args["count"]))]))
    pools: list[ResilientPool] = []

    def stats(args) -> dict:
        pool = pools[0]
        if args.get("reset"):               # peak_waiting per scenario
            pool.peak_waiting = len(pool._waiting)
        return {**counts, "peak_waiting": pool.peak_waiting,
                "refused_busy": pool.refused_busy + sum(store.refused_busy for store in stores),
                "largest_batch": max((store._logins.largest_batch for store in stores), default=0),
                "max_waiting": pool._max_waiting, "pool_size": pool.size}

    bench.putChild(b"stats", _json_resource(stats))
    start_logging("warn")
    node = build_runtime(config, reactor, extra_resources={b"realms": realms_resource(issuer),
                                                           b"bench": bench})
    pools.extend(s for s in node.service if isinstance(s, ResilientPool))
    reactor.addSystemEventTrigger("before", "shutdown", node.service.stopService)
    node.service.startService()
    reactor.run()


def _json_resource(fn):
    """A leaf resource answering GET with fn(query arguments) as JSON."""
    from twisted.web.resource import Resource

    class Json(Resource):
        isLeaf = True

        def render_GET(self, request) -> bytes:
            args = {k.decode(): v[0].decode() for k, v in request.args.items()}
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(fn(args)).encode()

    return Json()


# -- the load generator (Node, `ws`) --------------------------------------------------------

# Statements counted by their first word (WITH: the directory's find-or-create).
STATEMENT_KINDS = ("WITH", "SELECT", "INSERT", "UPDATE", "other")

LOAD_JS = r"""
'use strict';
const fs = require('node:fs');
const { performance } = require('node:perf_hooks');
const WebSocket = require('ws');
const o = JSON.parse(fs.readFileSync(process.argv[1], 'utf8'));
let next = 0, ok = 0, failed = 0;
const latencies = [], failLatencies = [], reasons = {};
""" + HANDSHAKE_JS + r"""async function worker() {
  while (next < o.tokens.length) {
    const r = await handshake(o.tokens[next++]);
    if (r.ok) { ok++; latencies.push(r.ms); }
    else { failed++; reasons[r.reason] = (reasons[r.reason] || 0) + 1; if (r.ms) failLatencies.push(r.ms); }
  }
}
async function main() {
  const t0 = performance.now();
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b); failLatencies.sort((a, b) => a - b);
  const cpu = process.cpuUsage();
  process.stdout.write(JSON.stringify({
    logins: ok, failed, reasons, seconds, rate_per_s: ok / seconds,
    p50_ms: pct(latencies, 0.5), p99_ms: pct(latencies, 0.99),
    failed_p50_ms: pct(failLatencies, 0.5), failed_max_ms: failLatencies.length ? failLatencies[failLatencies.length - 1] : null,
    load_cpu_s: (cpu.user + cpu.system) / 1e6 }) + '\n');
}
main().catch((e) => { process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n'); process.exit(2); });
"""


def get_json(router: Server, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{router.port}/bench/{path}",
                                timeout=120) as response:
        return json.loads(response.read())


def tokens(router: Server, prefix: str, count: int) -> list[str]:
    return get_json(router, f"tokens?prefix={prefix}&count={count}")


def run_load(router: Server, token_list: list[str], concurrency: int, workdir: Path) -> dict:
    """Every token logs in once, `concurrency` at a time; load result + router CPU + statements."""
    options = workdir / "load.json"
    options.write_text(json.dumps({"url": router.url, "realm": "wampchat", "tokens": token_list,
                                   "concurrency": concurrency, "timeout": 30}))
    before_stats, before_cpu = get_json(router, "stats?reset=1"), router.cpu_seconds()
    done = subprocess.run(["taskset", "-c", LOAD_CORE, "node", "-e", LOAD_JS, str(options)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    result = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    if "error" in result or not result:
        raise RuntimeError(f"load generator failed: {result.get('error')}\n{done.stderr[-2000:]}")
    after_stats = get_json(router, "stats")
    statements = {verb: after_stats[verb] - before_stats[verb]
                  for verb in STATEMENT_KINDS}
    attempts = result["logins"] + result["failed"]
    result.update(
        statements=statements,
        round_trips_per_login=sum(statements.values()) / attempts if attempts else None,
        router_cpu_ms_per_login=(1000 * (router.cpu_seconds() - before_cpu) / attempts
                                 if attempts else None),
        peak_waiting=after_stats["peak_waiting"], max_waiting=after_stats["max_waiting"],
        pool_size=after_stats["pool_size"], largest_batch=after_stats["largest_batch"],
        refused_busy=after_stats["refused_busy"] - before_stats["refused_busy"])
    return result


# -- the database -------------------------------------------------------------------------

def _execute(dsn: str, *statements: tuple[str, tuple]) -> None:
    import psycopg2

    connection = psycopg2.connect(dsn)
    try:
        with connection, connection.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
    finally:
        connection.close()


def insert_users(dsn: str, prefix: str, count: int) -> None:
    """Rows for users this router has never seen (as if another node had created them)."""
    _execute(dsn, ("INSERT INTO users (keycloak_id, email, username, roles)"
                   " SELECT %s || '-' || i, %s || '-' || i || '@bench.test', %s || '-' || i,"
                   " ARRAY['user'] FROM generate_series(0, %s - 1) AS i",
                   (prefix, prefix, prefix, count)))


class TableLock:
    """Another client holding ACCESS EXCLUSIVE on users: every user query waits."""

    def __init__(self, dsn: str) -> None:
        import psycopg2

        self._connection = psycopg2.connect(dsn)

    def __enter__(self) -> "TableLock":
        with self._connection.cursor() as cursor:
            cursor.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        return self

    def __exit__(self, *exc_info) -> None:
        self._connection.rollback()
        self._connection.close()


# -- the run ------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.logins",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer logins: about 20 seconds")
    parser.add_argument("--logins", type=int, help="logins per scenario (default 3000, quick 600)")
    parser.add_argument("--concurrency", type=int, default=20, help="logins in flight")
    parser.add_argument("--no-stall", action="store_true", help="skip the stalled-database step")
    parser.add_argument("--stall-logins", type=int, default=400)
    parser.add_argument("--stall-concurrency", type=int, default=200)
    parser.add_argument("--keep-logs", action="store_true",
                        help="copy the router log to bench/results/")
    parser.add_argument("--serve-router", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def database(stack: ExitStack) -> str:
    """A scratch database on DATABASE_URL or on an embedded server; dropped at the end."""
    from wampchat.dev.database import EmbeddedPostgres, configured_dsn, scratch_database

    server_dsn = configured_dsn()
    if server_dsn is None:
        server_dsn = stack.enter_context(EmbeddedPostgres()).dsn
    return stack.enter_context(scratch_database(server_dsn, prefix="wampchat_bench"))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve_router:
        serve_router(json.loads(args.serve_router))
        return 0
    count = args.logins or (600 if args.quick else 3000)
    run = secrets.token_hex(3)
    results: dict[str, Any] = {"machine": machine(), "logins_per_scenario": count,
                               "concurrency": args.concurrency,
                               "database": "DATABASE_URL" if os.environ.get("DATABASE_URL")
                               else "embedded pgserver"}
    with ExitStack() as stack:
        dsn = database(stack)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-logins-")))
        port = free_port()
        router = Server("router", [sys.executable, "-m", "bench.logins", "--serve-router",
                                   json.dumps({"port": port, "dsn": dsn})],
                        port, workdir / "router.log")
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        router.start(env, timeout=60)
        stack.callback(router.stop)
        print(f"router on :{port}, database {results['database']}, {count} logins per scenario,"
              f" {args.concurrency} in flight", flush=True)
        run_load(router, tokens(router, f"warm-{run}", 20), 4, workdir)      # JWKS fetched

        first = tokens(router, f"new-{run}", count)
        insert_users(dsn, f"old-{run}", count)
        old = tokens(router, f"old-{run}", count)
        scenarios = {}
        scenarios["first-time (JIT)"] = run_load(router, first, args.concurrency, workdir)
        scenarios["again, cached"] = run_load(router, first, args.concurrency, workdir)
        scenarios["existing, not cached"] = run_load(router, old, args.concurrency, workdir)
        for name, result in scenarios.items():
            print(line(name, result), flush=True)
        if not args.no_stall:
            stalled = tokens(router, f"stall-{run}", args.stall_logins)
            with TableLock(dsn):
                result = run_load(router, stalled, args.stall_concurrency, workdir)
            scenarios["stalled database"] = result
            print(stall_line(result), flush=True)
        results["scenarios"] = scenarios
        if args.keep_logs:
            RESULTS_DIR.mkdir(exist_ok=True)
            router.stop()
            shutil.copy(router.log_path, RESULTS_DIR / f"logins-router-{run}.log")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"logins-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out.relative_to(REPO)}")
    return 0


def line(name: str, r: dict) -> str:
    s = r["statements"]
    return (f"{name:22} {r['rate_per_s']:7.0f} logins/s  p50 {r['p50_ms']:6.1f} ms"
            f"  p99 {r['p99_ms']:6.1f} ms  round trips/login {r['round_trips_per_login']:.2f}"
            f" ({', '.join(f'{kind} {s[kind]}' for kind in STATEMENT_KINDS if kind != 'other')})"
            f"  router CPU {r['router_cpu_ms_per_login']:.2f} ms/login"
            f"  failed {r['failed']}  largest batch so far {r['largest_batch']}")


def stall_line(r: dict) -> str:
    return (f"{'stalled database':22} {r['logins'] + r['failed']} attempts in {r['seconds']:.1f} s:"
            f" refused {r['failed']} {r['reasons']}; refused login waited p50"
            f" {r['failed_p50_ms'] or 0:.0f} ms, max {r['failed_max_ms'] or 0:.0f} ms;"
            f" queries waiting at most {r['peak_waiting']} (limit {r['max_waiting']},"
            f" pool {r['pool_size']}), refused at once {r['refused_busy']};"
            f" statements asked for per attempt {r['round_trips_per_login']:.2f}"
            f" (the refused-at-once never reach the database)")


if __name__ == "__main__":
    raise SystemExit(main())
