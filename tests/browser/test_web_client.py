"""The web client in a real browser: headless Chromium driven by playwright-core from Node.

A dev node (the shipped crossbar-like.yaml, its own development issuer issuing
20-second access tokens, PostgreSQL) runs in the test's reactor;
tests/js/browser_chat.js signs alice, bob and admin in through the issuer's login
page (authorization code + PKCE) and checks what each page shows. Screenshots of the final pages go to tests/output/browser/ (or
$WAMPCHAT_TEST_OUTPUT/browser/).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
from pathlib import Path

import pytest
import pytest_twisted
from twisted.web import resource as web_resource, server

from tests.integration.conftest import reactor
from tests.integration.dev_node import start_dev_node, stop_node
from tests.integration.processes import REPO, child_env, run_process
from tests.integration.test_js_interop import _node_binary
from tests.users.conftest import no_logged_errors, postgres_server, users_database  # noqa: F401
from wampchat.dev import issuer as dev_issuer

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCRIPT = REPO / "tests" / "js" / "browser_chat.js"
ACCESS_LIFETIME = 20        # seconds: the page renews 10 s after signing in
LEAVE_GRACE = 0.3           # seconds: short, so a sign-out is announced quickly
BROWSER_TIMEOUT = 180.0     # seconds the whole browser script may take at most


def _short_leave_grace(config):
    return dataclasses.replace(config, components=tuple(
        dataclasses.replace(c, extra={**c.extra, "leave_grace": LEAVE_GRACE})
        if c.classname.endswith("ChatService") else c for c in config.components))


@pytest.fixture
def dev_node(users_database, monkeypatch):  # noqa: F811 (pytest fixture injection)
    # Short-lived access tokens, so the pages renew theirs by themselves during the test.
    monkeypatch.setattr(dev_issuer, "ACCESS_LIFETIME", ACCESS_LIFETIME)
    port, issuer, node = start_dev_node(users_database, transform=_short_leave_grace)
    # As `wampchat dev` does: a sign-out at the issuer reaches the router's back-channel.
    issuer.backchannel_logout_url = f"http://127.0.0.1:{port}/backchannel-logout"
    control = reactor().listenTCP(0, server.Site(ConnectionControl(node)), interface="127.0.0.1")
    try:
        yield port, f"http://127.0.0.1:{control.getHost().port}"
    finally:
        control.stopListening()
        stop_node(node)


class ConnectionControl(web_resource.Resource):
    """POST /drop?authid=..&how=lost|shutdown: the script's way to make the router end a
    user's connections, so the page's reconnecting can be watched.

    lost: the TCP connection is aborted (no WebSocket close); shutdown: GOODBYE
    wamp.close.system_shutdown, as a router going down for a restart sends.
    """

    isLeaf = True

    def __init__(self, node) -> None:
        super().__init__()
        self._realm = node.realms["wampchat"]

    def render_POST(self, request) -> bytes:
        authid = request.args[b"authid"][0].decode()
        how = request.args[b"how"][0].decode()
        sessions = [s for s in list(self._realm.sessions.values()) if s.authid == authid]
        for session in sessions:
            if how == "shutdown":
                session.close_by_router("wamp.close.system_shutdown", "restarting")
            else:
                session.transport.dropConnection(abort=True)
        return str(len(sessions)).encode()


def _output_dir() -> Path:
    root = Path(os.environ.get("WAMPCHAT_TEST_OUTPUT") or REPO / "tests" / "output")
    directory = root / "browser"
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    return directory


def _uncapped(argv: list[str]) -> list[str]:
    """argv run without the soft address-space cap of the test run: Chromium reserves
    far more virtual memory than it uses (V8 sandbox, PartitionAlloc pools) and dies
    (SIGTRAP) under any `ulimit -v` we tried, even 64 GB."""
    return ["/bin/sh", "-c", 'ulimit -S -v unlimited; exec "$@"', "sh", *argv]


def _check_address_space_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        pytest.fail(f"a hard address-space limit ({hard} bytes) is set and Chromium cannot run "
                    "under one: cap the run with a soft limit instead (`ulimit -S -v N`, which "
                    "this test lifts for the browser only); plain `ulimit -v` sets both")


@pytest_twisted.ensureDeferred
async def test_two_users_and_an_admin_chat_in_chromium(dev_node):
    port, control = dev_node
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium "
                    "(apt-get install -y chromium; .ci/run installs it)")
    _check_address_space_limit()
    node = _node_binary()
    if not (REPO / "node_modules" / "playwright-core").is_dir():
        pytest.fail(f"{REPO / 'node_modules' / 'playwright-core'} is missing: run `npm install`")
    output = _output_dir()
    env = {**child_env(), "CHROMIUM": CHROMIUM}
    out, err, code = await run_process(
        _uncapped([node, str(SCRIPT), f"http://127.0.0.1:{port}", str(output), control]),
        timeout=BROWSER_TIMEOUT, cwd=str(REPO), env=env)
    steps = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    print("\n".join(json.dumps(s) for s in steps))
    failed = [s["failed"] for s in steps if "failed" in s]
    assert code == 0 and not failed, (
        f"browser script failed: {failed}\nscreenshots in {output}\nstderr: {err[-4000:]}")
    done = [s["step"] for s in steps]
    assert done[-4:] == ["screenshot"] * 4 and "admin sees chat.admin, users do not" in done
    shots = [Path(s["file"]) for s in steps if s.get("step") == "screenshot"]
    assert all(shot.stat().st_size > 0 for shot in shots)
    print(f"screenshots of the final pages: {', '.join(str(s) for s in shots)}")
