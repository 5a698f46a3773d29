"""Realm.reload_permissions: new roles and rows apply at once; sessions stay unless their role went."""

from __future__ import annotations

from autobahn.wamp import message

from tests.router.harness import DEFAULT_REALM, REALM, RouterHarness
from wampchat import errors
from wampchat.config_types import PermissionConfig as P, RealmConfig, RoleConfig


def test_narrowed_role_loses_what_it_may_no_longer_hold():
    harness = RouterHarness()
    user = harness.join("user", "alice")
    user.subscribe("chat.main")
    user.subscribe("news.daily")
    backend = harness.join("backend", "svc")
    backend.register("svc.echo")
    narrowed = RealmConfig(REALM, roles=(
        RoleConfig("user", (P("chat.main", subscribe=True),)),
        next(role for role in DEFAULT_REALM.roles if role.name == "backend")))
    report = harness.realm.reload_permissions(narrowed)
    harness.pump()
    assert report == {"roles": 2, "subscriptions": 1, "registrations": 0, "ended": 0}
    assert user.is_open and backend.is_open
    subscribers = {s.uri: list(s.subscribers) for s in harness.realm.broker.all()}
    assert subscribers.get("news.daily", []) == []
    reply = user._ask(message.Subscribe(user.request(), "news.weekly"))
    assert reply.error == errors.NOT_AUTHORIZED


def test_removed_role_ends_its_sessions_only():
    harness = RouterHarness()
    admin = harness.join("admin", "root")
    user = harness.join("user", "alice")
    without_admin = RealmConfig(REALM, roles=tuple(
        role for role in DEFAULT_REALM.roles if role.name != "admin"))
    report = harness.realm.reload_permissions(without_admin)
    harness.pump()
    assert report["ended"] == 1
    goodbye = admin.received(message.Goodbye)[0]
    assert goodbye.reason == errors.CLOSE_KILLED
    assert user.is_open and not user.received(message.Goodbye)
