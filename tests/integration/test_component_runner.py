"""`wampchat component`: a service class run out of process with a service-account token."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess

import pytest
import pytest_twisted
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.integration.dev_node import start_dev_node, stop_node
from tests.integration.conftest import reactor, within
from tests.integration.processes import WAMPCHAT, sleep
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)

CRA_SECRET = "cra-backend-secret"


@pytest.fixture
def bare_node(users_database):  # noqa: F811 (pytest fixture injection)
    """The shipped config without in-process components; the dev issuer mounted."""
    port, issuer, node = start_dev_node(
        users_database, environ={"WAMPCHAT_BACKEND_SECRET": CRA_SECRET},
        transform=lambda config: dataclasses.replace(config, components=()))
    yield port, issuer, node
    stop_node(node)


@pytest.fixture(params=["service-account", "wampcra"])
def component_process(request, bare_node, tmp_path):
    """`wampchat component …ActivityService` against bare_node; killed at teardown."""
    port, issuer, node = bare_node
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WAMPCHAT_") and k != "DATABASE_URL"}
    env.update(PYTHONUNBUFFERED="1")
    if request.param == "service-account":
        env.update(WAMPCHAT_TOKEN_URL=f"{issuer.issuer}/protocol/openid-connect/token",
                   WAMPCHAT_CLIENT_ID="wampchat-backend",
                   WAMPCHAT_CLIENT_SECRET="wampchat-backend-secret")
    else:
        env.update(WAMPCHAT_BACKEND_AUTHID="chat-service", WAMPCHAT_BACKEND_SECRET=CRA_SECRET)
    log_path = tmp_path / "component.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [WAMPCHAT, "component", "wampchat.services.activity.ActivityService",
             "--url", f"ws://127.0.0.1:{port}/ws", "--realm", "wampchat"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=tmp_path)
        try:
            yield proc, port, issuer, log_path
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


class User(ApplicationSession):
    """A ticket-authenticated user session; `joined` fires on WELCOME."""

    def __init__(self, token: str) -> None:
        super().__init__(ComponentConfig(realm="wampchat"))
        self.token = token
        self.joined: Deferred = Deferred()

    def onConnect(self):
        self.join(self.config.realm, ["ticket"])

    def onChallenge(self, challenge):
        return self.token

    def onJoin(self, details):
        self.joined.callback(details)

    def onLeave(self, details):
        if not self.joined.called:
            self.joined.errback(RuntimeError(f"not welcomed: {details.reason}"))
        self.disconnect()


@pytest_twisted.ensureDeferred
async def test_activity_service_runs_out_of_process_as_backend(component_process):
    """The component joins as backend (service-account token or WAMP-CRA), serves set_status."""
    proc, port, issuer, log_path = component_process
    user = User(issuer.mint("alice"))
    factory = WampWebSocketClientFactory(lambda: user, url=f"ws://127.0.0.1:{port}/ws")
    await within(TCP4ClientEndpoint(reactor(), "127.0.0.1", port).connect(factory))
    await within(user.joined, 10)
    try:
        result = None
        for _ in range(150):                    # up to ~30 s for the component to register
            assert proc.poll() is None, log_path.read_text()
            try:
                result = await within(user.call("rpc.activity.set_status", "away"))
                break
            except ApplicationError as exc:
                if exc.error != "wamp.error.no_such_procedure":
                    raise
            await sleep(0.2)
        assert result == {"status": "ok", "new_status": "away"}, log_path.read_text()
        with pytest.raises(ApplicationError) as invalid:
            await within(user.call("rpc.activity.set_status", "sleeping"))
        assert invalid.value.error == "wampchat.error.invalid_status"
        listed = await within(user.call("rpc.activity.list"))
        assert listed == [{"authid": "alice@example.com", "status": "away", "sessions": 1}]
    finally:
        user.leave()
    proc.send_signal(signal.SIGTERM)
    for _ in range(100):
        if proc.poll() is not None:
            break
        await sleep(0.1)
    output = log_path.read_text()
    assert proc.returncode == 0, output
    assert "joined wampchat as" in output and "(backend)" in output, output
    assert "Traceback" not in output, output


@pytest_twisted.ensureDeferred
async def test_service_account_token_is_refreshed_before_it_expires(bare_node, monkeypatch):
    """In-process Component: the refresh timer renews the session's token via the router."""
    from wampchat import component_runner

    port, issuer, node = bare_node
    monkeypatch.setattr(component_runner, "REFRESH_MARGIN", 299.0)   # renew ~1 s after join
    component = component_runner.build_component(
        "wampchat.services.activity.ActivityService", f"ws://127.0.0.1:{port}/ws", "wampchat",
        {}, {"WAMPCHAT_TOKEN_URL": f"{issuer.issuer}/protocol/openid-connect/token",
             "WAMPCHAT_CLIENT_ID": "wampchat-backend",
             "WAMPCHAT_CLIENT_SECRET": "wampchat-backend-secret"}, reactor())
    joined: Deferred = Deferred()
    component.on("join", lambda session, details: joined.called or joined.callback(details))
    done = component.start(reactor())
    try:
        details = await within(joined, 15)
        assert details.authrole == "backend" and details.authmethod == "ticket"
        for _ in range(100):
            if component.refresher.refreshed >= 1:
                break
            await sleep(0.1)
        assert component.refresher.refreshed >= 1
    finally:
        await within(component.stop(), 10)
        await within(done, 10)
