"""Stress figures of wampchat (issue 8): what a user asks before putting it in front of SSO.

    .venv/bin/python -m bench.stress            # ~3 minutes
    .venv/bin/python -m bench.stress --quick    # ~1 minute

Runs `wampchat dev` with the shipped config (its limits included; clients come from
several loopback addresses, 127.0.0.0/8) on a database of its own
(an embedded PostgreSQL, or $DATABASE_URL), pinned to core 0; bench/stress.js loads it
from core 1. Tokens come from the development issuer's token endpoint, as a client's would.

1. sessions held at once, with the router's RSS per idle authenticated session;
2. a flood of concurrent connections logging in with forged tokens, while a legitimate
   user logs in and makes a call every 0.5 s: that user's round-trip latency;
3. a subscriber that stops reading while a publisher floods its topic: router RSS over
   time (bounded by the outbound buffer limit), the reading subscriber's rate, and the
   slow consumer being ended;
4. PostgreSQL stopped and started again: what logins get meanwhile, and the time from
   the restart until the pool is connected and a login succeeds (no router restart).

Prints a summary and writes bench/results/stress-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from bench.run import REPO, RESULTS_DIR, Server, free_port, machine

LOAD_CORE = "1"


def stress_config(directory: Path) -> Path:
    """The shipped config, limits included (the flood is blocked by them, as it should be)."""
    document = yaml.safe_load((REPO / "crossbar-like.yaml").read_text())
    path = directory / "stress.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def post_form(url: str, form: dict[str, str]) -> dict:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
        return json.loads(response.read())


def metric(port: int, name: str, labels: str = "") -> float | None:
    """One sample of the router's /metrics (None when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
                return float(line.rsplit(" ", 1)[1])
    return None


class Load:
    """One bench/stress.js process on LOAD_CORE, its JSON lines read as they come."""

    def __init__(self, url: str, args: list[str], env: dict[str, str]) -> None:
        command = ["taskset", "-c", LOAD_CORE, "node", str(REPO / "bench" / "stress.js"),
                   "--url", url, *args]
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def line(self, timeout: float = 300.0) -> dict:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()))
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            self.process.kill()
            raise RuntimeError(f"stress.js said nothing within {timeout} s")
        document = json.loads(result[0])
        if document.get("phase") == "error":
            raise RuntimeError(f"stress.js failed: {document['error']}")
        return document

    def go_on(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 60.0) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()


def held_sessions(router: Server, url: str, env: dict, steps: list[int]) -> list[dict]:
    time.sleep(1.0)
    baseline = router.rss_bytes()
    rows = []
    load = Load(url, ["--scenario", "hold", "--steps", ",".join(map(str, steps)),
                      "--token-env", "STRESS_TOKEN"], env)
    for _ in steps:
        held = load.line()
        time.sleep(1.0)                             # let the router settle before reading RSS
        rss = router.rss_bytes()
        rows.append({"sessions": held["sessions"], "open_seconds": round(held["seconds"], 1),
                     "logins_per_second": round(held["sessions"] / held["seconds"]) if not rows
                     else None, "rss_mib": round(rss / 2**20, 1),
                     "rss_per_session_kib": round((rss - baseline) / held["sessions"] / 1024, 1),
                     "failures": held["failures"]})
        print(f"  held {rows[-1]}", flush=True)
        load.go_on()
    load.line()
    load.finish()
    return rows


def flood_with_probe(url: str, env: dict, connections: int, duration: int) -> dict:
    probe = Load(url, ["--scenario", "probe", "--duration", str(duration), "--interval", "500",
                       "--token-env", "STRESS_TOKEN", "--from", "127.0.0.2"], env)
    time.sleep(1.0)                                 # a few quiet rounds first
    # The attacker is 127.0.0.3; the legitimate user (and later scenarios) come from others.
    flood = Load(url, ["--scenario", "flood", "--connections", str(connections), "--from", "127.0.0.3",
                       "--duration", str(duration - 2)], env)
    flood_result = flood.line(duration + 120)
    probe_result = probe.line(duration + 120)
    flood.finish()
    probe.finish()
    return {"flood": flood_result, "legitimate_user": probe_result}


def slow_consumer(router: Server, url: str, env: dict, duration: int) -> dict:
    samples = []
    load = Load(url, ["--scenario", "slow", "--duration", str(duration), "--from", "127.0.0.5",
                      "--token-env", "STRESS_BACKEND_TOKEN"], env)
    started = time.monotonic()
    done: list[dict] = []
    waiter = threading.Thread(target=lambda: done.append(load.line(duration + 60)))
    waiter.start()
    while waiter.is_alive():
        samples.append((round(time.monotonic() - started, 1), round(router.rss_bytes() / 2**20, 1)))
        waiter.join(1.0)
    load.finish()
    if not done:
        raise RuntimeError("slow consumer scenario gave no result")
    rss = [mib for _, mib in samples]
    return {**done[0], "rss_mib_first": rss[0], "rss_mib_max": max(rss), "rss_mib_last": rss[-1],
            "rss_samples": samples}


def database_outage(port: int, url: str, env: dict, database, dsn_outside: bool) -> dict:
    if dsn_outside:
        return {"skipped": "DATABASE_URL is an outside server: not stopped by the bench"}
    probe_args = ["--scenario", "probe", "--duration", "3", "--interval", "500",
                  "--token-env", "STRESS_NEW_USER_TOKEN", "--from", "127.0.0.6"]
    database.stop()
    stopped_at = time.monotonic()
    during = Load(url, probe_args, env)
    during_result = during.line(60)
    during.finish()
    database.start()
    restarted_at = time.monotonic()
    recovered = None
    while time.monotonic() - restarted_at < 60:
        connected = metric(port, "wampchat_db_pool_connections", '{state="connected"}')
        if connected and connected > 0:
            after = Load(url, [*probe_args[:3], "1", *probe_args[4:]], env)
            result = after.line(60)
            after.finish()
            if result["count"] and not result["failures"]:
                recovered = time.monotonic() - restarted_at
                break
        time.sleep(0.2)
    return {"down_seconds": round(restarted_at - stopped_at, 1),
            "logins_while_down": {"ok": during_result["count"],
                                  "refused": sorted(set(during_result["failures"]))},
            "seconds_from_restart_to_first_login": None if recovered is None else round(recovered, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, shorter runs")
    parser.add_argument("--only", default="held,flood,slow,database",
                        help="comma-separated scenarios to run (default: all four)")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    steps = [500, 2000] if args.quick else [1000, 5000, 10000]
    flood_connections, flood_seconds = (500, 8) if args.quick else (2000, 20)
    slow_seconds = 10 if args.quick else 30

    from wampchat.dev.database import EmbeddedPostgres

    database, dsn = None, os.environ.get("DATABASE_URL")
    if not dsn:
        database = EmbeddedPostgres()
        dsn = database.start()
    workdir = Path(tempfile.mkdtemp(prefix="wampchat-stress-"))
    port = free_port()
    issuer = f"http://127.0.0.1:{port}/realms/wampchat"
    env = {**os.environ, "DATABASE_URL": dsn, "WAMPCHAT_PORT": str(port),
           "KEYCLOAK_REALM_URL": issuer, "PYTHONUNBUFFERED": "1"}
    router = Server("wampchat", [str(REPO / ".venv" / "bin" / "wampchat"), "dev", "--config",
                                 str(stress_config(workdir)), "--log-level", "warn"],
                    port, workdir / "router.log")
    results: dict = {"machine": machine(), "quick": args.quick}
    try:
        results["start_seconds"] = round(router.start(env, timeout=60), 2)
        token_url = f"{issuer}/protocol/openid-connect/token"
        user = post_form(token_url, {"grant_type": "password", "client_id": "wampchat",
                                     "username": "alice", "password": "alice"})
        bob = post_form(token_url, {"grant_type": "password", "client_id": "wampchat",
                                    "username": "bob", "password": "bob"})
        backend = post_form(token_url, {"grant_type": "client_credentials",
                                        "client_id": "wampchat-backend",
                                        "client_secret": "wampchat-backend-secret"})
        env.update(STRESS_TOKEN=user["access_token"], STRESS_BACKEND_TOKEN=backend["access_token"],
                   STRESS_NEW_USER_TOKEN=bob["access_token"])
        url = router.url
        if "held" in only:
            print("1. sessions held at once", flush=True)
            results["held"] = held_sessions(router, url, env, steps)
        if "flood" in only:
            print("2. connection flood with forged tokens, a legitimate user probing", flush=True)
            results["flood"] = flood_with_probe(url, env, flood_connections, flood_seconds)
            print(f"  {results['flood']}", flush=True)
        if "slow" in only:
            print("3. slow consumer", flush=True)
            results["slow_consumer"] = slow_consumer(router, url, env, slow_seconds)
            results["slow_consumer"]["ended_as_slow_consumer"] = metric(
                port, "wampchat_messages_dropped_total", '{reason="slow_consumer"}')
            print(f"  { {k: v for k, v in results['slow_consumer'].items() if k != 'rss_samples'} }",
                  flush=True)
        if "database" in only:
            print("4. PostgreSQL stopped and started again", flush=True)
            results["database_outage"] = database_outage(port, url, env, database,
                                                         database is None)
            print(f"  {results['database_outage']}", flush=True)
    finally:
        router.stop()
        if database is not None:
            database.close()
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"stress-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
