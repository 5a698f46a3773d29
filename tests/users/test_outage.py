"""Database outages: Unavailable (never a driver error), cached users still served, pool recovery.

Sockets are real (a proxy we stop, a closed port, an embedded server we stop);
the reconnection backoff runs on a Clock, so each rebuild attempt happens when
the test says and can be checked with the database still down.
"""

from __future__ import annotations

import socket
import uuid

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock, deferLater
from txpostgres.txpostgres import Connection

from tests.users.conftest import Identity
from wampchat.dev.database import EmbeddedPostgres
from wampchat.errors import Unavailable
from wampchat.users.directory import UserDirectory
from wampchat.users.migrate import run_migrations
from wampchat.users.postgres import PoolState, PostgresUserStore, ResilientPool, reconnect_delay


def someone() -> Identity:
    sub = f"kc-{uuid.uuid4()}"
    return Identity(sub, f"{sub}@example.org", sub[:10])


def _reactor():
    from twisted.internet import reactor
    return reactor


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_backoff_doubles_up_to_the_maximum():
    """Rebuild delays grow 0.5, 1, 2, ... and stop growing at the maximum."""
    assert [reconnect_delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


@pytest_twisted.ensureDeferred
async def test_unreachable_database_refuses_with_unavailable_and_keeps_retrying():
    """A pool on a closed port is down, answers Unavailable, and retries on a growing backoff."""
    clock = Clock()
    pool = ResilientPool(_reactor(), f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres",
                         size=3, clock=clock)
    assert await pool.start() is False
    assert pool.state() == PoolState(connected=0, total=3, available=False, failed_attempts=1)
    with pytest.raises(Unavailable):
        await PostgresUserStore(pool).find_by_keycloak_id("anyone")
    assert [call.getTime() for call in clock.getDelayedCalls()] == [0.5]
    clock.advance(0.5)
    assert await pool.when_settled() is False
    assert pool.state().failed_attempts == 2
    assert [call.getTime() for call in clock.getDelayedCalls()] == [1.5]
    pool.close()
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_slow_statement_is_cut_by_statement_timeout(users_database):
    """A statement over statement_timeout fails with Unavailable; the pool stays up."""
    pool = ResilientPool(_reactor(), users_database, size=1, statement_timeout_ms=50)
    assert await pool.start()
    try:
        with pytest.raises(Unavailable):
            await pool.run_query("SELECT pg_sleep(5)")
        assert pool.state() == PoolState(connected=1, total=1, available=True, failed_attempts=0)
        assert await pool.run_query("SELECT 1") == [(1,)]
    finally:
        pool.close()


async def _outage_and_recovery(pool: ResilientPool, clock: Clock, take_down, bring_back) -> None:
    """The shared scenario: known user, outage, a failed rebuild, recovery, new user."""
    store = PostgresUserStore(pool)
    directory = UserDirectory(store, clock, ttl=30)
    known, newcomer = someone(), someone()
    user = await directory.login(known)
    assert pool.state().connected == pool.size

    await take_down()
    with pytest.raises(Unavailable):
        await store.find_by_keycloak_id(known.sub)
    assert pool.state().available is False

    clock.advance(31)          # past the TTL, and past the first rebuild delay
    assert await pool.when_settled() is False, "the database is still down"
    assert pool.state().failed_attempts == 1
    assert await directory.login(known) == user          # stale-if-error
    with pytest.raises(Unavailable):
        await directory.login(newcomer)

    await bring_back()
    clock.advance(reconnect_delay(1))
    assert await pool.when_settled() is True
    assert pool.state() == PoolState(pool.size, pool.size, True, 0)
    assert (await directory.login(newcomer)).keycloak_id == newcomer.sub
    await directory.close()


@pytest_twisted.ensureDeferred
async def test_pool_recovers_after_the_network_drops(proxy, users_database):
    """Connections reset and refused, then the database is back: the same pool serves again."""
    clock = Clock()
    pool = ResilientPool(_reactor(), proxy.dsn(users_database), size=3, clock=clock)
    assert await pool.start()

    async def bring_back():
        proxy.start()

    try:
        await _outage_and_recovery(pool, clock, proxy.stop, bring_back)
    finally:
        pool.close()


@pytest.fixture
def own_server():
    """An embedded PostgreSQL of this test's own, which it may stop and start."""
    server = EmbeddedPostgres()
    server.start()
    yield server
    server.close()


@pytest_twisted.ensureDeferred
async def test_pool_recovers_after_the_server_restarts(own_server):
    """The server shuts down (sessions terminated) and starts again: the pool reconnects."""
    await run_migrations(_reactor(), own_server.dsn)
    clock = Clock()
    pool = ResilientPool(_reactor(), own_server.dsn, size=2, clock=clock)
    assert await pool.start()

    async def take_down():
        own_server.stop()      # blocks the reactor for a moment, as a real outage would not

    async def bring_back():
        own_server.start()

    try:
        await _outage_and_recovery(pool, clock, take_down, bring_back)
    finally:
        pool.close()


async def _lock_users_table(dsn: str) -> Connection:
    """A connection holding ACCESS EXCLUSIVE on users: every query on it waits (a stalled DB)."""
    locker = Connection(_reactor())
    await locker.connect(dsn)
    await locker.runOperation("BEGIN")
    await locker.runOperation("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    return locker


@pytest_twisted.ensureDeferred
async def test_stalled_database_fails_logins_with_unavailable_and_bounds_the_queue(users_database):
    """Users table locked: 2 logins run into statement_timeout, 3 wait (max_waiting) and
    fail together the same way, 5 more are refused at once."""
    pool = ResilientPool(_reactor(), users_database, size=2, statement_timeout_ms=200,
                         max_waiting=3)
    assert await pool.start()
    store = PostgresUserStore(pool)
    directory = UserDirectory(store, _reactor())
    locker = await _lock_users_table(users_database)
    try:
        logins = [Deferred.fromCoroutine(directory.login(someone())) for _ in range(10)]
        outcomes = await DeferredList(logins, consumeErrors=True)
        failures = [result for ok, result in outcomes if not ok]
        assert len(failures) == 10
        assert all(failure.check(Unavailable) for failure in failures), failures
        messages = [failure.getErrorMessage() for failure in failures]
        assert sum("overloaded (3 logins waiting)" in m for m in messages) == 5
        assert sum("did not answer in time" in m for m in messages) == 5, messages
        assert store.refused_busy == 5 and pool.peak_waiting == 0
        assert pool.state() == PoolState(connected=2, total=2, available=True,
                                         failed_attempts=0, waiting=0)
    finally:
        await locker.runOperation("ROLLBACK")
        locker.close()
    try:
        newcomer = someone()
        assert (await directory.login(newcomer)).keycloak_id == newcomer.sub
    finally:
        await directory.close()
        pool.close()


@pytest_twisted.ensureDeferred
async def test_a_waiting_query_that_times_out_leaves_the_queue_and_never_runs(users_database):
    """Past its deadline a queued query is dropped: it is not sent once a connection frees up."""
    clock = Clock()
    pool = ResilientPool(_reactor(), users_database, size=1, clock=clock, query_timeout=5,
                         max_waiting=10)
    assert await pool.start()
    try:
        busy = Deferred.fromCoroutine(pool.run_query("SELECT pg_sleep(0.3)"))
        # Session state of the pool's only connection shows whether this ever ran.
        queued = Deferred.fromCoroutine(
            pool.run_query("SELECT set_config('wampchat.marker', 'ran', false)"))
        assert pool.state().waiting == 1
        clock.advance(5)                       # both deadlines pass
        for caller in (busy, queued):
            with pytest.raises(Unavailable, match="did not answer in time"):
                await caller
        assert pool.state().waiting == 0
        # Waits (really) for pg_sleep to end, then runs on the same connection.
        assert await pool.run_query("SELECT current_setting('wampchat.marker', true)") \
            in ([(None,)], [("",)])
    finally:
        pool.close()


@pytest_twisted.ensureDeferred
async def test_a_login_that_waited_past_its_deadline_is_never_sent(users_database):
    """The deadline of a waiting login counts from when it began to wait, not from when
    its batch starts: past it, the batch fails at once without reaching the database."""
    clock = Clock()
    pool = ResilientPool(_reactor(), users_database, size=1, clock=clock, query_timeout=5)
    assert await pool.start()
    store = PostgresUserStore(pool)
    locker = await _lock_users_table(users_database)
    try:
        first, late = someone(), someone()
        running = Deferred.fromCoroutine(store.find_or_create(first.sub, None, None, ()))
        clock.advance(3)
        waiting = Deferred.fromCoroutine(store.find_or_create(late.sub, None, None, ()))
        clock.advance(2)                # the first one's deadline: the late one's turn
        with pytest.raises(Unavailable, match="did not answer in time"):
            await running
        clock.advance(3)                # 5 s since the late one began to wait
        with pytest.raises(Unavailable, match="did not answer in time"):
            await waiting
    finally:
        await locker.runOperation("ROLLBACK")
        locker.close()
    try:
        # Once the table is free the first one's statement (already sent) completes; the
        # late one's never went out.
        for _ in range(50):
            if await store.find_by_keycloak_id(first.sub) is not None:
                break
            await deferLater(_reactor(), 0.05, lambda: None)
        assert await store.find_by_keycloak_id(first.sub) is not None
        assert await store.find_by_keycloak_id(late.sub) is None
    finally:
        pool.close()
