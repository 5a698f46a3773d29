"""Schema migrations: the versioned SQL files in wampchat/users/migrations, applied in order.

Each migration runs in a transaction of its own and is recorded in
`schema_migrations` in that same transaction, so a failure leaves no half
applied version. Every transaction first takes one transaction-scoped advisory
lock shared by all nodes: two nodes started at once on an empty database
apply each version exactly once and both come up. Running again changes nothing.

Transactions are driven here (BEGIN/COMMIT on a cursor) rather than by
txpostgres' runInteraction: when the connection is cut mid-migration, its
rollback on the dead cursor fails and txpostgres logs that as an unhandled
error. Here a cut connection is simply `Unavailable` (the server has rolled
the transaction back anyway). Connecting has a deadline of its own, because
psycopg2's asynchronous connect ignores connect_timeout: a database address
that accepts and never answers would otherwise hang start-up forever.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Sequence

from psycopg2 import Error as DriverError, InterfaceError, OperationalError
from psycopg2.extensions import parse_dsn
from txpostgres.txpostgres import Connection

from wampchat.errors import Unavailable
from wampchat.logs import Logger

log = Logger()

# Advisory lock key held by whoever migrates; any constant works if every node
# agrees on it. These are the bytes "wampchat" read as a signed 64-bit integer.
MIGRATION_LOCK_KEY = int.from_bytes(b"wampchat", "big", signed=True)

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    """One SQL file: `version` "0001", `name` "0001_users", and its text."""

    version: str
    name: str
    sql: str


class MigrationFailed(Exception):
    """A migration's SQL was refused by the database; nothing of that version was applied."""

    def __init__(self, name: str, cause: str) -> None:
        super().__init__(f"migration {name} failed: {cause}")
        self.name = name


def load_migrations() -> tuple[Migration, ...]:
    """The migrations shipped in the package, ordered by version.

    Raises ValueError for a badly named file or a version used twice, so a
    mistake is found by the tests, not by a node in production.
    """
    folder = resources.files("wampchat.users").joinpath("migrations")
    found: dict[str, Migration] = {}      # version -> Migration
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name} is not named NNNN_name.sql")
        version = match.group(1)
        if version in found:
            raise ValueError(f"migration version {version} is used by two files")
        found[version] = Migration(version, entry.name[:-4], entry.read_text(encoding="utf-8"))
    return tuple(found[version] for version in sorted(found))


async def migrate(connection: Connection,
                  migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the missing migrations; returns the names applied now (empty when up to date).

    `connection` is a connected txpostgres Connection used by nothing else
    meanwhile. Raises `Unavailable` when the database cannot be reached (or the
    connection is cut) and `MigrationFailed` when it refuses a migration.
    """
    migrations = load_migrations() if migrations is None else migrations
    await _transaction(connection, _create_ledger, "schema_migrations")
    applied = []
    for migration in migrations:
        if await _transaction(connection, _apply, migration.name, migration):
            log.info("applied migration {name}", name=migration.name)
            applied.append(migration.name)
    return applied


async def run_migrations(reactor, dsn: str, migrations: Iterable[Migration] | None = None,
                         connect_timeout: float = 5.0, clock=None) -> list[str]:
    """Connect once to `dsn`, migrate, disconnect: what `wampchat migrate` and node start-up call.

    Raises `Unavailable` when no connection is made within `connect_timeout`
    seconds (on `clock`, the reactor by default).
    """
    from wampchat.users.pool import DeadlineExceeded, QuietConnection, within

    connection = QuietConnection(reactor)
    try:
        await within(connection.connect(dsn), connect_timeout, clock or reactor)
    except DeadlineExceeded:
        _close(connection)
        raise Unavailable(f"no answer from the user database at {_where(dsn)} within"
                          f" {connect_timeout:g}s") from None
    except DriverError as error:
        _close(connection)
        raise Unavailable(f"cannot connect to the user database at {_where(dsn)}:"
                          f" {_first_line(error)}") from None
    try:
        return await migrate(connection, None if migrations is None else tuple(migrations))
    finally:
        _close(connection)


async def _transaction(connection: Connection, work, name: str, *args):
    """`work(cursor, *args)` in one transaction; its result once committed."""
    try:
        cursor = connection.cursor()
        await cursor.execute("BEGIN")
        try:
            result = await work(cursor, *args)
            await cursor.execute("COMMIT")
        except Exception:
            await _rollback(connection, cursor)
            raise
        return result
    except (OperationalError, InterfaceError) as error:
        raise Unavailable(f"the user database is unavailable: {_first_line(error)}") from None
    except DriverError as error:
        raise MigrationFailed(name, _first_line(error)) from None
    except Exception as error:
        # The connection closed under the cursor (ConnectionDone and the like).
        if _is_closed(connection):
            raise Unavailable("the connection to the user database was lost") from None
        raise


async def _rollback(connection: Connection, cursor) -> None:
    # On a closed connection there is nothing to roll back: the server already did.
    if _is_closed(connection):
        return
    try:
        await cursor.execute("ROLLBACK")
    except Exception as error:
        log.warn("rollback after a failed migration step failed: {error}",
                 error=_first_line(error))


def _is_closed(connection: Connection) -> bool:
    raw = connection.pollable()
    return raw is None or bool(raw.closed)


def _close(connection: Connection) -> None:
    if connection.pollable() is not None:
        connection.close()


def _where(dsn: str) -> str:
    """host:port/dbname of a DSN, for messages (never its password)."""
    try:
        params = parse_dsn(dsn)
    except DriverError:
        return "(unparsable DSN)"
    host = params.get("host") or "local socket"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


async def _lock(cursor) -> None:
    await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))


async def _create_ledger(cursor) -> None:
    # Under the lock: two concurrent CREATE TABLE IF NOT EXISTS can still both
    # try to create the table's row type and one fails with a unique violation.
    await _lock(cursor)
    await cursor.execute(_CREATE_LEDGER)


async def _apply(cursor, migration: Migration) -> bool:
    await _lock(cursor)
    await cursor.execute("SELECT 1 FROM schema_migrations WHERE version = %s",
                         (migration.version,))
    if cursor.fetchone() is not None:
        return False
    await cursor.execute(migration.sql)
    await cursor.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         (migration.version, migration.name))
    return True


def _first_line(error: Exception) -> str:
    # psycopg2 messages carry multi-line context; the first line says what happened.
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
