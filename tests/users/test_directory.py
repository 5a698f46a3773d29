"""UserDirectory: cache, shared lookups, write-behind and stale-if-error, on a Clock."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from tests.users.conftest import Identity
from wampchat.errors import Unavailable
from wampchat.users.directory import UserDirectory, authid_of
from wampchat.users.store import EmailInUse, MemoryUserStore


ALICE = Identity("sub-alice", "alice@example.org", "alice", ("offline_access", "user"))
BOB = Identity("sub-bob", "bob@example.org", "bob")


def result_of(coroutine):
    """The result of a coroutine that must already have finished (Clock and memory store)."""
    results = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert results, "still waiting"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


class GatedStore(MemoryUserStore):
    """A memory store whose lookups wait until the test opens the gate, to overlap logins."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: Deferred = Deferred()

    async def find_or_create(self, *args):
        await self.gate
        return await super().find_or_create(*args)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_900_000_000)     # 2030: timestamps that look like real ones
    return clock


@pytest.fixture
def store() -> MemoryUserStore:
    return MemoryUserStore()


@pytest.fixture
def directory(store, clock) -> UserDirectory:
    return UserDirectory(store, clock, ttl=30, max_size=3, touch_interval=60)


def test_first_login_provisions_and_logs(directory, store):
    """A new sub is looked up and created in one round trip; both log lines at info."""
    with capturedLogs() as events:
        user = result_of(directory.login(ALICE))
    assert (user.keycloak_id, user.email, user.username, user.roles) == \
        ("sub-alice", "alice@example.org", "alice", ("offline_access", "user"))
    texts = [e["log_format"].format(**e) for e in events]
    assert f"user with Keycloak ID sub-alice not found, provisioned as {user.id}" in texts
    assert (f"user alice@example.org ({user.id}, sub-alice) authenticated via Keycloak "
            "with roles ['offline_access', 'user']") in texts
    assert store.calls == 1


def test_reconnects_within_ttl_do_not_reach_the_store(directory, store, clock):
    """Logins within the TTL are answered by the cache; after it, the store is asked again."""
    first = result_of(directory.login(ALICE))
    for _ in range(100):
        assert result_of(directory.login(ALICE)) == first
    assert store.calls == 1
    clock.advance(30)
    result_of(directory.login(ALICE))
    assert store.calls == 2


def test_cache_is_bounded_least_recently_used_first(directory):
    """Past max_size the least recently used user is evicted."""
    for name in "abcd":
        result_of(directory.login(Identity(f"sub-{name}")))
    assert directory.cached("sub-a") is None
    assert [directory.cached(f"sub-{n}") is not None for n in "bcd"] == [True, True, True]


def test_known_users_are_served_from_cache_while_the_store_is_down(directory, store, clock):
    """Stale-if-error: a cached user logs in past its TTL; a new user gets Unavailable."""
    alice = result_of(directory.login(ALICE))
    clock.advance(3600)
    store.available = False
    with capturedLogs() as events:
        assert result_of(directory.login(ALICE)) == alice
        assert result_of(directory.login(ALICE)) == alice
        with pytest.raises(Unavailable):
            result_of(directory.login(BOB))
    warnings = [e for e in events if e["log_format"].startswith("user database unavailable")]
    assert len(warnings) == 1     # once per interval, not once per login


def test_email_in_use_is_refused_and_not_cached(directory, store):
    """A second account with a taken email is refused every time, with EmailInUse."""
    result_of(directory.login(ALICE))
    thief = Identity("sub-thief", ALICE.email)
    for _ in range(2):
        with pytest.raises(EmailInUse):
            result_of(directory.login(thief))
    assert directory.cached("sub-thief") is None


def test_concurrent_logins_of_a_new_user_share_one_lookup(clock):
    """50 overlapping first logins cause one find-or-create, and all get the row."""
    store = GatedStore()
    directory = UserDirectory(store, clock)
    logins = gatherResults([Deferred.fromCoroutine(directory.login(BOB)) for _ in range(50)])
    assert store.calls == 0 and directory.store_lookups == 1
    store.gate.callback(None)
    users = result_of(_await(logins))
    assert len({u.id for u in users}) == 1 and store.calls == 1


def test_a_failed_shared_lookup_fails_every_waiter(clock, no_logged_errors):
    """When the store is down, each overlapping login gets Unavailable, and nothing is left unhandled."""
    store = GatedStore()
    store.available = False
    directory = UserDirectory(store, clock)
    logins = [Deferred.fromCoroutine(directory.login(BOB)) for _ in range(3)]
    store.gate.callback(None)
    for login in logins:
        with pytest.raises(Unavailable):
            result_of(_await(login))


def test_last_login_is_written_behind_in_one_batch(directory, store, clock):
    """Many logins cause no write until touch_interval, then one batch with the latest times."""
    result_of(directory.login(ALICE))
    result_of(directory.login(BOB))
    clock.advance(10)
    for _ in range(20):
        result_of(directory.login(ALICE))
    calls = store.calls
    clock.advance(49)
    assert store.calls == calls
    clock.advance(1)
    assert store.calls == calls + 1
    expected = datetime.fromtimestamp(clock.seconds() - 50, timezone.utc)
    assert result_of(store.find_by_keycloak_id("sub-alice")).last_login_at == expected
    clock.advance(600)
    assert store.calls == calls + 2     # no timer runs while nobody logs in


def test_login_times_survive_an_outage_of_the_store(directory, store, clock):
    """A failed batch is kept and written at the next interval."""
    result_of(directory.login(ALICE))
    store.available = False
    clock.advance(60)
    store.available = True
    clock.advance(60)
    expected = datetime.fromtimestamp(clock.seconds() - 120, timezone.utc)
    assert result_of(store.find_by_keycloak_id("sub-alice")).last_login_at == expected


def test_close_writes_pending_logins_and_cancels_the_timer(directory, store, clock):
    """close() flushes at once and leaves no delayed call behind."""
    result_of(directory.login(ALICE))
    clock.advance(5)
    result_of(directory.login(ALICE))
    result_of(directory.close())
    assert clock.getDelayedCalls() == []
    expected = datetime.fromtimestamp(clock.seconds(), timezone.utc)
    assert result_of(store.find_by_keycloak_id("sub-alice")).last_login_at == expected


@pytest.mark.parametrize("identity, authid", [
    (Identity("s", "e@example.org", "u"), "e@example.org"),
    (Identity("s", None, "u"), "u"),
    (Identity("s", None, None), "s"),
])
def test_authid_falls_back_from_email_to_username_to_sub(identity, authid):
    """The authid is the email, else preferred_username, else sub."""
    assert authid_of(identity) == authid


@pytest_twisted.ensureDeferred
async def test_fifty_first_logins_on_five_nodes_make_one_row(pg_store, pg_pool):
    """Five directories (nodes) on one PostgreSQL: 50 simultaneous first logins, one row."""
    from twisted.internet import reactor
    nodes = [UserDirectory(pg_store, reactor) for _ in range(5)]
    identity = Identity(f"sub-{id(nodes)}-race", f"race-{id(nodes)}@example.org", "racer")
    users = await gatherResults([Deferred.fromCoroutine(nodes[i % 5].login(identity))
                                 for i in range(50)])
    assert len({u.id for u in users}) == 1
    rows = await pg_pool.run_query("SELECT count(*) FROM users WHERE keycloak_id = %s",
                                   (identity.sub,))
    assert rows == [(1,)]
    for node in nodes:
        await node.close()


async def _await(deferred):
    return await deferred
