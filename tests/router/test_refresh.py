"""wampchat.session.refresh: new deadline and identity; a role change drops what is forbidden."""

import wampchat  # noqa: F401
from autobahn.wamp import message

from tests.router.harness import LEEWAY, RouterHarness, ticket_for
from wampchat.config_types import PermissionConfig, RealmConfig, RoleConfig

REFRESH = "wampchat.session.refresh"


def test_refresh_returns_the_new_exp_and_moves_the_deadline(router):
    """refresh returns {"status": "ok", "expires_at": exp}; the session lives to exp + leeway."""
    router.clock.advance(1000)
    alice = router.join(authid="alice", exp=1300)
    router.clock.advance(200)
    reply = alice.call(REFRESH, ticket_for("user", "alice", 2000))
    assert isinstance(reply, message.Result), reply.error
    assert reply.args == [{"status": "ok", "expires_at": 2000}]
    router.clock.advance(1300 + LEEWAY - 1200)          # the old deadline passes
    router.pump()
    assert alice.is_open and not alice.received(message.Goodbye)
    router.clock.advance(2000 + LEEWAY - router.clock.seconds() - 1)
    router.pump()
    assert alice.is_open
    router.clock.advance(1)
    router.pump()
    assert alice.received(message.Goodbye)[0].reason == "wampchat.close.token_expired"


def test_refresh_accepts_the_token_as_keyword(router):
    """refresh(token=...) works like the positional form and updates authextra."""
    alice = router.join(authid="alice", exp=500)
    new_ticket = ticket_for("user", "alice", 900)
    assert alice.call(REFRESH, token=new_ticket).args[0]["expires_at"] == 900
    session = router.realm.sessions[alice.session_id]
    assert session.authextra == {"ticket": new_ticket}


def test_refresh_for_another_subject_is_refused_and_changes_nothing(router):
    """A ticket for another authid gets ERROR authentication_failed; the old deadline stands."""
    alice = router.join(authid="alice", exp=100)
    reply = alice.call(REFRESH, ticket_for("user", "mallory", 5000))
    assert reply.error == "wamp.error.authentication_failed"
    assert router.realm.sessions[alice.session_id].authid == "alice"
    router.clock.advance(100 + LEEWAY)
    router.pump()
    assert alice.received(message.Goodbye)[0].reason == "wampchat.close.token_expired"


def test_refresh_with_a_bad_argument(router):
    """A token that is not a non-empty string gets ERROR invalid_argument before any check."""
    alice = router.join()
    assert alice.call(REFRESH).error == "wamp.error.invalid_argument"
    assert alice.call(REFRESH, 42).error == "wamp.error.invalid_argument"
    assert router.authenticator.refreshes == 0


def test_refresh_to_a_role_the_realm_lacks_is_refused(router):
    """A ticket mapping to an unknown role gets ERROR not_authorized; the role stays."""
    alice = router.join(authid="alice")
    assert alice.call(REFRESH, ticket_for("ghost", "alice")).error == "wamp.error.not_authorized"
    assert router.realm.sessions[alice.session_id].authrole == "user"


def test_role_change_removes_forbidden_subscriptions(router):
    """admin -> user: chat.admin is unsubscribed (meta event too), chat.main stays."""
    backend = router.join("backend")
    on_unsubscribe = backend.subscribe("wamp.subscription.on_unsubscribe")
    carol, other_admin = router.join("admin", authid="carol"), router.join("admin")
    secret = carol.subscribe("chat.admin")
    carol.subscribe("chat.main")
    reply = carol.call(REFRESH, ticket_for("user", "carol", 10_000))
    assert isinstance(reply, message.Result)
    assert router.realm.sessions[carol.session_id].authrole == "user"
    assert [e.args for e in backend.received(message.Event)
            if e.subscription == on_unsubscribe] == [[carol.session_id, secret]]
    other_admin.send(message.Publish(1, "chat.admin", args=["secret"]))
    other_admin.send(message.Publish(2, "chat.main", args=["public"]))
    router.pump()
    assert [e.args for e in carol.received(message.Event)] == [["public"]]
    details = backend.call("wamp.session.get", carol.session_id).args[0]
    assert details["authrole"] == "user"


def test_role_change_removes_forbidden_registrations(router):
    """backend -> user: the registrations a user may not hold are removed."""
    service, caller = router.join("backend", authid="svc"), router.join("backend")
    service.register("rpc.x")
    assert isinstance(service.call(REFRESH, ticket_for("user", "svc")), message.Result)
    assert caller.call("rpc.x").error == "wamp.error.no_such_procedure"


def test_refresh_needs_permission(router):
    """A role without a permission row for the procedure gets ERROR not_authorized."""
    locked = RouterHarness(RealmConfig("wampchat", roles=(
        RoleConfig("user", (PermissionConfig("chat.main", subscribe=True),)),)))
    alice = locked.join(authid="alice")
    assert alice.call(REFRESH, ticket_for("user", "alice")).error == "wamp.error.not_authorized"
    assert locked.authenticator.refreshes == 0
