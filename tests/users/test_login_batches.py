"""Logins that arrive while the database is busy go together as one statement.

The Coalescer alone with Deferreds the test fires; then the PostgreSQL store on a
real database, with a pool of one connection so that logins queue behind each other.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from txpostgres.txpostgres import Connection

from wampchat.users.batching import Coalescer
from wampchat.users.postgres import PostgresUserStore
from wampchat.users.store import EmailInUse
from tests.users.conftest import _reactor


class _Batches:
    """A run_batch whose batches the test answers by hand."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, Deferred]] = []

    def __call__(self, items: list) -> Deferred:
        answer: Deferred = Deferred()
        self.calls.append((items, answer))
        return answer

    def sizes(self) -> list[int]:
        return [len(items) for items, _ in self.calls]


def _results(deferreds):
    out = []
    for d in deferreds:
        d.addBoth(out.append)
    return out


def test_a_free_slot_runs_the_item_at_once_and_busy_slots_gather_the_rest():
    batches = _Batches()
    coalescer = Coalescer(batches, limit=2)
    results = _results([coalescer.submit(n) for n in range(7)])
    assert batches.sizes() == [1, 1] and coalescer.queued == 5
    batches.calls[0][1].callback(["r0"])
    # The five waiting went together the moment a slot freed, before callers ran.
    assert batches.sizes() == [1, 1, 5] and coalescer.queued == 0
    assert results == ["r0"]
    batches.calls[2][1].callback([f"r{n}" for n in range(2, 7)])
    batches.calls[1][1].callback(["r1"])
    assert sorted(results) == [f"r{n}" for n in range(7)]
    assert coalescer.batches == 3 and coalescer.largest_batch == 5


def test_max_batch_splits_what_waits():
    batches = _Batches()
    coalescer = Coalescer(batches, limit=1, max_batch=3)
    _results([coalescer.submit(n) for n in range(8)])
    batches.calls[0][1].callback([0])
    assert batches.sizes() == [1, 3] and coalescer.queued == 4
    batches.calls[1][1].callback([1, 2, 3])
    batches.calls[2][1].callback([4, 5, 6])
    assert batches.sizes() == [1, 3, 3, 1]


def test_outcomes_are_per_item_and_a_raising_batch_fails_every_item():
    batches = _Batches()
    coalescer = Coalescer(batches, limit=1)
    results = _results([coalescer.submit(n) for n in range(4)])
    batches.calls[0][1].callback(["ok"])
    batches.calls[1][1].callback(["a", ValueError("only b"), "c"])
    assert results[:2] == ["ok", "a"]
    assert results[2].check(ValueError) and str(results[2].value) == "only b"
    assert results[3] == "c"
    more = _results([coalescer.submit(n) for n in range(2)])
    batches.calls[2][1].errback(RuntimeError("database gone"))
    assert more[0].check(RuntimeError)
    batches.calls[3][1].callback(["x", "y"])     # a miscounted answer fails the batch too
    assert more[1].check(RuntimeError) and "2 outcomes for a batch of 1" in str(more[1].value)


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        Coalescer(_Batches(), limit=0)


# -- the store on PostgreSQL --------------------------------------------------------------

def _sub() -> str:
    return str(uuid.uuid4())


def _logins(store, logins):
    return [Deferred.fromCoroutine(store.find_or_create(*login)) for login in logins]


@pytest_twisted.ensureDeferred
async def test_a_storm_of_first_logins_costs_a_few_statements(one_connection):
    store = PostgresUserStore(one_connection)
    known, _ = await store.find_or_create(_sub(), None, "known", ("user",))
    logins = [(_sub(), f"{_sub()}@example.org", f"u{n}", ("user",) * (n % 3)) for n in range(30)]
    logins.insert(10, (known.keycloak_id, None, "known", ("user",)))
    # The same new user twice in the batch (its first login's claims are stored).
    logins.append((logins[20][0], logins[20][1], "same sub, later claims", ()))
    outcomes = await gatherResults(_logins(store, logins))
    assert store._logins.batches == 1 + 2 and store._logins.largest_batch == 31
    users = [user for user, _ in outcomes]
    assert [created for _, created in outcomes] == [True] * 10 + [False] + [True] * 20 + [False]
    assert users[10] == known and users[31] == users[20] and users[20].username == "u19"
    logins.pop()
    users.pop()
    for (sub, email, username, roles), user in zip(logins, users):
        assert (user.keycloak_id, user.username, user.roles) == (sub, username, roles)
        if user is not known:
            assert user.email == email and user.last_login_at is not None
    assert len({user.id for user in users}) == 31
    # Stored as returned.
    for user in users:
        assert await store.find_by_keycloak_id(user.keycloak_id) == user


@pytest_twisted.ensureDeferred
async def test_two_login_statements_run_at_once_on_a_larger_pool(pg_pool):
    # Five connections, yet the first two logins go alone and the other 28 wait for one
    # of them and go together: two statements in flight, not pool_size.
    store = PostgresUserStore(pg_pool)
    logins = [(_sub(), f"{_sub()}@example.org", f"u{n}", ("user",)) for n in range(30)]
    outcomes = await gatherResults(_logins(store, logins))
    assert [created for _, created in outcomes] == [True] * 30
    assert store._logins.batches == 3 and store._logins.largest_batch == 28
    assert PostgresUserStore(pg_pool, login_statements=5)._logins._limit == 5
    assert PostgresUserStore(pg_pool, login_statements=9)._logins._limit == 5   # pool size


@pytest_twisted.ensureDeferred
async def test_one_taken_email_refuses_only_its_logins(one_connection):
    store = PostgresUserStore(one_connection)
    taken = f"{_sub()}@example.org"
    await store.find_or_create(_sub(), taken, None, ())
    shared = f"{_sub()}@example.org"
    same_user = _sub()
    logins = [(_sub(), None, "first", ()),                # runs alone
              (_sub(), taken, "thief", ()),               # an email stored already
              (_sub(), shared, "early", ()),              # two new users, one email
              (same_user, None, "twice", ()),
              (_sub(), shared, "late", ()),
              (same_user, None, "twice", ()),
              (_sub(), None, "bystander", ("user",))]
    outcomes = await DeferredList(_logins(store, logins), consumeErrors=True)
    refused = [ok is False and result.check(EmailInUse) is not None for ok, result in outcomes]
    assert refused == [False, True, False, False, True, False, False]
    by_name = {result[0].username: result for ok, result in outcomes if ok}
    assert set(by_name) == {"first", "early", "twice", "bystander"}
    assert by_name["early"][0].email == shared and by_name["bystander"][0].roles == ("user",)
    # The same user twice: one row, reported as created once.
    twice = [result for (ok, result), login in zip(outcomes, logins) if login[0] == same_user]
    assert twice[0][0] == twice[1][0] and sorted(c for _, c in twice) == [False, True]
    assert await store.find_by_keycloak_id(logins[1][0]) is None


@pytest_twisted.ensureDeferred
async def test_a_user_created_by_another_statement_during_the_batch_is_found(
        one_connection, users_database):
    store = PostgresUserStore(one_connection)
    racing = _sub()
    other = Connection(_reactor())
    await other.connect(users_database)
    try:
        await other.runOperation("BEGIN")
        await other.runOperation(
            "INSERT INTO users (keycloak_id, username, roles) VALUES (%s, 'elsewhere', '{}')",
            (racing,))
        logins = _logins(store, [(_sub(), None, "alone", ()), (racing, None, "racing", ()),
                                 (_sub(), None, "next", ())])
        # The batch [racing, next] waits on the uncommitted row of the same keycloak_id.
        await logins[0]
        await other.runOperation("COMMIT")
        (raced, raced_created), (nxt, _) = await gatherResults(logins[1:])
    finally:
        other.close()
    assert store._logins.largest_batch == 2
    assert raced.username == "elsewhere" and not raced_created
    assert nxt.username == "next"
