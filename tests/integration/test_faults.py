"""Faults around a call in flight, over real sockets: the router answers, logs and counts.

A callee that vanishes mid-call leaves its caller an ERROR wamp.error.canceled; a caller
that vanishes gets its callee an INTERRUPT; either way the router keeps serving and
wampchat_calls_interrupted_total{reason} counts it. (Database, Keycloak and component
faults have their own tests: tests/users/test_outage.py, test_key_rotation.py,
test_component_runner.py.)
"""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred

from tests.integration.conftest import within
from wampchat import errors


def interrupted(net, reason: str) -> float:
    return net.router.metrics.registry.get_sample_value(
        "wampchat_calls_interrupted_total", {"reason": reason}) or 0.0


@pytest_twisted.ensureDeferred
async def test_callee_vanishing_mid_call_cancels_the_call_and_the_router_serves_on(net):
    port = await net.listen("web")
    callee = await net.websocket(port, "msgpack", ticket="backend:worker", authmethods=["ticket"])
    started: Deferred = Deferred()

    def work():
        started.callback(None)
        return Deferred()                 # never answers by itself
    await callee.register(work, "svc.work")
    caller = await net.websocket(port, "json", ticket="user:alice", authmethods=["ticket"])
    call = caller.call("svc.work")
    await within(started)
    callee._transport.transport.abortConnection()          # gone, no GOODBYE
    with pytest.raises(ApplicationError) as canceled:
        await within(call)
    assert canceled.value.error == errors.CANCELED
    assert interrupted(net, "callee_left") == 1
    replacement = await net.websocket(port, "cbor", ticket="backend:worker2", authmethods=["ticket"])
    await replacement.register(lambda: "done", "svc.work")
    assert await within(caller.call("svc.work")) == "done"


@pytest_twisted.ensureDeferred
async def test_caller_vanishing_mid_call_interrupts_the_callee(net):
    port = await net.listen("web")
    callee = await net.websocket(port, "cbor", ticket="backend:worker", authmethods=["ticket"])
    started: Deferred = Deferred()
    interrupted_work: Deferred = Deferred()

    def work():
        started.callback(None)
        return Deferred(lambda d: interrupted_work.callback("interrupted"))   # canceller
    await callee.register(work, "svc.work")
    caller = await net.websocket(port, "json", ticket="user:alice", authmethods=["ticket"])
    caller.call("svc.work").addErrback(lambda _: None)     # the caller is about to vanish
    await within(started)
    caller._transport.transport.abortConnection()
    assert await within(interrupted_work) == "interrupted"  # Autobahn cancels on INTERRUPT
    assert interrupted(net, "caller_left") == 1
    other = await net.websocket(port, "msgpack", ticket="user:bob", authmethods=["ticket"])
    await callee.register(lambda: "fine", "svc.quick")
    assert await within(other.call("svc.quick")) == "fine"
    assert callee.is_attached()
