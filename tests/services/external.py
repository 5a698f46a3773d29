"""External components for end-to-end tests: `wampchat component CLASS` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.integration.processes import WAMPCHAT, sleep

ACTIVITY = "wampchat.services.activity.ActivityService"
CHAT = "wampchat.services.chat.ChatService"


def service_account_env(issuer_url: str) -> dict[str, str]:
    return {"WAMPCHAT_TOKEN_URL": f"{issuer_url}/protocol/openid-connect/token",
            "WAMPCHAT_CLIENT_ID": "wampchat-backend",
            "WAMPCHAT_CLIENT_SECRET": "wampchat-backend-secret"}


class ComponentProcess:
    """`wampchat component CLASS --url URL --realm wampchat` with its output in a file."""

    def __init__(self, url: str, credentials: dict[str, str], directory: Path,
                 classname: str = ACTIVITY, extra: str | None = None,
                 database_url: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("WAMPCHAT_") and k != "DATABASE_URL"}
        env.update(PYTHONUNBUFFERED="1", **credentials)
        if database_url:
            env["DATABASE_URL"] = database_url
        self.log_path = directory / f"{classname.rsplit('.', 1)[-1]}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [WAMPCHAT, "component", classname, "--url", url, "--realm", "wampchat",
             *(["--extra", extra] if extra else [])],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=directory)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> str:
        """SIGTERM; it must exit 0 within 10 s without a traceback. Its output."""
        self.proc.send_signal(signal.SIGTERM)
        for _ in range(100):
            if self.proc.poll() is not None:
                break
            await sleep(0.1)
        output = self.output()
        assert self.proc.returncode == 0, output
        assert "Traceback" not in output, output
        return output

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
