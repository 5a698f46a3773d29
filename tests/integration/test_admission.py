"""Admission limits and the message rate over real sockets (WebSocket and RawSocket)."""

from __future__ import annotations

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.integration.conftest import RawSocketPeer, reactor, within
from wampchat import errors
from wampchat.config_types import LimitsConfig
from wampchat.router.admission import Admission


def sleep(seconds: float):
    return task.deferLater(reactor(), seconds, lambda: None)


async def until(condition, seconds: float = 5.0) -> None:
    """Poll condition (bounded): connection slots are given back when the socket closes."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await sleep(0.02)
    raise AssertionError("condition not met in time")


def refused_logins(net, reason: str) -> float:
    value = net.router.metrics.registry.get_sample_value(
        "wampchat_logins_total", {"outcome": "refused", "reason": reason})
    return value or 0.0


@pytest_twisted.ensureDeferred
async def test_websocket_over_the_per_address_limit_gets_503_until_a_slot_frees(net):
    net.router.context.admission = Admission(max_per_address=2)
    port = await net.listen("web")
    first = await net.websocket(port)
    await net.websocket(port)
    with pytest.raises(RuntimeError) as refused:
        await net.raw_websocket(port)
    assert "503" in str(refused.value) and "at most 2 per address" in str(refused.value)
    assert refused_logins(net, "connection_limit") == 1
    # the two sessions are untouched, and a slot frees when one leaves
    first.leave()
    await within(first.disconnected)
    await until(lambda: net.router.context.admission.open == 1)
    await net.websocket(port)


@pytest_twisted.ensureDeferred
async def test_rawsocket_over_the_node_limit_gets_the_handshake_error(net):
    admission = Admission(max_connections=1)
    net.router.context.admission = admission
    port = await net.listen("rawsocket")
    await net.rawsocket(port, ticket="backend:svc", authmethods=["ticket"])
    peer = await TCP4ClientEndpoint(reactor(), "127.0.0.1", port).connect(
        protocol.Factory.forProtocol(RawSocketPeer))
    peer.transport.write(bytes([0x7F, 0xF1, 0, 0]))
    # RawSocket handshake error 4: maximum connection count reached
    assert await peer.read(4) == bytes([0x7F, 0x40, 0, 0])
    await within(peer.lost)
    assert admission.open == 1
    peer.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_rate_limited_calls_get_the_error_and_publishes_are_dropped(net):
    net.router.context.limits = LimitsConfig(message_rate=1.0, message_burst=3)
    port = await net.listen("web")
    callee = await net.websocket(port, ticket="backend:svc", authmethods=["ticket"])  # exempt
    await callee.register(lambda n: n, "test.echo")
    listener = await net.websocket(port, ticket="backend:listener", authmethods=["ticket"])
    heard: list[int] = []
    await listener.subscribe(heard.append, "test.topic")
    user = await net.websocket(port, ticket="user:alice", authmethods=["ticket"])

    assert [await user.call("test.echo", n) for n in range(3)] == [0, 1, 2]
    with pytest.raises(ApplicationError) as limited:
        await user.call("test.echo", 3)
    assert limited.value.error == errors.RATE_LIMITED
    for n in range(3):                    # the bucket is empty: dropped, not delivered
        user.publish("test.topic", n)
    with pytest.raises(ApplicationError) as acknowledged:
        await user.publish("test.topic", 99, options=PublishOptions(acknowledge=True))
    assert acknowledged.value.error == errors.RATE_LIMITED
    await sleep(1.1)                      # one token back
    await user.publish("test.topic", 7, options=PublishOptions(acknowledge=True))
    await until(lambda: heard == [7])
    dropped = net.router.metrics.registry.get_sample_value(
        "wampchat_messages_dropped_total", {"reason": "rate_limited"})
    assert dropped == 5                   # 1 call + 3 publishes + 1 acknowledged publish
    assert user.is_attached() and callee.is_attached()


async def join_from(port: int, address: str, ticket: str):
    """A ticket client joined from a given loopback address (127.0.0.0/8 is all loopback)."""
    from autobahn.twisted.websocket import WampWebSocketClientFactory
    from autobahn.wamp.serializer import JsonSerializer

    from tests.integration.conftest import Client

    session = Client(["ticket"], ticket)
    factory = WampWebSocketClientFactory(lambda: session, url=f"ws://127.0.0.1:{port}/ws",
                                         serializers=[JsonSerializer()])
    await TCP4ClientEndpoint(reactor(), "127.0.0.1", port, timeout=5,
                             bindAddress=(address, 0)).connect(factory)
    return session


@pytest_twisted.ensureDeferred
async def test_an_address_with_too_many_failed_logins_is_refused_at_accept(net):
    admission = Admission(max_failed_logins=3, block_seconds=30, clock=reactor())
    net.router.context.admission = admission
    port = await net.listen("web")
    for _ in range(3):
        attacker = await join_from(port, "127.0.0.3", "user:")     # malformed: refused
        with pytest.raises(RuntimeError, match="not welcomed"):
            await within(attacker.joined)
    assert admission.blocked("127.0.0.3")
    assert refused_logins(net, "address_blocked") == 1
    # its next connection is closed at accept: no HTTP answer, no WebSocket
    with pytest.raises(Exception):
        blocked = await join_from(port, "127.0.0.3", "user:alice")
        await within(blocked.joined)
    # every other address is still served
    other = await join_from(port, "127.0.0.4", "user:bob")
    assert (await within(other.joined)).authid == "bob"
    other.leave()
    await within(other.disconnected)


@pytest_twisted.ensureDeferred
async def test_silent_peers_are_ended_at_the_hello_and_authenticate_timeouts(net):
    import json

    net.router.context.limits = LimitsConfig(hello_timeout=0.3, authenticate_timeout=0.3)
    port = await net.listen("web")
    silent = await net.raw_websocket(port)                  # opens, never says HELLO
    challenged = await net.raw_websocket(port)
    challenged.sendMessage(json.dumps([1, "test", {"roles": {"caller": {}},
                                                   "authmethods": ["ticket"]}]).encode(), False)
    assert (await challenged.next_json())[0] == 4            # CHALLENGE, never answered
    for peer in (silent, challenged):
        abort = await peer.next_json()
        assert abort[0] == 3 and abort[2] == errors.CLOSE_TIMEOUT, abort
        await within(peer.closed)
    assert net.router.realm.sessions == {}
