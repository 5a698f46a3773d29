"""The README's example backend service (wampchat.services.example.DiceService), both ways:
listed under `components`, and as a `wampchat component` process with a service-account token."""

from __future__ import annotations

import dataclasses

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred

from tests.integration.dev_node import start_dev_node, stop_node
from tests.services.external import ComponentProcess, service_account_env
from tests.services.test_services import A, B, Chat, database_ready, sleep, with_leave_grace
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)
from wampchat.config_types import ComponentConfig

DICE = "wampchat.services.example.DiceService"


def with_dice(config):
    config = with_leave_grace(config)
    return dataclasses.replace(config, components=(
        *config.components, ComponentConfig(classname=DICE, realm="wampchat")))


@pytest.fixture(params=["in-process", "external"])
def dice(request, users_database, tmp_path):  # noqa: F811 (pytest fixture injection)
    external = request.param == "external"
    port, issuer, node = start_dev_node(
        users_database, transform=with_leave_grace if external else with_dice)
    pytest_twisted.blockon(Deferred.fromCoroutine(database_ready(node)))
    process = None
    if external:
        process = ComponentProcess(f"ws://127.0.0.1:{port}/ws", service_account_env(issuer.issuer),
                                   tmp_path, DICE)
    chat = Chat(port, issuer)
    try:
        yield chat
        pytest_twisted.blockon(Deferred.fromCoroutine(chat.close()))
        if process is not None:
            pytest_twisted.blockon(Deferred.fromCoroutine(process.stop()))
    finally:
        if process is not None:
            process.kill()
        stop_node(node)


@pytest_twisted.ensureDeferred
async def test_dice_service_rolls_and_announces_with_the_disclosed_caller(dice):
    alice = await dice.connect("alice")
    bob = await dice.connect("bob", topics=())
    assert await alice.texts(1) == [("chat.main", "System", f"Welcome {A}")]
    for _ in range(400):        # up to ~20 s for an external component to register
        try:
            value = await bob.call("rpc.example.roll", 20)
            break
        except ApplicationError as exc:
            if exc.error != "wamp.error.no_such_procedure":
                raise
            await sleep(0.05)
    else:
        raise AssertionError("rpc.example.roll never registered")
    assert 1 <= value <= 20
    assert await alice.texts(1) == [("chat.main", "System", f"{B} rolled {value} (d20)")]
    for bad in (1, 101, "6", True):
        with pytest.raises(ApplicationError) as refused:
            await bob.call("rpc.example.roll", bad)
        assert refused.value.error == "wamp.error.invalid_argument"
    value = await alice.call("rpc.example.roll")
    assert 1 <= value <= 6
    assert await alice.texts(1) == [("chat.main", "System", f"{A} rolled {value} (d6)")]
    await alice.quiet()             # the refused rolls announced nothing
