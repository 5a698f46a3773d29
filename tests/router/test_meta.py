"""The meta API: wamp.session.*, wamp.subscription.*, wamp.registration.* procedures and events."""

import wampchat  # noqa: F401
from autobahn.wamp import message


def result(reply):
    """The single value of a RESULT (fails on ERROR)."""
    assert isinstance(reply, message.Result), (reply.error, reply.args)
    return reply.args[0]


def meta_events(client, subscription):
    """The args of the events client got on subscription."""
    return [e.args for e in client.received(message.Event) if e.subscription == subscription]


def test_session_count_list_get(router):
    """count/list (optionally by authrole) and get describe the sessions of the realm."""
    backend = router.join("backend", authid="svc")
    alice, admin = router.join(authid="alice"), router.join("admin", authid="carol")
    assert result(backend.call("wamp.session.count")) == 3
    assert result(backend.call("wamp.session.count", ["user", "admin"])) == 2
    assert sorted(result(backend.call("wamp.session.list"))) == \
        sorted([backend.session_id, alice.session_id, admin.session_id])
    assert result(backend.call("wamp.session.list", ["admin"])) == [admin.session_id]
    details = result(backend.call("wamp.session.get", alice.session_id))
    keys = ("session", "authid", "authrole", "authmethod", "authprovider")
    assert {k: details[k] for k in keys} == {
        "session": alice.session_id, "authid": "alice", "authrole": "user",
        "authmethod": "ticket", "authprovider": "test"}
    assert backend.call("wamp.session.get", 12345).error == "wamp.error.no_such_session"
    assert backend.call("wamp.session.get", "x").error == "wamp.error.invalid_argument"


def test_session_kill(router):
    """kill ends another session with GOODBYE (reason as given); not itself, not unknown ids."""
    backend, alice, bob = router.join("backend"), router.join(), router.join()
    assert result(backend.call("wamp.session.kill", alice.session_id,
                               reason="wamp.close.bye", message="go")) is None
    goodbye = alice.received(message.Goodbye)[0]
    assert (goodbye.reason, goodbye.message) == ("wamp.close.bye", "go")
    assert not alice.is_open and bob.is_open
    assert backend.call("wamp.session.kill", alice.session_id).error == "wamp.error.no_such_session"
    assert backend.call("wamp.session.kill", backend.session_id).error == \
        "wamp.error.no_such_session"
    assert backend.is_open


def test_kill_by_authid_and_by_authrole(router):
    """kill_by_authid ends every session of that authid; kill_by_authrole every one of that role."""
    backend = router.join("backend")
    alice1, alice2 = router.join(authid="alice"), router.join(authid="alice")
    bob, carol = router.join(authid="bob"), router.join("admin", authid="carol")
    assert result(backend.call("wamp.session.kill_by_authid", "alice")) == 2
    assert not alice1.is_open and not alice2.is_open and bob.is_open
    assert alice1.received(message.Goodbye)[0].reason == "wamp.close.killed"
    assert result(backend.call("wamp.session.kill_by_authrole", "user")) == 1
    assert not bob.is_open and carol.is_open
    assert result(backend.call("wamp.session.kill_by_authrole", "backend")) == 0   # not itself
    assert set(router.realm.sessions) == {backend.session_id, carol.session_id}


def test_session_on_join_and_on_leave(router):
    """on_join carries the new session's details; on_leave its id, authid and authrole."""
    backend = router.join("backend")
    on_join = backend.subscribe("wamp.session.on_join")
    on_leave = backend.subscribe("wamp.session.on_leave")
    alice = router.join(authid="alice")
    alice.send(message.Goodbye("wamp.close.normal"))
    router.pump()
    ((joined,),) = meta_events(backend, on_join)
    assert (joined["session"], joined["authid"], joined["authrole"]) == \
        (alice.session_id, "alice", "user")
    assert meta_events(backend, on_leave) == [[alice.session_id, "alice", "user"]]


def test_user_may_not_use_the_meta_api(router):
    """A user calling wamp.session.list or subscribing to on_join gets ERROR not_authorized."""
    alice = router.join()
    assert alice.call("wamp.session.list").error == "wamp.error.not_authorized"
    alice.send(message.Subscribe(1, "wamp.session.on_join"))
    router.pump()
    assert alice.last.error == "wamp.error.not_authorized"


def test_subscription_procedures(router):
    """lookup/match/get/list_subscribers/count_subscribers/list describe the broker's table."""
    backend, alice, bob = router.join("backend"), router.join(), router.join()
    exact = alice.subscribe("news.sports")
    assert bob.subscribe("news.sports") == exact
    prefix = alice.subscribe("news.", "prefix")
    wild = alice.subscribe("news..final", "wildcard")
    assert result(backend.call("wamp.subscription.lookup", "news.sports")) == exact
    assert result(backend.call("wamp.subscription.lookup", "news.", {"match": "prefix"})) == prefix
    assert result(backend.call("wamp.subscription.lookup", "news.", match="prefix")) == prefix
    assert result(backend.call("wamp.subscription.lookup", "news.weather")) is None
    assert sorted(result(backend.call("wamp.subscription.match", "news.sports"))) == \
        sorted([exact, prefix])
    assert sorted(result(backend.call("wamp.subscription.match", "news.cup.final"))) == \
        sorted([prefix, wild])
    assert result(backend.call("wamp.subscription.match", "other")) is None
    details = result(backend.call("wamp.subscription.get", wild))
    assert (details["id"], details["uri"], details["match"]) == (wild, "news..final", "wildcard")
    assert "created" in details
    assert sorted(result(backend.call("wamp.subscription.list_subscribers", exact))) == \
        sorted([alice.session_id, bob.session_id])
    assert result(backend.call("wamp.subscription.count_subscribers", exact)) == 2
    assert result(backend.call("wamp.subscription.list")) == \
        {"exact": [exact], "prefix": [prefix], "wildcard": [wild]}
    assert backend.call("wamp.subscription.get", 1).error == "wamp.error.no_such_subscription"
    assert backend.call("wamp.subscription.lookup", "x", match="regex").error == \
        "wamp.error.invalid_argument"


def test_subscription_events(router):
    """on_create once per new subscription, on_subscribe per subscriber, then unsubscribe/delete."""
    backend = router.join("backend")
    topics = ("on_create", "on_subscribe", "on_unsubscribe", "on_delete")
    meta = {t: backend.subscribe(f"wamp.subscription.{t}") for t in topics}
    alice, bob = router.join(), router.join()
    subscription = alice.subscribe("news.sports")
    bob.subscribe("news.sports")
    alice.send(message.Unsubscribe(50, subscription))
    bob.send(message.Unsubscribe(50, subscription))
    router.pump()
    ((creator, details),) = meta_events(backend, meta["on_create"])
    assert (creator, details["id"], details["uri"]) == (alice.session_id, subscription,
                                                        "news.sports")
    assert meta_events(backend, meta["on_subscribe"]) == \
        [[alice.session_id, subscription], [bob.session_id, subscription]]
    assert meta_events(backend, meta["on_unsubscribe"]) == \
        [[alice.session_id, subscription], [bob.session_id, subscription]]
    assert meta_events(backend, meta["on_delete"]) == [[bob.session_id, subscription]]


def test_registration_procedures(router):
    """lookup/match/get/list_callees/count_callees/list describe the dealer's table."""
    backend, one, two = router.join("backend"), router.join("backend"), router.join("backend")
    shared = one.register("rpc.x", invoke="roundrobin")
    assert two.register("rpc.x", invoke="roundrobin") == shared
    prefix = one.register("rpc.", "prefix")
    wild = one.register("svc..go", "wildcard")
    assert result(backend.call("wamp.registration.lookup", "rpc.x")) == shared
    assert result(backend.call("wamp.registration.lookup", "rpc.", match="prefix")) == prefix
    assert result(backend.call("wamp.registration.lookup", "rpc.y")) is None
    assert result(backend.call("wamp.registration.match", "rpc.x")) == shared
    assert result(backend.call("wamp.registration.match", "rpc.y")) == prefix
    assert result(backend.call("wamp.registration.match", "svc.a.go")) == wild
    assert result(backend.call("wamp.registration.match", "nothing")) is None
    details = result(backend.call("wamp.registration.get", shared))
    assert (details["id"], details["uri"], details["match"], details["invoke"]) == \
        (shared, "rpc.x", "exact", "roundrobin")
    assert result(backend.call("wamp.registration.list_callees", shared)) == \
        [one.session_id, two.session_id]
    assert result(backend.call("wamp.registration.count_callees", shared)) == 2
    assert result(backend.call("wamp.registration.list")) == \
        {"exact": [shared], "prefix": [prefix], "wildcard": [wild]}
    assert backend.call("wamp.registration.get", 1).error == "wamp.error.no_such_registration"


def test_registration_events(router):
    """on_create/on_register/on_unregister/on_delete, including when a callee leaves."""
    backend = router.join("backend")
    topics = ("on_create", "on_register", "on_unregister", "on_delete")
    meta = {t: backend.subscribe(f"wamp.registration.{t}") for t in topics}
    one, two = router.join("backend"), router.join("backend")
    registration = one.register("rpc.x", invoke="first")
    two.register("rpc.x", invoke="first")
    one.send(message.Unregister(70, registration))
    two.send(message.Goodbye("wamp.close.normal"))
    router.pump()
    ((creator, details),) = meta_events(backend, meta["on_create"])
    assert (creator, details["id"], details["invoke"]) == (one.session_id, registration, "first")
    assert meta_events(backend, meta["on_register"]) == \
        [[one.session_id, registration], [two.session_id, registration]]
    assert meta_events(backend, meta["on_unregister"]) == \
        [[one.session_id, registration], [two.session_id, registration]]
    assert meta_events(backend, meta["on_delete"]) == [[two.session_id, registration]]


def test_meta_api_subscriptions_cause_no_meta_events(router):
    """Subscribing to wamp.* topics is not itself announced (as in Crossbar)."""
    watcher, other = router.join("backend"), router.join("backend")
    on_create = watcher.subscribe("wamp.subscription.on_create")
    other.subscribe("wamp.session.on_join")
    other.subscribe("news.sports")
    assert [args[1]["uri"] for args in meta_events(watcher, on_create)] == ["news.sports"]


def test_a_leaving_session_gets_no_event_about_its_own_leaving(router):
    """Its own on_unsubscribe/on_leave would arrive after GOODBYE: a protocol error for it."""
    watcher = router.join("backend", "watcher")
    # plain topics on both sides of the meta ones: whatever order the broker drops them in,
    # some drop would come before the meta subscriptions' own
    for topic in ("news.a", "wamp.subscription.on_unsubscribe", "wamp.subscription.on_delete",
                  "wamp.session.on_leave", "news.b"):
        watcher.subscribe(topic)
    other = router.join("backend", "other")
    other.subscribe("wamp.subscription.on_unsubscribe")
    watcher.clear()
    watcher.send(message.Goodbye("wamp.close.normal"))
    router.pump()
    kinds = [type(m).__name__ for m in watcher.messages]
    assert kinds == ["Goodbye"], kinds
    # the others still hear about it
    assert any(isinstance(m, message.Event) for m in other.messages)
