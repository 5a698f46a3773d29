"""The `UserStore` in PostgreSQL, on the self-healing `ResilientPool` (pool.py).

Driver errors never leave this module: a unique violation on the email becomes
`EmailInUse`, anything else `Unavailable` (retryable). The pool's names are
re-exported here, where callers have always found them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping, Sequence

from psycopg2 import Error as DriverError, IntegrityError
from psycopg2.errorcodes import UNIQUE_VIOLATION

from wampchat.errors import Unavailable
from wampchat.logs import Logger
from wampchat.users.batching import Coalescer
from wampchat.users.pool import (DeadlineExceeded, PoolState, PreparedStatement,  # noqa: F401
                                 QuietConnection, ResilientPool, make_pool, pool_from_config,
                                 reconnect_delay, within)
from wampchat.users.store import EmailInUse, User, email_taken_message

log = Logger()

_COLUMNS = "id, keycloak_id, email, username, roles, created_at, last_login_at"

# A login's one statement: the row if it exists, else the row inserted. The INSERT runs
# only when the lookup found nothing, so logging in never writes to an existing row (nor
# draws from the id sequence). Prepared: it runs once per first-time login.
_FIND_OR_CREATE = PreparedStatement(
    "wampchat_find_or_create_user",
    f"WITH found AS (SELECT {_COLUMNS} FROM users WHERE keycloak_id = %s),"
    " created AS (INSERT INTO users (keycloak_id, email, username, roles, last_login_at)"
    " SELECT %s, %s, %s, %s::text[], now() WHERE NOT EXISTS (SELECT FROM found)"
    f" ON CONFLICT (keycloak_id) DO NOTHING RETURNING {_COLUMNS})"
    " SELECT *, false FROM found UNION ALL SELECT *, true FROM created")

# The same for several logins at once (distinct keycloak_ids; roles as JSON arrays, as
# PostgreSQL has no arrays of arrays of different lengths).
_FIND_OR_CREATE_MANY = PreparedStatement(
    "wampchat_find_or_create_users",
    "WITH input AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
    " AS v(keycloak_id, email, username, roles)),"
    f" found AS (SELECT {_COLUMNS} FROM users"
    " WHERE keycloak_id IN (SELECT keycloak_id FROM input)),"
    " created AS (INSERT INTO users (keycloak_id, email, username, roles, last_login_at)"
    " SELECT v.keycloak_id, v.email, v.username,"
    " ARRAY(SELECT jsonb_array_elements_text(v.roles::jsonb)), now() FROM input AS v"
    " WHERE NOT EXISTS (SELECT FROM found WHERE found.keycloak_id = v.keycloak_id)"
    f" ON CONFLICT (keycloak_id) DO NOTHING RETURNING {_COLUMNS})"
    " SELECT *, false FROM found UNION ALL SELECT *, true FROM created")

_Login = tuple[str, "str | None", "str | None", tuple[str, ...]]   # find_or_create's arguments


# Login statements in flight at once. Each costs this process ~70 us to send and more to
# answer, whatever its size: 16 concurrent first-time logins in process cost 90-125 us of
# CPU each with 5 in flight, 72-87 us with 2 and 46-81 us with 1 (0.77 -> 0.24 statements
# per login in bench.logins). Two, not one: a slow statement does not hold every login,
# and the pool keeps connections free for other queries during a login storm.
LOGIN_STATEMENTS = 2


class PostgresUserStore:
    """`UserStore` on a `ResilientPool`: one statement per call in the common case.

    Round trips: `find_by_keycloak_id` 1; `create_or_get` and `find_or_create` 1, or 2
    when another login created the row concurrently; `touch_logins` 1 for the whole batch.
    At most `login_statements` (2, at most `pool.size`) login statements run at once;
    logins arriving meanwhile go together as the next one (`Coalescer`), of at most
    `max_batch`; one of them whose email is taken makes the batch retry one by one. As
    for queries waiting for a connection, at most `pool.max_waiting` logins wait, more
    are refused at once (`Unavailable`), and the pool's deadline counts from when a
    login began to wait: a stalled database cannot pile them up.
    Errors: `EmailInUse`, `Unavailable`; nothing else.
    """

    def __init__(self, pool: ResilientPool, max_batch: int = 200,
                 login_statements: int = LOGIN_STATEMENTS) -> None:
        self._pool = pool
        self._logins: Coalescer[tuple[float, _Login]] = Coalescer(
            self._find_or_create_batch, max(1, min(login_statements, pool.size)), max_batch)
        self.refused_busy = 0                    # logins refused because too many waited

    async def find_by_keycloak_id(self, keycloak_id: str) -> User | None:
        rows = await self._query(f"SELECT {_COLUMNS} FROM users WHERE keycloak_id = %s",
                                 (keycloak_id,))
        return _user(rows[0]) if rows else None

    async def create_or_get(self, keycloak_id: str, email: str | None, username: str | None,
                            roles: Sequence[str]) -> User:
        return (await self._insert(
            lambda: self._pool.run_query(
                "INSERT INTO users (keycloak_id, email, username, roles, last_login_at)"
                " VALUES (%s, %s, %s, %s::text[], now())"
                f" ON CONFLICT (keycloak_id) DO NOTHING RETURNING {_COLUMNS}, true",
                (keycloak_id, email, username, list(roles))),
            keycloak_id, email))[0]

    async def find_or_create(self, keycloak_id: str, email: str | None, username: str | None,
                             roles: Sequence[str]) -> tuple[User, bool]:
        if self._logins.queued >= self._pool.max_waiting:
            self.refused_busy += 1
            raise Unavailable(f"the user database is overloaded ({self._logins.queued} logins"
                              " waiting); try again")
        return await self._logins.submit(
            (self._pool.clock.seconds(), (keycloak_id, email, username, tuple(roles))))

    async def _find_or_create_batch(self, items: list[tuple[float, _Login]]) -> list[object]:
        """One outcome per login: (user, created), or the exception for that login alone."""
        since = min(submitted for submitted, _ in items)      # the deadline of the oldest
        logins = [login for _, login in items]
        if len(logins) > 1:
            try:
                return await self._find_or_create_many(logins, since)
            except IntegrityError as error:
                if error.pgcode != UNIQUE_VIOLATION:
                    raise _unexpected(error) from None
                # An email taken (by a stored user, or by another login of the batch):
                # one by one, in order of arrival, so that only its logins are refused.
        outcomes: list[object] = []
        for login in logins:
            try:
                outcomes.append(await self._find_or_create_one(*login, since=since))
            except (EmailInUse, Unavailable) as error:
                outcomes.append(error)
        return outcomes

    async def _find_or_create_many(self, logins: list[_Login], since: float) -> list[object]:
        distinct: dict[str, _Login] = {}                  # the first login of each id, in order
        for login in logins:
            distinct.setdefault(login[0], login)
        ids, emails, usernames, roles = zip(*distinct.values())
        try:
            rows = await self._pool.run_prepared(_FIND_OR_CREATE_MANY, (
                list(ids), list(emails), list(usernames), [json.dumps(r) for r in roles]), since)
        except IntegrityError:
            raise                                     # _find_or_create_batch decides
        except DriverError as error:
            raise _unexpected(error) from None
        found = {row[1]: (_user(row[:-1]), row[-1]) for row in rows}
        outcomes: list[object] = []
        for keycloak_id, email, username, roles in logins:
            outcome = found.get(keycloak_id)
            if outcome is None:
                # Created meanwhile by another statement (ON CONFLICT DO NOTHING).
                try:
                    outcome = found[keycloak_id] = await self._find_or_create_one(
                        keycloak_id, email, username, roles, since)
                except (EmailInUse, Unavailable) as error:
                    outcomes.append(error)
                    continue
            else:
                found[keycloak_id] = (outcome[0], False)      # a repeated id: created once
            outcomes.append(outcome)
        return outcomes

    async def _find_or_create_one(self, keycloak_id: str, email: str | None,
                                  username: str | None, roles: Sequence[str],
                                  since: float | None = None) -> tuple[User, bool]:
        return await self._insert(
            lambda: self._pool.run_prepared(
                _FIND_OR_CREATE, (keycloak_id, keycloak_id, email, username, list(roles)), since),
            keycloak_id, email)

    async def _insert(self, run: Callable[[], Awaitable[list[tuple]]], keycloak_id: str,
                      email: str | None) -> tuple[User, bool]:
        """Run an insert returning (columns..., created); races and conflicts resolved."""
        try:
            rows = await run()
        except IntegrityError as error:
            if error.pgcode != UNIQUE_VIOLATION:
                raise _unexpected(error) from None
            # Also raised when a concurrent insert of this very keycloak_id (with
            # the same email) committed first: then the row is ours after all.
            existing = await self.find_by_keycloak_id(keycloak_id)
            if existing is None:
                raise EmailInUse(email_taken_message(email)) from None
            return existing, False
        except DriverError as error:
            raise _unexpected(error) from None
        if rows:
            return _user(rows[0][:-1]), rows[0][-1]
        # ON CONFLICT DO NOTHING: another login created it. A separate statement,
        # because one statement's snapshot cannot see the other's commit.
        existing = await self.find_by_keycloak_id(keycloak_id)
        if existing is None:
            raise Unavailable("the user was removed while being created; try again")
        return existing, False

    async def touch_logins(self, batch: Mapping[str, datetime]) -> None:
        if not batch:
            return
        ids, times = list(batch), [batch[keycloak_id] for keycloak_id in batch]
        await self._query(
            "UPDATE users AS u SET last_login_at = v.at"
            " FROM unnest(%s::text[], %s::timestamptz[]) AS v(keycloak_id, at)"
            " WHERE u.keycloak_id = v.keycloak_id"
            " AND (u.last_login_at IS NULL OR u.last_login_at < v.at)",
            (ids, times), rows=False)

    async def _query(self, sql: str, params: Sequence[Any], rows: bool = True):
        try:
            if rows:
                return await self._pool.run_query(sql, params)
            return await self._pool.run_operation(sql, params)
        except DriverError as error:
            raise _unexpected(error) from None


def _unexpected(error: DriverError) -> Unavailable:
    # A statement the database refused (a bug or an unmigrated schema): log it
    # once here with its SQLSTATE and show callers the retryable failure.
    log.error("user database refused a statement: {sqlstate} {error}",
              sqlstate=error.pgcode, error=_first_line(error))
    return Unavailable("the user database refused the request")


def _user(row: tuple) -> User:
    id_, keycloak_id, email, username, roles, created_at, last_login_at = row
    return User(id=id_, keycloak_id=keycloak_id, email=email, username=username,
                roles=tuple(roles or ()), created_at=created_at, last_login_at=last_login_at)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
