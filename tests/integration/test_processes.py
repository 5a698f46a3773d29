"""The node as a real process: `wampchat run` and `twistd -n wampchat`, `check-config`.

Each test starts the command with a temporary config on free ports of 127.0.0.1, waits
for /healthz, talks to it with real Autobahn|Python clients, and stops it with SIGTERM
(exit code 0). Teardown always kills the process and closes the clients.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.wamp.types import PublishOptions, SubscribeOptions
from twisted.internet.defer import Deferred

from .processes import (WAMPCHAT, Clients, RouterProcess, node_config, run_process, sleep,
                        within, write_config)

KINDS = ["run", "twistd"]
SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"


@pytest_twisted.async_yield_fixture
async def clients():
    opened = Clients()
    yield opened
    await opened.close()


@pytest.fixture
def router_factory(tmp_path):
    """router_factory(kind) -> RouterProcess (not started); every one is killed at teardown."""
    made: list[RouterProcess] = []

    def make(kind: str) -> RouterProcess:
        directory = tmp_path / f"{kind}-{len(made)}"
        directory.mkdir()
        router = RouterProcess(kind, directory)
        made.append(router)
        return router

    yield make
    for router in made:
        router.kill()


async def _pubsub_and_rpc(caller, callee) -> None:
    await callee.register(lambda a, b: a + b, "com.math.add")
    assert await within(caller.call("com.math.add", 2, 3)) == 5

    received: Deferred = Deferred()

    def on_event(*args, **kwargs):
        if not received.called:
            received.callback((args, kwargs))

    await within(callee.subscribe(on_event, "com.room.one", options=SubscribeOptions()))
    await within(caller.publish("com.room.one", "hi", n=1,
                                options=PublishOptions(acknowledge=True)))
    assert await within(received) == (("hi",), {"n": 1})


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_process_serves_wamp_and_says_goodbye_on_sigterm(kind, router_factory, clients):
    """RPC and pub/sub through the process; SIGTERM says GOODBYE system_shutdown, exits 0."""
    router = router_factory(kind)
    await router.start()
    backend = await clients.websocket(router.web_port, "svc", "s3cret", "json")
    user = await clients.websocket(router.web_port, "alice", "alice-pw", "msgpack")
    assert backend.welcome.authrole == "backend"
    assert user.welcome.authrole == "user"
    await _pubsub_and_rpc(user, backend)

    router.terminate()
    for session in (backend, user):
        details = await within(session.left, 10.0)
        assert details.reason == SYSTEM_SHUTDOWN, (details, router.output())
    router.assert_clean_exit(await router.wait())


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_rawsocket_client_joins_through_process(kind, router_factory, clients):
    """A RawSocket client (cbor) and a WebSocket client (json) talk through the process."""
    router = router_factory(kind)
    await router.start()
    raw = await clients.rawsocket(router.raw_port, "svc", "s3cret", "cbor")
    assert raw.welcome.authrole == "backend"
    assert raw.welcome.authid == "svc"
    web = await clients.websocket(router.web_port, "alice", "alice-pw", "json")
    await _pubsub_and_rpc(web, raw)
    await clients.close()
    await router.stop()


@pytest_twisted.ensureDeferred
async def test_wrong_ticket_is_refused_by_process(router_factory, clients):
    router = router_factory("run")
    await router.start()
    with pytest.raises(RuntimeError, match="not welcomed"):
        await clients.websocket(router.web_port, "svc", "wrong")
    await router.stop()


def _bad_config(tmp_path):
    document = node_config(1, 2)
    permission = document["workers"][0]["realms"][0]["roles"][0]["permissions"][0]
    permission["match"] = "regex"
    return write_config(tmp_path, document, "bad.yaml")


BAD_KEY = "workers[0].realms[0].roles[0].permissions[0].match"


@pytest_twisted.ensureDeferred
async def test_check_config_accepts_good_and_refuses_bad_with_key_path(tmp_path):
    good = write_config(tmp_path, node_config(1, 2), "good.yaml")
    out, err, code = await run_process([WAMPCHAT, "check-config", "--config", str(good)])
    assert code == 0, err
    assert "ok" in out

    bad = _bad_config(tmp_path)
    out, err, code = await run_process([WAMPCHAT, "check-config", "--config", str(bad)])
    assert code != 0
    assert BAD_KEY in err, err
    assert "regex" in err, err


@pytest_twisted.ensureDeferred
async def test_run_with_bad_config_exits_2_with_key_path(tmp_path):
    bad = _bad_config(tmp_path)
    out, err, code = await run_process([WAMPCHAT, "run", "--config", str(bad)], timeout=20.0)
    assert code == 2, (out, err)
    assert BAD_KEY in err, err


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_sigterm_answers_calls_in_flight_before_goodbye(kind, router_factory, clients):
    """A call still running at SIGTERM gets ERROR canceled, then the caller gets GOODBYE."""
    from autobahn.wamp.exception import ApplicationError

    router = router_factory(kind)
    await router.start()
    backend = await clients.websocket(router.web_port, "svc", "s3cret", "json")
    user = await clients.websocket(router.web_port, "alice", "alice-pw", "cbor")
    never: Deferred = Deferred()           # the callee never answers by itself
    await backend.register(lambda: never, "com.slow.work")
    call = user.call("com.slow.work")
    await sleep(0.2)                      # the INVOCATION is with the callee
    router.terminate()
    with pytest.raises(ApplicationError) as canceled:
        await within(call, 10.0)
    assert canceled.value.error == "wamp.error.canceled"
    assert "shutting down" in str(canceled.value.args)
    assert (await within(user.left, 10.0)).reason == SYSTEM_SHUTDOWN
    router.assert_clean_exit(await router.wait())
