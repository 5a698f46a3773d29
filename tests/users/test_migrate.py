"""Migrations on a real, empty PostgreSQL: from empty, re-run, two nodes at once, a failing one."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from txpostgres.txpostgres import Connection

from wampchat.errors import Unavailable
from wampchat.users.migrate import Migration, MigrationFailed, load_migrations, run_migrations


def _reactor():
    from twisted.internet import reactor
    return reactor


async def query(dsn: str, sql: str, params=()):
    connection = Connection(_reactor())
    await connection.connect(dsn)
    try:
        return await connection.runQuery(sql, params)
    finally:
        connection.close()


def test_shipped_migrations_are_ordered_and_start_with_users():
    """The package ships NNNN_name.sql files, versions unique and in order."""
    migrations = load_migrations()
    assert migrations[0].name == "0001_users"
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})


@pytest_twisted.ensureDeferred
async def test_from_empty_then_again_changes_nothing(fresh_database):
    """The first run applies every migration and records it; the second applies none."""
    names = [m.name for m in load_migrations()]
    assert await run_migrations(_reactor(), fresh_database) == names
    assert await run_migrations(_reactor(), fresh_database) == []
    recorded = await query(fresh_database, "SELECT name FROM schema_migrations ORDER BY version")
    assert [row[0] for row in recorded] == names


@pytest_twisted.ensureDeferred
async def test_users_table_matches_the_spec(fresh_database):
    """users has the columns and unique constraints of SPEC §4."""
    await run_migrations(_reactor(), fresh_database)
    columns = await query(fresh_database,
                          "SELECT column_name, data_type, is_nullable, is_identity"
                          " FROM information_schema.columns WHERE table_name = 'users'"
                          " ORDER BY ordinal_position")
    assert columns == [
        ("id", "bigint", "NO", "YES"),
        ("keycloak_id", "text", "NO", "NO"),
        ("email", "text", "YES", "NO"),
        ("username", "text", "YES", "NO"),
        ("roles", "ARRAY", "NO", "NO"),
        ("created_at", "timestamp with time zone", "NO", "NO"),
        ("last_login_at", "timestamp with time zone", "YES", "NO"),
    ]
    unique = await query(fresh_database,
                         "SELECT conname FROM pg_constraint WHERE conrelid = 'users'::regclass"
                         " AND contype = 'u' ORDER BY conname")
    assert unique == [("users_email_key",), ("users_keycloak_id_key",)]


@pytest_twisted.ensureDeferred
async def test_two_nodes_migrating_an_empty_database_at_once_both_come_up(fresh_database):
    """Concurrent migrators both succeed and each version is applied exactly once."""
    runs = await gatherResults([Deferred.fromCoroutine(run_migrations(_reactor(), fresh_database))
                                for _ in range(2)])
    # Each version is its own transaction, so the two may share the work between them.
    assert sorted(runs[0] + runs[1]) == [m.name for m in load_migrations()]


@pytest_twisted.ensureDeferred
async def test_a_failing_migration_is_rolled_back_and_not_recorded(fresh_database):
    """A refused migration raises MigrationFailed; its earlier statements are undone."""
    bad = Migration("9001", "9001_broken",
                    "CREATE TABLE half_done (x int); SELECT no_such_column FROM half_done;")
    with pytest.raises(MigrationFailed, match="9001_broken"):
        await run_migrations(_reactor(), fresh_database, [*load_migrations(), bad])
    assert await query(fresh_database, "SELECT to_regclass('half_done')") == [(None,)]
    recorded = await query(fresh_database, "SELECT version FROM schema_migrations ORDER BY version")
    assert recorded == [(m.version,) for m in load_migrations()]


@pytest_twisted.ensureDeferred
async def test_unreachable_database_is_unavailable(fresh_database):
    """Migrating against a server that does not answer raises Unavailable."""
    with pytest.raises(Unavailable):
        await run_migrations(_reactor(), "postgresql://postgres@127.0.0.1:1/postgres")


@pytest_twisted.ensureDeferred
async def test_connection_cut_during_a_migration_is_unavailable_and_logs_no_error(fresh_database):
    """The backend is terminated mid-migration: Unavailable, nothing recorded, no unhandled error.

    (txpostgres' runInteraction would roll back on the dead cursor and log
    "cursor already closed" as an unhandled error.)
    """
    slow = Migration("9002", "9002_slow", "CREATE TABLE slow_done (x int); SELECT pg_sleep(30);")
    running = Deferred.fromCoroutine(
        run_migrations(_reactor(), fresh_database, [*load_migrations(), slow]))
    sleeping = []
    for _ in range(500):
        sleeping = await query(fresh_database,
                               "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                               " AND query LIKE %s AND pid <> pg_backend_pid()",
                               ("%pg_sleep(30)%",))
        if sleeping:
            break
        await deferLater(_reactor(), 0.01, lambda: None)
    assert len(sleeping) == 1
    assert await query(fresh_database, "SELECT pg_terminate_backend(%s)", sleeping[0]) == [(True,)]
    with pytest.raises(Unavailable, match="unavailable|lost"):
        await running
    assert await query(fresh_database, "SELECT to_regclass('slow_done')") == [(None,)]
    recorded = await query(fresh_database, "SELECT version FROM schema_migrations ORDER BY version")
    assert recorded == [(m.version,) for m in load_migrations()]
    assert await run_migrations(_reactor(), fresh_database) == []
