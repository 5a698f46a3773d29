"""`make run` as a newcomer runs it, in its own process group like a terminal's job:
the page and Autobahn|JS are served, a demo token logs in, and Ctrl-C (SIGINT to the
group) stops make, `wampchat dev` and the embedded PostgreSQL, leaving nothing behind.

Only the port is set (WAMPCHAT_PORT); the development issuer follows it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
import treq

from tests.integration.processes import REPO, child_env, free_port, sleep
from tests.integration.test_keycloak_login import login

START_TIMEOUT = 120.0       # seconds: make may have to (re)install first
STOP_TIMEOUT = 30.0
PGDATA_LINE = re.compile(r"embedded PostgreSQL running in (\S+)")


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a live process; None when it is gone or a zombie (dead, unreaped)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    state, ppid, pgid = fields[0], int(fields[1]), int(fields[2])
    return None if state in ("Z", "X") else (state, ppid, pgid)


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _descendants(root: int) -> set[int]:
    """root's live descendants, by parent links."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None:
            children.setdefault(stat[1], []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _in_group(pgid: int) -> set[int]:
    return {pid for pid in _all_pids() if (_proc_stat(pid) or ("", 0, -1))[2] == pgid}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "(gone)"


@pytest.fixture
def make_run(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.fail("`make` is not on PATH: the `make run` test needs it")
    port = free_port()
    env = {k: v for k, v in child_env().items()
           if k not in ("DATABASE_URL", "KEYCLOAK_REALM_URL", "KEYCLOAK_CLIENT_ID", "MAKEFLAGS",
                        "MFLAGS", "MAKELEVEL")}
    env["WAMPCHAT_PORT"] = str(port)
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log_file:
        # A new session and process group, as a shell gives a foreground job.
        proc = subprocess.Popen([make, "--no-print-directory", "run"], cwd=REPO, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield proc, port, log_path
        finally:
            if proc.poll() is None:
                # SIGTERM lets wampchat dev stop its PostgreSQL; SIGKILL as a last resort.
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


async def _wait_healthy(proc, port: int, log_path: Path) -> None:
    for _ in range(int(START_TIMEOUT / 0.25)):
        assert proc.poll() is None, log_path.read_text()
        try:
            response = await treq.get(f"http://127.0.0.1:{port}/healthz", persistent=False)
            await treq.content(response)
            if response.code == 200 and "Ctrl-C stops everything" in log_path.read_text():
                return
        except Exception:   # not listening yet
            pass
        await sleep(0.25)
    raise AssertionError(f"make run not healthy in {START_TIMEOUT} s:\n{log_path.read_text()}")


async def _get(url: str) -> tuple[int, bytes]:
    response = await treq.get(url, persistent=False)
    return response.code, await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_make_run_serves_the_client_and_ctrl_c_stops_everything(make_run):
    proc, port, log_path = make_run
    await _wait_healthy(proc, port, log_path)
    base = f"http://127.0.0.1:{port}"

    code, page = await _get(base + "/")
    assert code == 200 and b"app.js" in page and b"vendor/autobahn.min.js" in page
    code, script = await _get(base + "/vendor/autobahn.min.js")
    assert code == 200
    assert script == (REPO / "node_modules" / "autobahn-browser" / "autobahn.min.js").read_bytes()
    code, body = await _get(base + "/config.json")
    config = json.loads(body)
    assert code == 200 and config["realm"] == "wampchat" and config["ws_path"] == "/ws"
    assert config["keycloak"]["issuer"] == f"{base}/realms/wampchat"     # followed the port

    response = await treq.post(
        f"{base}/realms/wampchat/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "wampchat", "username": "bob",
              "password": "bob"}, persistent=False)
    assert response.code == 200
    token = json.loads(await treq.content(response))["access_token"]
    outcome, details = await login(port, token)
    assert outcome == "welcome", (details.reason, details.message)
    assert details.authid == "bob@example.com" and details.authrole == "user"

    # Everything that runs now: make's descendants, and the PostgreSQL server, which
    # pg_ctl puts in a session of its own (so it is found through its pid file).
    output = log_path.read_text()
    pgdata = Path(PGDATA_LINE.search(output).group(1))
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    running = _descendants(proc.pid) | {postmaster} | _descendants(postmaster)
    assert any("wampchat" in _cmdline(pid) and " dev" in _cmdline(pid) for pid in running), \
        {pid: _cmdline(pid) for pid in running}
    assert len(_descendants(postmaster)) >= 1        # its checkpointer, writer, ...

    os.killpg(proc.pid, signal.SIGINT)               # what Ctrl-C in the terminal does
    for _ in range(int(STOP_TIMEOUT / 0.1)):
        if proc.poll() is not None and not any(_proc_stat(pid) for pid in running):
            break
        await sleep(0.1)
    survivors = {pid: _cmdline(pid) for pid in running | _in_group(proc.pid) if _proc_stat(pid)}
    output = log_path.read_text()
    assert proc.poll() is not None, f"make still runs after SIGINT:\n{output}"
    assert survivors == {}, f"left running after Ctrl-C: {survivors}\n{output}"
    assert not pgdata.exists(), "the throwaway database directory was not removed"
    assert f"embedded PostgreSQL in {pgdata} stopped" in output, output
    assert "Traceback" not in output, output


def _issuer(config) -> str:
    return next(m.keycloak.issuer for t in config.transports for m in t.auth if m.keycloak)


def test_the_default_dev_issuer_follows_wampchat_port():
    """Only WAMPCHAT_PORT set: the shipped default issuer (port 8080) moves with the port;
    an explicit KEYCLOAK_REALM_URL or a remote issuer is left alone."""
    from wampchat.config import load_config
    from wampchat.dev.runner import follow_web_port, served_issuer

    shipped = str(REPO / "crossbar-like.yaml")
    moved = follow_web_port(load_config(shipped, environ={"WAMPCHAT_PORT": "9123"}), environ={})
    assert _issuer(moved) == "http://127.0.0.1:9123/realms/wampchat" == served_issuer(moved)

    explicit_env = {"WAMPCHAT_PORT": "9123",
                    "KEYCLOAK_REALM_URL": "http://127.0.0.1:8080/realms/wampchat"}
    kept = follow_web_port(load_config(shipped, environ=explicit_env), environ=explicit_env)
    assert _issuer(kept) == "http://127.0.0.1:8080/realms/wampchat"

    remote_env = {"WAMPCHAT_PORT": "9123",
                  "KEYCLOAK_REALM_URL": "https://sso.example.org/realms/wampchat"}
    remote = load_config(shipped, environ=remote_env)
    assert _issuer(follow_web_port(remote, environ={})) == "https://sso.example.org/realms/wampchat"
