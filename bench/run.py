"""The wampchat benchmark: the router and the raw Autobahn ceiling, side by side in one run.

    .venv/bin/python -m bench.run            # ~4 minutes
    .venv/bin/python -m bench.run --quick    # ~1 minute

Starts `wampchat run --config <temporary file>` (realm `bench`, role `bench` allowed
everything on prefix "", static ticket auth for authid `bench`, the ticket in
$BENCH_TICKET) and `bench/raw_server.py`, each under `taskset -c 0`, waits for their
/healthz, then runs `bench/load.js` under `taskset -c 1` once per scenario, repetition
and server (router and raw alternate, so drift on a shared machine hits both alike):

- fanout 100 / fanout 1000: one publisher, N subscribers, json. Step `saturation`:
  a closed loop with a few publications in flight (events delivered/s, latency);
  step `fixed_rate`: the same offered load for both servers (latency at equal load).
- rpc 1 / rpc 10: C callers each with one call in flight to one echo callee.

Around every measured step the load generator waits, so the CPU time of the server
process (from /proc) is read exactly for that window: besides wall-clock
rates, each figure is also given per second of server CPU time, which holds far
better than wall-clock rates on a shared machine. Each figure is the median of the
repetitions with its min-max spread; the load generator's own CPU time is printed.
JSON goes to bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
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

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SERVER_CORE, LOAD_CORE = "0", "1"
SERVERS = ("router", "raw")


@dataclass(frozen=True)
class Scenario:
    """One load.js invocation: its arguments and the steps it measures."""

    name: str
    args: tuple[str, ...]
    unit: str                 # what one operation is: "events" or "calls"


def scenarios(fixed_rate_events: int) -> list[Scenario]:
    def fanout(n: int, window: int) -> Scenario:
        rate = max(1, fixed_rate_events // n)           # publications/s
        return Scenario(f"fanout {n}", ("--scenario", "fanout", "--subscribers", str(n),
                                        "--window", str(window), "--rate", str(rate)), "events")

    def rpc(callers: int) -> Scenario:
        return Scenario(f"rpc {callers}", ("--scenario", "rpc", "--callers", str(callers)), "calls")

    return [fanout(100, 4), fanout(1000, 2), rpc(1), rpc(10)]


# -- servers ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def router_config(port: int) -> str:
    """A router node for the bench: realm `bench`, role `bench` may do everything."""
    return f"""\
# written by bench/run.py for one benchmark run
version: 2
workers:
  - type: router
    realms:
      - name: bench
        roles:
          - name: bench
            permissions:
              - uri: ""
                match: prefix
                allow: {{call: true, register: true, publish: true, subscribe: true}}
                disclose: {{caller: false, publisher: false}}
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
                type: static
                principals:
                  bench: {{ticket: "${{BENCH_TICKET}}", role: bench}}
"""


@dataclass
class Server:
    """A server process pinned to SERVER_CORE, and where it serves."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, env: dict[str, str], timeout: float = 20.0) -> float:
        """Start it and wait for /healthz; returns seconds from spawn to ready."""
        log = open(self.log_path, "wb")
        started = time.monotonic()
        self.process = subprocess.Popen(["taskset", "-c", SERVER_CORE, *self.command], cwd=REPO,
                                        env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        health = f"http://127.0.0.1:{self.port}/healthz"
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
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no answer on {health} after {timeout} s:\n"
                           + self.log_tail())

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its descendants so far."""
        return sum(proc_stat(pid)[1] for pid in process_tree(self.process.pid))

    def rss_bytes(self) -> int:
        return sum(proc_stat(pid)[2] for pid in process_tree(self.process.pid))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
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


# -- one load generator run -----------------------------------------------------------------

def run_load(server: Server, scenario: Scenario, duration: float, env: dict[str, str],
             timeout: float) -> dict:
    """Run load.js once against `server`; the result with each step's server CPU added."""
    command = ["taskset", "-c", LOAD_CORE, "node", str(BENCH_DIR / "load.js"), "--url", server.url,
               "--duration", str(duration), "--timeout", str(int(timeout)), *scenario.args]
    load = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout + 15, load.kill)     # load.js stops itself at `timeout`
    watchdog.start()
    marks: dict[str, tuple[float, float, float]] = {}       # step -> (cpu, core busy, wall) at ready
    server_steps: dict[str, dict] = {}                      # step -> server figures
    result = None
    try:
        for line in load.stdout:
            message = json.loads(line)
            phase = message.get("phase")
            if phase == "ready":
                marks[message["step"]] = (server.cpu_seconds(), core_busy_seconds(SERVER_CORE),
                                          time.monotonic())
                load.stdin.write("go\n")
                load.stdin.flush()
            elif phase == "done":
                cpu0, busy0, wall0 = marks[message["step"]]
                cpu = server.cpu_seconds() - cpu0
                server_steps[message["step"]] = {
                    "server_cpu_s": cpu,
                    "core_other_cpu_s": max(0.0, core_busy_seconds(SERVER_CORE) - busy0 - cpu),
                    "server_wall_s": time.monotonic() - wall0,
                    "server_rss_bytes": server.rss_bytes(),
                }
            elif phase in ("result", "error"):
                result = message
        load.wait(10)
    finally:
        watchdog.cancel()
        if load.poll() is None:
            load.kill()
            load.wait()
    if result is None or result.get("phase") == "error":
        stderr = load.stderr.read() if load.stderr else ""
        raise RuntimeError(f"load.js against {server.name} ({scenario.name}) failed: "
                           f"{(result or {}).get('error', 'no result')}\n{stderr[-2000:]}")
    for step, figures in result["steps"].items():
        figures.update(server_steps.get(step, {}))
        count = figures.get("events", figures.get("calls", 0))
        cpu = figures.get("server_cpu_s") or 0.0
        figures["ops_per_server_cpu_s"] = count / cpu if cpu > 0 else None
        figures["server_core_busy"] = cpu / figures["window_wall_s"] if figures["window_wall_s"] else None
    return result


# -- figures ------------------------------------------------------------------------------

# (label, step, key path in a step's figures, higher is better)
METRICS = {
    "events": [
        ("events/s", "saturation", ("rate_per_s",), True),
        ("p99 ms", "saturation", ("latency", "p99_ms"), False),
        ("events/server-CPU-s", "saturation", ("ops_per_server_cpu_s",), True),
        ("p99 ms at fixed rate", "fixed_rate", ("latency", "p99_ms"), False),
    ],
    "calls": [
        ("calls/s", "closed_loop", ("rate_per_s",), True),
        ("p50 ms", "closed_loop", ("latency", "p50_ms"), False),
        ("p99 ms", "closed_loop", ("latency", "p99_ms"), False),
        ("calls/server-CPU-s", "closed_loop", ("ops_per_server_cpu_s",), True),
    ],
}


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


def aggregate(runs: dict[tuple[str, str], list[dict]], scenario_list: list[Scenario]) -> dict:
    """scenario -> metric -> server -> summary, plus the router/raw ratio of the medians."""
    table: dict[str, dict] = {}
    for scenario in scenario_list:
        rows = table[scenario.name] = {}
        for label, step, path, higher_better in METRICS[scenario.unit]:
            row = rows[label] = {"higher_is_better": higher_better}
            for server in SERVERS:
                row[server] = summarize([dig(r["steps"].get(step, {}), path)
                                         for r in runs.get((server, scenario.name), [])])
            if row.get("router") and row.get("raw") and row["raw"]["median"]:
                row["router_over_raw"] = row["router"]["median"] / row["raw"]["median"]
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
    return f"{fmt(summary['median'])} ±{spread / 2:.0f}%" if spread is not None else fmt(summary["median"])


def print_table(table: dict, out=sys.stdout) -> None:
    header = f"{'scenario':<12} {'figure':<22} {'router':>20} {'raw':>20} {'router/raw':>10}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for scenario, rows in table.items():
        for index, (label, row) in enumerate(rows.items()):
            ratio = row.get("router_over_raw")
            print(f"{scenario if index == 0 else '':<12} {label:<22} {cell(row.get('router')):>20} "
                  f"{cell(row.get('raw')):>20} {fmt(ratio) if ratio is not None else '-':>10}",
                  file=out)
    print("(median of the repetitions, ± half the min-max spread in % of the median)", file=out)


def load_cpu_summary(runs: dict[tuple[str, str], list[dict]]) -> dict:
    """The load generator's own CPU time: in total, and at most as a share of one core."""
    total = busiest = window_cpu = window_wall = others = 0.0
    for results in runs.values():
        for result in results:
            total += result["load_cpu_total_s"]
            for figures in result["steps"].values():
                window_cpu += figures["load_cpu_s"]
                window_wall += figures["window_wall_s"]
                others += figures.get("core_other_cpu_s", 0.0)
                busiest = max(busiest, figures["load_cpu_s"] / figures["window_wall_s"])
    return {"total_cpu_s": total, "measured_windows_cpu_s": window_cpu,
            "measured_windows_wall_s": window_wall, "busiest_window_core_share": busiest,
            "server_core_used_by_others_s": others}


# -- the run --------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short steps: about one minute")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--duration", type=float, help="seconds per measured step "
                        "(default 4, --quick 1)")
    parser.add_argument("--fixed-rate-events", type=int, default=10000,
                        help="offered events/s of the fan-out fixed_rate step (default %(default)s)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated subset of router,raw")
    parser.add_argument("--scenarios", default="", help="comma-separated subset, e.g. 'rpc 1,rpc 10'")
    parser.add_argument("--wampchat", default=str(REPO / ".venv" / "bin" / "wampchat"))
    parser.add_argument("--keep-logs", action="store_true", help="copy server logs into bench/results/")
    return parser.parse_args(argv)


def build_servers(names: list[str], workdir: Path, wampchat: str) -> list[Server]:
    servers = []
    for name in names:
        port = free_port()
        if name == "router":
            config = workdir / "bench-router.yaml"
            config.write_text(router_config(port))
            command = [wampchat, "run", "--config", str(config), "--log-level", "warn"]
        elif name == "raw":
            command = [sys.executable, "-m", "bench.raw_server", "--port", str(port)]
        else:
            raise SystemExit(f"unknown server {name!r}; expected router or raw")
        servers.append(Server(name, command, port, workdir / f"{name}.log"))
    return servers


def main(argv=None) -> int:
    args = parse_args(argv)
    duration = args.duration or (1.0 if args.quick else 4.0)
    if shutil.which("taskset") is None or shutil.which("node") is None:
        raise SystemExit("bench needs taskset and node on PATH")
    if os.cpu_count() and os.cpu_count() < 2:
        raise SystemExit("bench needs two CPU cores (server on core 0, load generator on core 1)")
    os.sched_setaffinity(0, {int(LOAD_CORE)})             # keep this orchestrator off the server's core
    scenario_list = scenarios(args.fixed_rate_events)
    if args.scenarios:
        wanted = {s.strip() for s in args.scenarios.split(",")}
        scenario_list = [s for s in scenario_list if s.name in wanted]
    env = dict(os.environ, BENCH_TICKET=secrets.token_urlsafe(24), PYTHONUNBUFFERED="1")
    started_at = time.strftime("%Y%m%dT%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="wampchat-bench-"))
    servers = build_servers([s.strip() for s in args.servers.split(",") if s.strip()], workdir,
                            args.wampchat)
    runs: dict[tuple[str, str], list[dict]] = {}            # (server, scenario) -> results
    startup: dict[str, float] = {}
    clock_start = time.monotonic()
    try:
        for server in servers:
            startup[server.name] = server.start(env)
            print(f"{server.name}: ready in {startup[server.name]:.2f} s on port {server.port} "
                  f"(pid {server.process.pid}, core {SERVER_CORE})", flush=True)
        for scenario in scenario_list:
            for repetition in range(args.repetitions):
                order = servers if repetition % 2 == 0 else list(reversed(servers))
                for server in order:
                    result = run_load(server, scenario, duration, env, timeout=60 + 4 * duration)
                    runs.setdefault((server.name, scenario.name), []).append(result)
                    print(f"  {scenario.name:<12} rep {repetition + 1} {server.name:<6} "
                          + progress_line(result), flush=True)
    finally:
        exit_codes = {server.name: server.stop() for server in servers}
        if args.keep_logs:
            RESULTS_DIR.mkdir(exist_ok=True)
            for server in servers:
                if server.log_path.exists():
                    shutil.copy(server.log_path, RESULTS_DIR / f"{started_at}-{server.name}.log")
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - clock_start
    table = aggregate(runs, scenario_list)
    load_cpu = load_cpu_summary(runs)
    print()
    print_table(table)
    print(f"\nload generator (node, core {LOAD_CORE}): {load_cpu['total_cpu_s']:.1f} s CPU in all, "
          f"{load_cpu['measured_windows_cpu_s']:.1f} s CPU over {load_cpu['measured_windows_wall_s']:.1f} s "
          f"of measured windows (busiest window: {100 * load_cpu['busiest_window_core_share']:.0f}% "
          f"of its core)")
    print(f"other processes on core {SERVER_CORE} during the measured windows: "
          f"{load_cpu['server_core_used_by_others_s']:.1f} s CPU "
          f"({100 * load_cpu['server_core_used_by_others_s'] / max(load_cpu['measured_windows_wall_s'], 1e-9):.0f}%"
          " of the windows; wall-clock figures suffer, per-server-CPU-s figures much less)")
    print(f"server start-up to /healthz: " + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items())
          + f"; server exit codes after SIGTERM: {exit_codes}; whole run {elapsed:.0f} s")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{started_at}.json"
    out.write_text(json.dumps({
        "started_at": started_at, "command": " ".join([sys.executable, "-m", "bench.run", *(argv or sys.argv[1:])]),
        "machine": machine(), "duration_per_step_s": duration, "repetitions": args.repetitions,
        "fixed_rate_events_per_s": args.fixed_rate_events, "startup_s": startup,
        "exit_codes": exit_codes, "load_generator": load_cpu, "table": table,
        "runs": {f"{server}/{scenario}": results for (server, scenario), results in runs.items()},
    }, indent=2))
    print(f"results: {out.relative_to(REPO)}")
    return 0


def progress_line(result: dict) -> str:
    parts = []
    for step, figures in result["steps"].items():
        latency = figures.get("latency") or {}
        parts.append(f"{step}: {fmt(figures['rate_per_s'])}/s p50 {fmt(latency.get('p50_ms'))} "
                     f"p99 {fmt(latency.get('p99_ms'))} ms, server CPU "
                     f"{fmt(figures.get('server_cpu_s'))} s (others on its core "
                     f"{fmt(figures.get('core_other_cpu_s'))} s), load CPU {fmt(figures['load_cpu_s'])} s"
                     + (f", {figures['missing_events']} events missing" if figures.get("missing_events") else ""))
    return "; ".join(parts)


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                          if line.startswith("model name")), "")
    except OSError:
        pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "python": sys.version.split()[0], "node": node,
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}


if __name__ == "__main__":
    sys.exit(main())
