"""The UserStore contract, run against MemoryUserStore and PostgresUserStore on a real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from wampchat.errors import Unavailable
from wampchat.users.postgres import PostgresUserStore, make_pool
from wampchat.users.store import EmailInUse, MemoryUserStore, UserStore, email_taken_message

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(params=["memory", "postgres"])
def store(request) -> UserStore:
    if request.param == "memory":
        return MemoryUserStore()
    return request.getfixturevalue("pg_store")


def new_id() -> str:
    """A keycloak_id (and email stem) no other test uses: the session database is shared."""
    return f"kc-{uuid.uuid4()}"


def in_parallel(calls) -> Deferred:
    return gatherResults([Deferred.fromCoroutine(call) for call in calls], consumeErrors=True)


def test_both_stores_provide_the_protocol(pg_store):
    """Both implementations satisfy the runtime-checkable protocol."""
    assert isinstance(MemoryUserStore(), UserStore)
    assert isinstance(pg_store, UserStore)


@pytest_twisted.ensureDeferred
async def test_unknown_user_is_none(store):
    """Looking up a keycloak_id never seen answers None."""
    assert await store.find_by_keycloak_id(new_id()) is None


@pytest_twisted.ensureDeferred
async def test_first_login_creates_the_row_and_second_reuses_it(store):
    """create_or_get stores email, username and roles; a second call returns the same row."""
    sub = new_id()
    created = await store.create_or_get(sub, f"{sub}@example.org", "alice", ["user", "chat"])
    assert (created.keycloak_id, created.email, created.username, created.roles) == \
        (sub, f"{sub}@example.org", "alice", ("user", "chat"))
    assert created.created_at is not None and created.last_login_at is not None
    again = await store.create_or_get(sub, "other@example.org", "renamed", [])
    assert again == created
    assert await store.find_by_keycloak_id(sub) == created


@pytest_twisted.ensureDeferred
async def test_users_without_email_do_not_conflict(store):
    """Several accounts without email can exist (NULLs are never equal)."""
    first = await store.create_or_get(new_id(), None, "svc-a", [])
    second = await store.create_or_get(new_id(), None, "svc-b", [])
    assert first.id != second.id and first.email is None and second.email is None


@pytest_twisted.ensureDeferred
async def test_email_of_another_account_is_refused_and_changes_nothing(store):
    """An email owned by a different keycloak_id raises EmailInUse; no row is created or changed."""
    owner, intruder = new_id(), new_id()
    email = f"{owner}@example.org"
    original = await store.create_or_get(owner, email, "owner", ["user"])
    with pytest.raises(EmailInUse) as refused:
        await store.create_or_get(intruder, email, "intruder", ["admin"])
    assert str(refused.value) == email_taken_message(email)
    assert refused.value.message().startswith("email_in_use: ")
    assert await store.find_by_keycloak_id(intruder) is None
    assert await store.find_by_keycloak_id(owner) == original


@pytest_twisted.ensureDeferred
async def test_fifty_simultaneous_first_logins_get_one_row(store):
    """50 concurrent create_or_get of the same new user all succeed with the same row."""
    sub = new_id()
    users = await in_parallel(store.create_or_get(sub, f"{sub}@example.org", "bob", ["user"])
                              for _ in range(50))
    assert len({user.id for user in users}) == 1
    assert await store.find_by_keycloak_id(sub) == users[0]


@pytest_twisted.ensureDeferred
async def test_find_or_create_creates_once_and_never_changes_an_existing_row(store):
    """find_or_create: (new row, True) the first time, then (that row, False) whatever the
    token now says; an email of another account is refused and creates nothing."""
    sub = new_id()
    created, was_created = await store.find_or_create(sub, f"{sub}@example.org", "carol", ["user"])
    assert was_created is True
    assert (created.keycloak_id, created.email, created.username, created.roles) == \
        (sub, f"{sub}@example.org", "carol", ("user",))
    again, was_created = await store.find_or_create(sub, "new@example.org", "renamed", ["admin"])
    assert (again, was_created) == (created, False)
    assert await store.create_or_get(sub, None, None, []) == created
    intruder = new_id()
    with pytest.raises(EmailInUse):
        await store.find_or_create(intruder, f"{sub}@example.org", "intruder", [])
    assert await store.find_by_keycloak_id(intruder) is None


@pytest_twisted.ensureDeferred
async def test_find_or_create_of_an_existing_user_inserts_nothing(store):
    """Logging in again writes nothing: not even an id is drawn from the sequence."""
    first, _ = await store.find_or_create(new_id(), None, "erin", [])
    for _ in range(5):
        assert (await store.find_or_create(first.keycloak_id, None, "erin", []))[1] is False
    second, _ = await store.find_or_create(new_id(), None, "frank", [])
    assert second.id == first.id + 1


@pytest_twisted.ensureDeferred
async def test_fifty_simultaneous_find_or_create_get_one_row_created_once(store):
    """50 concurrent first logins of one user: one row, reported as created exactly once."""
    sub = new_id()
    answers = await in_parallel(store.find_or_create(sub, f"{sub}@example.org", "dan", ["user"])
                                for _ in range(50))
    assert len({user.id for user, _ in answers}) == 1
    assert sum(created for _, created in answers) == 1


@pytest_twisted.ensureDeferred
async def test_touch_logins_moves_forward_only(store):
    """touch_logins sets last_login_at in one batch, ignores older times and unknown ids."""
    a, b = new_id(), new_id()
    await store.create_or_get(a, None, "a", [])
    await store.create_or_get(b, None, "b", [])
    await store.touch_logins({a: T0, b: T0 + timedelta(seconds=5), new_id(): T0})
    await store.touch_logins({a: T0 - timedelta(days=1)})
    await store.touch_logins({})
    assert (await store.find_by_keycloak_id(a)).last_login_at == T0
    assert (await store.find_by_keycloak_id(b)).last_login_at == T0 + timedelta(seconds=5)


@pytest.fixture(params=["memory", "postgres"])
def down_store(request, unused_tcp_port) -> UserStore:
    """A store whose database cannot be reached."""
    if request.param == "memory":
        store = MemoryUserStore()
        store.available = False
        yield store
        return
    from twisted.internet import reactor
    pool = make_pool(reactor, f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/postgres")
    assert pytest_twisted.blockon(pool.start()) is False
    yield PostgresUserStore(pool)
    pool.close()


@pytest.fixture
def unused_tcp_port() -> int:
    """A port nothing listens on (bound, read, released)."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_every_call_raises_unavailable_when_the_database_is_down(down_store):
    """Each method fails with the retryable Unavailable, never a driver error."""
    calls = [down_store.find_by_keycloak_id("x"),
             down_store.create_or_get("x", "x@example.org", "x", []),
             down_store.touch_logins({"x": T0})]
    for call in calls:
        with pytest.raises(Unavailable) as failure:
            await call
        assert failure.value.retryable and failure.value.uri == "wampchat.error.unavailable"
