"""A login's find-or-create is prepared once per connection, and survives losing it.

Real PostgreSQL, one connection, so that the session state asked about is the
one the store's statements ran on.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted

from wampchat.users.pool import PreparedStatement, make_pool
from wampchat.users.postgres import PostgresUserStore
from wampchat.users.store import EmailInUse
from tests.users.conftest import _reactor

NAME = "wampchat_find_or_create_user"


async def _prepared_on_server(pool) -> list[str]:
    rows = await pool.run_query("SELECT name FROM pg_prepared_statements ORDER BY name")
    return [name for (name,) in rows]


def _connection(pool):
    (connection,) = pool._connections
    return connection


def _sub() -> str:
    return str(uuid.uuid4())


def test_statement_text_numbers_the_parameters_and_keeps_percent_signs():
    statement = PreparedStatement("s", "SELECT %s || '%%', %s::text[] WHERE x LIKE 'a%%'")
    assert statement.execute == "EXECUTE s(%s, %s)"
    assert statement.prepare_and_execute == (
        "PREPARE s AS SELECT $1 || '%%', $2::text[] WHERE x LIKE 'a%%'; EXECUTE s(%s, %s)")


@pytest_twisted.ensureDeferred
async def test_first_login_prepares_and_later_ones_execute(one_connection):
    store = PostgresUserStore(one_connection)
    assert NAME not in await _prepared_on_server(one_connection)
    first, created = await store.find_or_create(_sub(), None, "ann", ("user",))
    assert created
    assert await _prepared_on_server(one_connection) == [NAME]
    connection = _connection(one_connection)
    assert connection.prepared == {NAME}
    sent = []
    rows = connection.rows
    connection.rows = lambda sql, *args: sent.append(sql) or rows(sql, *args)
    # Later calls: the prepared statement alone, for new and existing users alike.
    second, created = await store.find_or_create(_sub(), f"{_sub()}@example.org", None, ())
    assert created and second.id != first.id and second.roles == ()
    again, created = await store.find_or_create(first.keycloak_id, None, "ann", ("user",))
    assert not created and again == first
    assert sent == [f"EXECUTE {NAME}(%s, %s, %s, %s, %s)"] * 2
    assert await _prepared_on_server(one_connection) == [NAME]


@pytest_twisted.ensureDeferred
async def test_a_statement_dropped_on_the_server_is_prepared_again(one_connection):
    store = PostgresUserStore(one_connection)
    await store.find_or_create(_sub(), None, None, ())
    await one_connection.run_operation("DEALLOCATE ALL")      # e.g. a pooler's DISCARD ALL
    user, created = await store.find_or_create(_sub(), None, "bob", ("admin",))
    assert created and user.username == "bob" and user.roles == ("admin",)
    assert await _prepared_on_server(one_connection) == [NAME]


@pytest_twisted.ensureDeferred
async def test_a_statement_prepared_unbeknown_is_executed(one_connection):
    # PREPARE ran but its answer never arrived (the query timed out on our side).
    store = PostgresUserStore(one_connection)
    await store.find_or_create(_sub(), None, None, ())
    _connection(one_connection).prepared.clear()
    user, created = await store.find_or_create(_sub(), None, "cy", ())
    assert created and user.username == "cy"
    assert _connection(one_connection).prepared == {NAME}


@pytest_twisted.ensureDeferred
async def test_email_conflict_on_the_first_statement_of_a_connection(one_connection):
    store = PostgresUserStore(one_connection)
    email = f"{_sub()}@example.org"
    await store.find_or_create(_sub(), email, None, ())
    fresh = make_pool(_reactor(), one_connection._dsn, size=1)
    assert await fresh.start()
    try:
        with pytest.raises(EmailInUse):
            await PostgresUserStore(fresh).find_or_create(_sub(), email, None, ())
        # The failed first run left the statement prepared: the next login still works.
        user, created = await PostgresUserStore(fresh).find_or_create(_sub(), None, "dee", ())
        assert created and user.username == "dee"
    finally:
        fresh.close()
