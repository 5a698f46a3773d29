"""PUBLISH -> EVENT: patterns, exclusion, eligibility, disclosure, acks, authorization, limits."""

import pytest

import wampchat  # noqa: F401
from autobahn.wamp import message

from tests.router.harness import RouterHarness


def events(client):
    """The args of every EVENT the client received, in order."""
    return [e.args for e in client.received(message.Event)]


@pytest.mark.parametrize("pattern, match, topic, delivered", [
    ("news.sports", None, "news.sports", True),
    ("news.sports", "exact", "news.sports.tennis", False),
    ("news.", "prefix", "news.sports", True),
    ("news.sp", "prefix", "news.sports", True),
    ("news.sp", "prefix", "news.weather", False),
    ("news..final", "wildcard", "news.cup.final", True),
    ("news..final", "wildcard", "news.cup.semi", False),
])
def test_subscriptions_by_match_policy(router, pattern, match, topic, delivered):
    """A subscription gets an event exactly when its pattern matches the topic."""
    alice, bob = router.join(), router.join()
    subscription = alice.subscribe(pattern, match)
    bob.send(message.Publish(1, topic, args=["x"]))
    router.pump()
    received = alice.received(message.Event)
    assert bool(received) is delivered
    if delivered:
        event = received[0]
        assert event.subscription == subscription
        # Pattern-based events carry the concrete topic; exact ones do not need it.
        assert event.topic == (topic if (match or "exact") != "exact" else None)


def test_one_subscriber_with_several_matching_subscriptions_gets_one_event_each(router):
    """Exact and prefix subscriptions of one session both receive the publication."""
    alice, bob = router.join(), router.join()
    exact, prefix = alice.subscribe("news.sports"), alice.subscribe("news.", "prefix")
    bob.send(message.Publish(1, "news.sports", args=["goal"]))
    router.pump()
    got = alice.received(message.Event)
    assert sorted(e.subscription for e in got) == sorted([exact, prefix])
    assert len({e.publication for e in got}) == 1


def test_subscribers_of_one_topic_share_the_subscription_and_the_event_object(router):
    """Two subscribers get the same subscription id and the very same Event object."""
    alice, bob, carol = router.join(), router.join(), router.join()
    assert alice.subscribe("news.sports") == bob.subscribe("news.sports")
    carol.send(message.Publish(1, "news.sports", args=["once"]))
    router.pump()
    (event_a,), (event_b,) = alice.received(message.Event), bob.received(message.Event)
    assert event_a is event_b


def test_exclude_me_defaults_to_true(router):
    """The publisher does not get its own event unless it says exclude_me=False."""
    alice, bob = router.join(), router.join()
    for client in (alice, bob):
        client.subscribe("news.sports")
    alice.send(message.Publish(1, "news.sports", args=["default"]))
    alice.send(message.Publish(2, "news.sports", args=["me too"], exclude_me=False))
    router.pump()
    assert events(alice) == [["me too"]]
    assert events(bob) == [["default"], ["me too"]]


@pytest.mark.parametrize("options, receivers", [
    (lambda ids: {"exclude": [ids["bob"]]}, {"carol", "dave"}),
    (lambda ids: {"eligible": [ids["bob"], ids["dave"]]}, {"bob", "dave"}),
    (lambda ids: {"exclude_authid": ["carol"]}, {"bob", "dave"}),
    (lambda ids: {"eligible_authid": ["carol"]}, {"carol"}),
    (lambda ids: {"exclude_authrole": ["admin"]}, {"bob", "carol"}),
    (lambda ids: {"eligible_authrole": ["admin"]}, {"dave"}),
    (lambda ids: {"eligible_authrole": ["user"], "exclude_authid": ["bob"]}, {"carol"}),
])
def test_black_and_white_listing(router, options, receivers):
    """exclude/eligible by session id, authid and authrole choose the receivers."""
    publisher = router.join(authid="alice")
    clients = {"bob": router.join(authid="bob"), "carol": router.join(authid="carol"),
               "dave": router.join("admin", authid="dave")}
    for client in clients.values():
        client.subscribe("news.sports")
    ids = {name: client.session_id for name, client in clients.items()}
    publisher.send(message.Publish(1, "news.sports", args=["x"], **options(ids)))
    router.pump()
    assert {name for name, client in clients.items() if events(client)} == receivers


def test_publisher_is_disclosed_when_the_permission_says_so(router):
    """chat.main discloses publisher, authid and authrole; news.* discloses nothing."""
    alice, bob = router.join(authid="alice"), router.join(authid="bob")
    bob.subscribe("chat.main")
    bob.subscribe("news.sports")
    alice.send(message.Publish(1, "chat.main", kwargs={"message": "hi"}))
    alice.send(message.Publish(2, "news.sports", args=["anonymous"]))
    router.pump()
    disclosed, anonymous = bob.received(message.Event)
    assert (disclosed.publisher, disclosed.publisher_authid, disclosed.publisher_authrole) == \
        (alice.session_id, "alice", "user")
    assert (anonymous.publisher, anonymous.publisher_authid, anonymous.publisher_authrole) == \
        (None, None, None)


def test_acknowledged_publish_gets_published(router):
    """PUBLISH with acknowledge gets PUBLISHED with the publication id of the events."""
    alice, bob = router.join(), router.join()
    bob.subscribe("news.sports")
    alice.send(message.Publish(7, "news.sports", args=["x"], acknowledge=True))
    alice.send(message.Publish(8, "news.nobody", args=["x"], acknowledge=True))
    alice.send(message.Publish(9, "news.sports", args=["unacked"]))
    router.pump()
    published = alice.received(message.Published)
    assert [p.request for p in published] == [7, 8]
    assert published[0].publication == bob.received(message.Event)[0].publication


def test_unauthorized_publish_errors_only_when_acknowledged(router):
    """A user's PUBLISH to chat.admin reaches no one; ERROR not_authorized only if acknowledged."""
    alice, admin = router.join(), router.join("admin")
    admin.subscribe("chat.admin")
    alice.send(message.Publish(1, "chat.admin", args=["sneaky"]))
    alice.send(message.Publish(2, "chat.admin", args=["sneaky"], acknowledge=True))
    router.pump()
    assert events(admin) == []
    (error,) = alice.received(message.Error)
    assert (error.request_type, error.request, error.error) == \
        (message.Publish.MESSAGE_TYPE, 2, "wamp.error.not_authorized")
    assert alice.is_open


def test_unauthorized_subscribe_always_errors(router):
    """A user's SUBSCRIBE to chat.admin gets ERROR not_authorized."""
    alice = router.join()
    alice.send(message.Subscribe(3, "chat.admin"))
    router.pump()
    assert isinstance(alice.last, message.Error)
    assert (alice.last.request_type, alice.last.request, alice.last.error) == \
        (message.Subscribe.MESSAGE_TYPE, 3, "wamp.error.not_authorized")
    assert router.realm.broker.lookup("chat.admin", "exact") is None


def test_pattern_subscriber_never_gets_a_topic_its_role_may_not_see(router):
    """A user subscribed to prefix `chat.` receives chat.main, never chat.admin."""
    alice, admin = router.join(authrole="user"), router.join(authrole="admin")
    alice.subscribe("chat.", "prefix")
    admin.subscribe("chat.", "prefix")
    other_admin = router.join("admin")
    other_admin.send(message.Publish(2, "chat.admin", args=["secret"]))
    other_admin.send(message.Publish(3, "chat.main", args=["hello"]))
    router.pump()
    assert events(alice) == [["hello"]]
    assert events(admin) == [["secret"], ["hello"]]


def test_invalid_topic_is_refused(router):
    """A topic with an empty component gets ERROR wamp.error.invalid_uri."""
    alice = router.join()
    alice.send(message.Subscribe(1, "chat..main"))
    router.pump()
    assert alice.last.error == "wamp.error.invalid_uri"


def test_payload_over_max_payload_is_refused(router):
    """Over max_payload: ERROR wampchat.error.payload_too_large when acknowledged, no event."""
    alice, bob = router.join(), router.join()
    bob.subscribe("news.limited")
    alice.send(message.Publish(1, "news.limited", args=["x" * 100], acknowledge=True))
    alice.send(message.Publish(2, "news.limited", args=["y" * 100]))
    alice.send(message.Publish(3, "news.limited", args=["small"], acknowledge=True))
    router.pump()
    assert events(bob) == [["small"]]
    assert [(e.request, e.error) for e in alice.received(message.Error)] == \
        [(1, "wampchat.error.payload_too_large")]
    assert [p.request for p in alice.received(message.Published)] == [3]


def test_unsubscribe_stops_events(router):
    """After UNSUBSCRIBED no more events; a second UNSUBSCRIBE gets no_such_subscription."""
    alice, bob = router.join(), router.join()
    subscription = alice.subscribe("news.sports")
    alice.send(message.Unsubscribe(10, subscription))
    router.pump()
    assert isinstance(alice.last, message.Unsubscribed) and alice.last.request == 10
    bob.send(message.Publish(1, "news.sports", args=["x"]))
    alice.send(message.Unsubscribe(11, subscription))
    router.pump()
    assert events(alice) == []
    assert alice.last.error == "wamp.error.no_such_subscription"
    assert router.realm.broker.get(subscription) is None


def test_unsubscribing_another_sessions_subscription_is_refused(router):
    """A session cannot unsubscribe a subscription it does not hold."""
    alice, bob = router.join(), router.join()
    subscription = alice.subscribe("news.sports")
    bob.send(message.Unsubscribe(1, subscription))
    router.pump()
    assert bob.last.error == "wamp.error.no_such_subscription"
    assert list(router.realm.broker.get(subscription).subscribers) == [alice.session_id]


def test_leaving_session_loses_its_subscriptions_with_meta_events(router):
    """A leaving session: on_unsubscribe for all it held, on_delete for what it left empty."""
    backend = router.join("backend")
    on_unsubscribe = backend.subscribe("wamp.subscription.on_unsubscribe")
    on_delete = backend.subscribe("wamp.subscription.on_delete")
    alice, bob = router.join(), router.join()
    shared = alice.subscribe("news.sports")
    bob.subscribe("news.sports")
    own = alice.subscribe("news.", "prefix")
    alice.send(message.Goodbye("wamp.close.normal"))
    router.pump()
    sid = alice.session_id

    def meta(subscription):
        return sorted(e.args for e in backend.received(message.Event)
                      if e.subscription == subscription)

    assert meta(on_unsubscribe) == sorted([[sid, shared], [sid, own]])
    assert meta(on_delete) == [[sid, own]]
    assert router.realm.broker.get(own) is None
    assert list(router.realm.broker.get(shared).subscribers) == [bob.session_id]
    router.join("user").send(message.Publish(1, "news.sports", args=["after"]))
    router.pump()
    assert events(bob) == [["after"]]


def test_publishing_from_an_event_handler_does_not_reenter_the_broker():
    """Events are delivered on a later turn, so fan-out finishes before any reply is routed."""
    router = RouterHarness()
    alice, bob = router.join(), router.join()
    alice.subscribe("news.a")
    bob.subscribe("news.a")
    alice.send(message.Publish(1, "news.a", args=["x"]))
    assert events(bob) == []          # nothing delivered before the clock turns
    router.pump()
    assert events(bob) == [["x"]]


def test_subscribing_twice_is_one_subscription(router):
    """A second SUBSCRIBE to the same topic returns the same id and delivers each event once."""
    alice, bob = router.join(), router.join()
    first, second = alice.subscribe("news.sports"), alice.subscribe("news.sports")
    assert first == second
    bob.send(message.Publish(1, "news.sports", args=["once"]))
    router.pump()
    assert events(alice) == [["once"]]
