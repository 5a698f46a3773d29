"""Per-session limits: the message rate (token bucket) and subscriptions/registrations held."""

from __future__ import annotations

from dataclasses import replace

import pytest
from autobahn.wamp import message
from twisted.internet.task import Clock

from tests.router.harness import RouterHarness
from wampchat import errors
from wampchat.config_types import LimitsConfig
from wampchat.router.admission import Admission, TokenBucket
from wampchat.router.session import SessionObserver

RATED = LimitsConfig(message_rate=2.0, message_burst=3)


class Drops(SessionObserver):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def dropped(self, reason: str) -> None:
        self.reasons.append(reason)


@pytest.fixture
def rated() -> RouterHarness:
    harness = RouterHarness(limits=RATED)
    harness.context.observer = Drops()
    return harness


def error_uri(reply) -> str | None:
    return reply.error if isinstance(reply, message.Error) else None


def test_calls_over_the_burst_get_rate_limited_then_the_bucket_refills(rated):
    user = rated.join("user")
    replies = [user.call("wampchat.session.refresh", "x") for _ in range(5)]
    uris = [error_uri(reply) for reply in replies]
    # the first 3 reach the router procedure (which refuses the bad ticket), the rest do not
    assert uris[:3] == [errors.AUTHENTICATION_FAILED] * 3
    assert uris[3:] == [errors.RATE_LIMITED] * 2
    assert "over the limit of 2 requests per second" in replies[3].args[0]
    rated.clock.advance(1.0)                 # 2 tokens back
    uris = [error_uri(user.call("wampchat.session.refresh", "x")) for _ in range(3)]
    assert uris == [errors.AUTHENTICATION_FAILED, errors.AUTHENTICATION_FAILED, errors.RATE_LIMITED]
    assert rated.context.observer.reasons.count("rate_limited") == 3


def test_publishes_over_the_rate_are_dropped_and_counted(rated):
    listener = rated.join("user", "listener")
    listener.subscribe("chat.main")
    rated.context.limits = replace(RATED, message_rate=0.5)  # new sessions only
    talker = rated.join("user", "talker")
    for n in range(5):
        talker.send(message.Publish(talker.request(), "chat.main", kwargs={"message": n}))
    rated.pump()
    assert [e.kwargs["message"] for e in listener.received(message.Event)] == [0, 1, 2]
    assert rated.context.observer.reasons.count("rate_limited") == 2
    reply = talker._ask(message.Publish(talker.request(), "chat.main", kwargs={"message": 9},
                                        acknowledge=True))
    assert error_uri(reply) == errors.RATE_LIMITED
    assert talker.is_open and listener.is_open      # limited, not disconnected


def test_subscribe_and_register_spend_tokens_but_answers_do_not(rated):
    user = rated.join("user")
    for n in range(3):
        user.subscribe(f"chat.room{n}")
    reply = user._ask(message.Subscribe(user.request(), "chat.room9"))
    assert error_uri(reply) == errors.RATE_LIMITED
    # UNSUBSCRIBE is a release: never limited
    subscription = user.received(message.Subscribed)[0].subscription
    reply = user._ask(message.Unsubscribe(user.request(), subscription))
    assert isinstance(reply, message.Unsubscribed)


def test_backend_is_exempt_and_rate_zero_is_off(rated):
    backend = rated.join("backend")
    uris = [error_uri(backend.call("wampchat.session.refresh", "x")) for _ in range(10)]
    assert errors.RATE_LIMITED not in uris
    unlimited = RouterHarness()                   # message_rate 0: off
    user = unlimited.join("user")
    uris = [error_uri(user.call("wampchat.session.refresh", "x")) for _ in range(300)]
    assert errors.RATE_LIMITED not in uris


def test_subscription_limit_per_session():
    harness = RouterHarness(limits=LimitsConfig(max_subscriptions_per_session=2))
    user = harness.join("user")
    user.subscribe("chat.a")
    user.subscribe("chat.b")
    reply = user._ask(message.Subscribe(user.request(), "chat.c"))
    assert error_uri(reply) == errors.LIMIT_EXCEEDED
    assert reply.args == ["at most 2 subscriptions per session"]
    # subscribing again to what it holds is not a new subscription
    assert isinstance(user._ask(message.Subscribe(user.request(), "chat.a")), message.Subscribed)
    # another session has its own count
    assert harness.join("user").subscribe("chat.c")
    # after an unsubscribe there is room again
    user._ask(message.Unsubscribe(user.request(), user.received(message.Subscribed)[0].subscription))
    assert user.subscribe("chat.c")


def test_registration_limit_per_session():
    harness = RouterHarness(limits=LimitsConfig(max_registrations_per_session=1))
    backend = harness.join("backend")
    backend.register("svc.one")
    reply = backend._ask(message.Register(backend.request(), "svc.two"))
    assert error_uri(reply) == errors.LIMIT_EXCEEDED
    assert harness.realm.dealer.lookup("svc.two", "exact") is None


def test_token_bucket_never_saves_more_than_the_burst():
    clock = Clock()
    bucket = TokenBucket(clock, rate=10.0, burst=2)
    clock.advance(100)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.advance(0.05)                          # half a token
    assert not bucket.take()
    clock.advance(0.051)                         # (floating point: a hair over the token)
    assert bucket.take()


def test_admission_counts_per_node_and_per_address():
    admission = Admission(max_connections=3, max_per_address=2)
    assert admission.acquire("10.0.0.1") is None
    assert admission.acquire("10.0.0.1") is None
    assert "too many connections from 10.0.0.1 (at most 2 per address)" == admission.acquire("10.0.0.1")
    assert admission.acquire("10.0.0.2") is None
    assert "maximum of 3 connections" in admission.acquire("10.0.0.3")
    admission.release("10.0.0.1")
    assert admission.acquire("10.0.0.3") is None
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        admission.release(address)
    assert admission.open == 0 and not admission._by_address
    unlimited = Admission()
    assert all(unlimited.acquire("x") is None for _ in range(1000))


def test_failed_logins_block_an_address_for_a_while():
    clock = Clock()
    admission = Admission(max_failed_logins=3, block_seconds=30, clock=clock)
    assert [admission.login_failed("10.0.0.1") for _ in range(3)] == [False, False, True]
    assert admission.blocked("10.0.0.1") and not admission.blocked("10.0.0.2")
    clock.advance(29)
    assert admission.blocked("10.0.0.1")
    clock.advance(2)
    assert not admission.blocked("10.0.0.1")
    # failures spread wider than the window never add up to a block
    for _ in range(5):
        admission.login_failed("10.0.0.3")
        admission.login_failed("10.0.0.3")
        clock.advance(31)
    assert not admission.blocked("10.0.0.3")
    assert not Admission(max_failed_logins=3).login_failed("x")    # no clock: off



def test_refused_logins_are_logged_at_most_once_per_reason_per_second():
    from twisted.logger import capturedLogs

    from wampchat.router.refusal_log import RefusalLog

    clock = Clock()
    refusals = RefusalLog(clock)
    with capturedLogs() as events:
        written = [refusals.refused("tcp4:10.0.0.1:1", "expired", False) for _ in range(50)]
        written.append(refusals.refused("tcp4:10.0.0.2:1", "unavailable", True))
        clock.advance(1.0)
        written.append(refusals.refused("tcp4:10.0.0.3:1", "expired", False))
    assert written == [True] + [False] * 49 + [True, True]
    lines = [e for e in events if "login refused" in e.get("log_format", "")]
    assert [e["reason"] for e in lines] == ["expired", "unavailable", "expired"]
    assert lines[-1]["held_back"] == 49
