"""SIGHUP reloads roles and permissions in a running `wampchat run` without dropping sessions."""

from __future__ import annotations

import copy
import signal

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions

from tests.integration.test_processes import clients, router_factory  # noqa: F401 (fixtures)
from wampchat import errors

from .processes import node_config, sleep, within, write_config


async def until_logged(router, text: str, count: int = 1, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if router.output().count(text) >= count:
            return
        await sleep(0.05)
    raise AssertionError(f"{text!r} not logged {count} times:\n{router.output()}")


@pytest.mark.parametrize("kind", ["run", "twistd"])
@pytest_twisted.ensureDeferred
async def test_sighup_narrows_permissions_and_keeps_sessions(kind, router_factory,  # noqa: F811
                                                             clients):  # noqa: F811
    router = router_factory(kind)
    await router.start()
    backend = await clients.websocket(router.web_port, "svc", "s3cret", "json")
    user = await clients.websocket(router.web_port, "alice", "alice-pw", "json")
    await backend.register(lambda a, b: a + b, "com.math.add")
    heard: list[str] = []
    await user.subscribe(heard.append, "com.room.one")

    # The user role keeps only com.math. (call): its subscription to com.room.one must go.
    document = copy.deepcopy(node_config(router.web_port, router.raw_port))  # shares PRINCIPALS
    user_role = document["workers"][0]["realms"][0]["roles"][1]
    user_role["permissions"] = [{"uri": "com.math.", "match": "prefix", "allow": {"call": True}}]
    write_config(router.directory, document)
    router.proc.send_signal(signal.SIGHUP)
    await until_logged(router, "removed 1 subscriptions and 0 registrations, ended 0 sessions")

    assert user.is_attached() and backend.is_attached()
    await backend.publish("com.room.one", "after", options=PublishOptions(acknowledge=True))
    assert await within(user.call("com.math.add", 2, 3)) == 5
    assert heard == []                      # the event went nowhere: no subscriber left
    with pytest.raises(ApplicationError) as refused:
        await within(user.subscribe(heard.append, "com.room.one"))
    assert refused.value.error == errors.NOT_AUTHORIZED

    # A broken file is refused with the reason; the running permissions stay.
    (router.directory / "node.yaml").write_text("version: 2\nworkers: oops\n")
    router.proc.send_signal(signal.SIGHUP)
    await until_logged(router, "reload of")
    assert "refused, the running permissions stay" in router.output()
    assert "workers" in router.output().split("reload of", 1)[1]
    assert await within(user.call("com.math.add", 1, 1)) == 2

    # Removing the role altogether (and the principal naming it) ends its sessions; the
    # backend stays. Authenticators are not reloaded: the file must just stay valid.
    document["workers"][0]["realms"][0]["roles"] = [document["workers"][0]["realms"][0]["roles"][0]]
    for transport in document["workers"][0]["transports"]:
        auth = transport["paths"]["ws"]["auth"] if "paths" in transport else transport["auth"]
        del auth["ticket"]["principals"]["alice"]
    write_config(router.directory, document)
    router.proc.send_signal(signal.SIGHUP)
    details = await within(user.left, 10.0)
    assert details.reason == errors.CLOSE_KILLED
    assert "role 'user' was removed" in details.message
    assert backend.is_attached()
    await clients.close()
    await router.stop()
