"""Just-in-time users end to end: real WebSockets, the shipped config, real PostgreSQL.

Concurrent first logins make one row; a taken email is refused; reconnects of a
known user do not write per login; a database outage refuses new users with the
retryable reason, still serves cached ones, and the pool comes back by itself.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import replace

from psycopg2.extensions import make_dsn
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher

from tests.integration.dev_node import build_dev_node
from tests.integration.conftest import reactor, within
from tests.integration.test_keycloak_login import keycloak_node, login  # noqa: F401
from tests.users.conftest import (TcpProxy, no_logged_errors, postgres_server,  # noqa: F401
                                  proxy, query_rows, users_database)
from wampchat.dev.database import endpoint_description
from wampchat.dev.issuer import DevIssuer

UNAVAILABLE = "wampchat.error.unavailable"
AUTH_FAILED = "wamp.error.authentication_failed"


def newcomer(issuer: DevIssuer, email: str | None = None) -> tuple[str, str]:
    """(sub, token) of a user the database has never seen."""
    sub = f"kc-{uuid.uuid4()}"
    token = issuer.mint("alice", sub=sub, email=email or f"{sub}@example.org",
                        preferred_username=sub[:12])
    return sub, token


async def rows(dsn: str, sql: str, *params) -> list[tuple]:
    """Rows of one query, run by psycopg2 in a thread (never blocks the reactor)."""
    return await within(deferToThread(query_rows, dsn, sql, params), 10)


USER_ROW = ("SELECT id, keycloak_id, email, username, roles, created_at, last_login_at,"
            " xmin::text FROM users WHERE keycloak_id = %s")


@pytest_twisted.ensureDeferred
async def test_fifty_concurrent_first_logins_make_one_row(keycloak_node, users_database):
    """50 simultaneous first logins of one new user: 50 WELCOMEs, one user_id, one row."""
    port, issuer, node = keycloak_node
    sub, token = newcomer(issuer)
    results = await DeferredList([ensureDeferred(login(port, token)) for _ in range(50)],
                                 fireOnOneErrback=True, consumeErrors=True)
    outcomes = [result for _, result in results]
    assert [outcome for outcome, _ in outcomes] == ["welcome"] * 50, \
        [(o, getattr(d, "reason", None), getattr(d, "message", None)) for o, d in outcomes]
    user_ids = {details.authextra["user_id"] for _, details in outcomes}
    assert len(user_ids) == 1
    assert {details.authextra["keycloak_id"] for _, details in outcomes} == {sub}
    found = await rows(users_database, "SELECT id FROM users WHERE keycloak_id = %s", sub)
    assert found == [(user_ids.pop(),)]


@pytest_twisted.ensureDeferred
async def test_email_of_another_account_is_refused_and_changes_nothing(keycloak_node,
                                                                       users_database):
    """A new sub with an email already owned: ABORT authentication_failed, 'taken', no change."""
    port, issuer, node = keycloak_node
    owner_sub, owner_token = newcomer(issuer)
    outcome, details = await login(port, owner_token)
    assert outcome == "welcome", details
    email = details.authextra["email"]
    before = await rows(users_database, USER_ROW, owner_sub)

    intruder_sub, intruder_token = newcomer(issuer, email=email)
    outcome, details = await login(port, intruder_token)
    assert outcome == "abort"
    assert details.reason == AUTH_FAILED
    assert "taken" in details.message and email in details.message
    assert await rows(users_database, USER_ROW, owner_sub) == before
    assert await rows(users_database, USER_ROW, intruder_sub) == []
    assert await rows(users_database, "SELECT count(*) FROM users WHERE email = %s",
                      email) == [(1,)]


@pytest_twisted.ensureDeferred
async def test_known_user_reconnecting_does_not_write_per_login(keycloak_node, users_database):
    """20 reconnects: no INSERT, the row untouched (xmin), last_login_at never older."""
    port, issuer, node = keycloak_node
    sub, token = newcomer(issuer)
    outcome, details = await login(port, token)
    assert outcome == "welcome", details
    user_id = details.authextra["user_id"]
    [first] = await rows(users_database, USER_ROW, sub)

    for _ in range(20):
        outcome, details = await login(port, token)
        assert outcome == "welcome" and details.authextra["user_id"] == user_id, details

    after = await rows(users_database, USER_ROW, sub)
    assert len(after) == 1
    assert after[0][0] == first[0]
    # The same row version: no UPDATE (and no INSERT) per reconnect.
    assert after[0][7] == first[7]
    assert after[0][6] is not None and after[0][6] >= first[6] >= first[5]

    # The write-behind batch (normally every minute) then moves last_login_at, in one write.
    directory = node.transports[0].context.authenticators["ticket"]._users
    await within(ensureDeferred(directory.flush_logins()))
    [flushed] = await rows(users_database, USER_ROW, sub)
    assert flushed[0] == first[0] and flushed[6] > first[6]


def _node(dsn: str, issuer_url: str | None = None):
    """(port, issuer, node) of the shipped config on `dsn`; not started."""
    return build_dev_node(dsn, issuer_url=issuer_url)


@pytest_twisted.ensureDeferred
async def test_first_logins_racing_on_two_nodes_make_one_row(keycloak_node, users_database):
    """Two routers (two user caches) on one database: 2 x 25 first logins, one row."""
    port, issuer, node = keycloak_node
    other_port, _, other = _node(users_database, issuer_url=issuer.issuer)
    other.service.startService()
    try:
        await within(other.transports[0].ready)
        sub, token = newcomer(issuer)
        logins = [ensureDeferred(login(p, token)) for _ in range(25) for p in (port, other_port)]
        results = await DeferredList(logins, fireOnOneErrback=True, consumeErrors=True)
        outcomes = [result for _, result in results]
        assert [o for o, _ in outcomes] == ["welcome"] * 50, \
            [(o, getattr(d, "reason", None), getattr(d, "message", None)) for o, d in outcomes]
        user_ids = {details.authextra["user_id"] for _, details in outcomes}
        assert len(user_ids) == 1
        assert await rows(users_database, "SELECT id FROM users WHERE keycloak_id = %s",
                          sub) == [(user_ids.pop(),)]
    finally:
        await within(other.service.stopService(), 10)


@pytest_twisted.ensureDeferred
async def test_outage_refuses_new_users_serves_known_ones_and_recovers(users_database, proxy):
    """Database behind a proxy we stop: unavailable for newcomers, cache for known, recovery."""
    port, issuer, node = _node(proxy.dsn(users_database))
    migrated = Deferred()

    def observe(event):
        if event.get("log_format", "").startswith("database migrations") and not migrated.called:
            migrated.callback(event["log_format"])

    globalLogPublisher.addObserver(observe)
    node.service.startService()
    try:
        await within(node.transports[0].ready)
        # Start-up migrations use a connection of their own: let them finish before the outage.
        assert await within(migrated, 10) == "database migrations applied: {applied}"
        known_sub, known_token = newcomer(issuer)
        # The pool may still be connecting right after start: its first login waits for it.
        outcome, details = await login(port, known_token)
        assert outcome == "welcome", details
        known_id = details.authextra["user_id"]

        await within(proxy.stop())
        _, stranger_token = newcomer(issuer)
        outcome, details = await login(port, stranger_token)
        assert outcome == "abort"
        assert details.reason == UNAVAILABLE, (details.reason, details.message)

        outcome, details = await login(port, issuer.mint("alice", sub=known_sub,
                                                         email=f"{known_sub}@example.org",
                                                         preferred_username=known_sub[:12]))
        assert outcome == "welcome" and details.authextra["user_id"] == known_id, details

        proxy.start()
        late_sub, late_token = newcomer(issuer)
        deadline = reactor().seconds() + 20
        while True:
            outcome, details = await login(port, late_token)
            if outcome == "welcome" or reactor().seconds() > deadline:
                break
            assert details.reason == UNAVAILABLE, (details.reason, details.message)
            await deferLater(reactor(), 0.25, lambda: None)
        assert outcome == "welcome", (details.reason, details.message)
        assert details.authextra["keycloak_id"] == late_sub
        assert await rows(users_database, "SELECT id FROM users WHERE keycloak_id = %s",
                          late_sub) == [(details.authextra["user_id"],)]
    finally:
        globalLogPublisher.removeObserver(observe)
        await within(node.service.stopService(), 10)


@pytest_twisted.ensureDeferred
async def test_node_waits_for_a_black_holed_database_loudly_then_comes_up(users_database,
                                                                         no_logged_errors):
    """The database address accepts and never answers: each start-up attempt logs an error
    and the node does not listen; once the database answers there, the node comes up."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    hole_port = hole.getsockname()[1]
    port, issuer, node = build_dev_node(
        make_dsn(users_database, host="127.0.0.1", port=hole_port),
        transform=lambda c: replace(c, database=replace(c.database, connect_timeout=0.3)))
    failed_attempts = []
    second_failure = Deferred()

    def observe(event):
        if "not listening yet" in (event.get("log_format") or ""):
            failed_attempts.append(formatEvent(event))
            if len(failed_attempts) == 2:
                second_failure.callback(None)

    globalLogPublisher.addObserver(observe)
    proxy = TcpProxy(reactor(), endpoint_description(users_database))
    node.service.startService()
    try:
        await within(second_failure, 20)
        assert not node.transports[0].ready.called
        assert "no answer from the user database at 127.0.0.1:" in failed_attempts[0]
        assert "within 0.3s" in failed_attempts[0]

        hole.close()                       # the database "arrives" at that address
        proxy.port = hole_port
        proxy.start()
        await within(node.transports[0].ready, 30)
        sub, token = newcomer(issuer)
        deadline = reactor().seconds() + 20
        while True:                        # the pool reconnects on its own backoff
            outcome, details = await login(port, token)
            if outcome == "welcome" or reactor().seconds() > deadline:
                break
            assert details.reason == UNAVAILABLE, (details.reason, details.message)
            await deferLater(reactor(), 0.25, lambda: None)
        assert outcome == "welcome", (details.reason, details.message)
        assert details.authextra["keycloak_id"] == sub
    finally:
        globalLogPublisher.removeObserver(observe)
        hole.close()
        await within(node.service.stopService(), 10)
        if proxy.listening:
            await within(proxy.stop())
        # The start-up errors are what this test expects; anything else still fails it.
        no_logged_errors[:] = [e for e in no_logged_errors
                               if "not listening yet" not in (e.get("log_format") or "")]
