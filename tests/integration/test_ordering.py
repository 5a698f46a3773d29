"""WAMP's ordering promises and at-most-once delivery, checked under load over real sockets.

- Events from one publisher reach each subscriber in publish order, also across topics,
  while another publisher floods the same subscribers.
- Calls from one caller reach one callee in the order they were made.
- Nothing is delivered to a session after it closed: after the router's GOODBYE reply,
  no EVENT follows, even while a publisher is flooding its topic.
Counts are bounded (a few thousand messages) and every wait has a deadline.
"""

from __future__ import annotations

import json

import pytest_twisted
from autobahn.wamp.types import SubscribeOptions
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults

from tests.integration.conftest import reactor, within

EVENTS = 1500
NOISE = 1500
CALLS = 400
TOPICS = ("order.a", "order.b", "order.c")


def sleep(seconds: float) -> Deferred:
    return task.deferLater(reactor(), seconds, lambda: None)


class Recorder:
    """Sequence numbers per subscriber, in arrival order; fires `done` at `expected`."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen: list[int] = []
        self.noise = 0
        self.done: Deferred = Deferred()

    def on_event(self, kind: str, seq: int) -> None:
        if kind == "noise":
            self.noise += 1
            return
        self.seen.append(seq)
        if len(self.seen) == self.expected and not self.done.called:
            self.done.callback(None)


async def _publish_all(session, make_args, count: int, batch: int = 100) -> None:
    """Publish count events (unacknowledged), yielding to the reactor every batch."""
    for start in range(0, count, batch):
        for seq in range(start, min(count, start + batch)):
            topic, args = make_args(seq)
            session.publish(topic, *args)
        await sleep(0)


@pytest_twisted.ensureDeferred
async def test_events_from_one_publisher_arrive_in_order_across_topics_under_load(net):
    port = await net.listen("web")
    recorders = []
    for serializer in ("json", "msgpack", "cbor"):
        subscriber = await net.websocket(port, serializer)
        recorder = Recorder(EVENTS)
        await subscriber.subscribe(recorder.on_event, "order.", options=SubscribeOptions(match="prefix"))
        recorders.append(recorder)
    ordered = await net.websocket(port, "json", ticket="backend:ordered", authmethods=["ticket"])
    flooder = await net.websocket(port, "msgpack", ticket="backend:flood", authmethods=["ticket"])

    await gatherResults([
        Deferred.fromCoroutine(_publish_all(
            ordered, lambda seq: (TOPICS[seq % 3], ("seq", seq)), EVENTS)),
        Deferred.fromCoroutine(_publish_all(
            flooder, lambda seq: (TOPICS[(seq + 1) % 3], ("noise", seq)), NOISE)),
    ])
    for recorder in recorders:
        await within(recorder.done, 60)
        assert recorder.seen == list(range(EVENTS))     # every event, in publish order


@pytest_twisted.ensureDeferred
async def test_calls_from_one_caller_reach_one_callee_in_order(net):
    port = await net.listen("web")
    arrivals: list[int] = []
    callee = await net.websocket(port, "cbor", ticket="backend:callee", authmethods=["ticket"])
    await callee.register(lambda n: arrivals.append(n) or n, "order.echo")
    caller = await net.websocket(port, "json", ticket="user:caller", authmethods=["ticket"])
    noisy = await net.websocket(port, "msgpack", ticket="user:noisy", authmethods=["ticket"])
    calls = [caller.call("order.echo", n) for n in range(CALLS)]
    noise = [noisy.call("order.echo", -1) for _ in range(CALLS)]
    results = await within(gatherResults(calls + noise), 60)
    assert results[:CALLS] == list(range(CALLS))
    assert [n for n in arrivals if n >= 0] == list(range(CALLS))


@pytest_twisted.ensureDeferred
async def test_nothing_is_delivered_after_the_session_closed(net):
    port = await net.listen("web")
    raw = await net.raw_websocket(port)
    raw.sendMessage(json.dumps([1, "test", {"roles": {"subscriber": {}},
                                            "authmethods": ["anonymous"]}]).encode(), False)
    assert (await raw.next_json())[0] == 2
    raw.sendMessage(json.dumps([32, 1, {}, "order.a"]).encode(), False)
    assert (await raw.next_json())[0] == 33
    publisher = await net.websocket(port, "msgpack", ticket="backend:pub", authmethods=["ticket"])
    flood = Deferred.fromCoroutine(_publish_all(publisher, lambda seq: ("order.a", (seq,)), 2000,
                                                batch=50))
    await sleep(0.05)                                  # mid-flood
    raw.sendMessage(json.dumps([6, {}, "wamp.close.normal"]).encode(), False)
    kinds = []
    while True:
        frame = await raw.next_json()
        kinds.append(frame[0])
        if frame[0] == 6:
            break
    await flood
    await within(raw.closed)
    after_goodbye = []
    while raw.frames.pending:
        after_goodbye.append(json.loads(raw.frames.pending.pop(0)[0])[0])
    assert after_goodbye == []
    assert set(kinds) <= {36, 6} and kinds[-1] == 6
