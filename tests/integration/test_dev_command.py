"""`wampchat dev` as a newcomer runs it: embedded PostgreSQL, dev issuer, a real login, clean exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import treq

from tests.integration.processes import free_port, sleep
from tests.integration.test_keycloak_login import login

WAMPCHAT = str(Path(sys.executable).with_name("wampchat"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dev_process(tmp_path):
    """`wampchat dev` with the shipped config on a free port; killed at teardown."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WAMPCHAT_CONFIG")}
    env.update(WAMPCHAT_PORT=str(port), PYTHONUNBUFFERED="1",
               KEYCLOAK_REALM_URL=f"http://127.0.0.1:{port}/realms/wampchat")
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([WAMPCHAT, "dev", "--config", str(ROOT / "crossbar-like.yaml")],
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=tmp_path)
        try:
            yield proc, port, log_path
        finally:
            # SIGTERM first, so the embedded PostgreSQL is stopped too; SIGKILL as a last resort.
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


async def _wait_healthy(proc, port: int, log_path: Path, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.2)):
        assert proc.poll() is None, log_path.read_text()
        try:
            response = await treq.get(f"http://127.0.0.1:{port}/healthz", persistent=False)
            await treq.content(response)
            if response.code == 200:
                return
        except Exception:   # not listening yet
            pass
        await sleep(0.2)
    raise AssertionError(f"wampchat dev not healthy in {timeout} s:\n{log_path.read_text()}")


@pytest_twisted.ensureDeferred
async def test_dev_serves_tokens_and_logins_and_stops_cleanly(dev_process):
    """A password-grant token from the dev issuer logs alice in; SIGTERM exits 0."""
    proc, port, log_path = dev_process
    await _wait_healthy(proc, port, log_path)
    response = await treq.post(
        f"http://127.0.0.1:{port}/realms/wampchat/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "wampchat", "username": "alice",
              "password": "alice"}, persistent=False)
    assert response.code == 200
    token = json.loads(await treq.content(response))["access_token"]
    outcome, details = await login(port, token)
    assert outcome == "welcome", (details.reason, details.message)
    assert details.authid == "alice@example.com" and isinstance(details.authextra["user_id"], int)
    proc.send_signal(signal.SIGTERM)
    for _ in range(100):
        if proc.poll() is not None:
            break
        await sleep(0.1)
    output = log_path.read_text()
    assert proc.returncode == 0, output
    assert "demo users:" in output and "embedded PostgreSQL" in output
    assert "Traceback" not in output, output
