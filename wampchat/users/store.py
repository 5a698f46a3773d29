"""The user store seam: the `User` value, the `UserStore` protocol and an in-memory store.

`PostgresUserStore` (postgres.py) and `MemoryUserStore` pass the same contract
tests (tests/users/test_store_contract.py). Code above the store sees only the
errors defined here and in wampchat.errors, never a driver exception.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Mapping, Protocol, Sequence, runtime_checkable

from wampchat.errors import AuthFailure, Unavailable


@dataclass(frozen=True)
class User:
    """One row of the `users` table."""

    id: int
    keycloak_id: str
    email: str | None
    username: str | None
    roles: tuple[str, ...]
    created_at: datetime
    last_login_at: datetime | None


class EmailInUse(AuthFailure):
    """The token's email already belongs to another Keycloak user: the login is refused."""

    reason = "email_in_use"


@runtime_checkable
class UserStore(Protocol):
    """Where users live. Every method is one database round trip in the common case.

    Errors: `EmailInUse` from `create_or_get`; `Unavailable` (wampchat.errors,
    URI `wampchat.error.unavailable`, retryable) whenever the backing database
    cannot answer. Nothing else escapes.
    """

    async def find_by_keycloak_id(self, keycloak_id: str) -> User | None:
        """The user with this Keycloak `sub`, or None."""

    async def create_or_get(self, keycloak_id: str, email: str | None, username: str | None,
                            roles: Sequence[str]) -> User:
        """Create the user, or return the existing row if this `keycloak_id` already exists.

        Race-free: concurrent calls for the same `keycloak_id` all return the same
        row. Raises `EmailInUse` when `email` belongs to another `keycloak_id`
        (and changes nothing).
        """

    async def find_or_create(self, keycloak_id: str, email: str | None, username: str | None,
                             roles: Sequence[str]) -> tuple[User, bool]:
        """The user with this `keycloak_id`, created if missing: (user, whether created).

        What a login needs in one round trip (find, else create): an existing row is
        returned unchanged; errors and races as `create_or_get`.
        """

    async def touch_logins(self, batch: Mapping[str, datetime]) -> None:
        """Set `last_login_at` for each keycloak_id in one write; never moves it backwards."""


def email_taken_message(email: str) -> str:
    """The refusal text shared by every store, so clients see one wording."""
    return f"the email {email} is already taken by another account"


class MemoryUserStore:
    """A `UserStore` in a dict, for unit tests and single-process development.

    `available = False` makes every call raise `Unavailable`, to test outages.
    `calls` counts the calls, like round trips to a real database.
    """

    def __init__(self, now=lambda: datetime.now(timezone.utc)) -> None:
        self._now = now
        self._users: dict[str, User] = {}         # keycloak_id -> User
        self._next_id = 1
        self.available = True
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if not self.available:
            raise Unavailable("the user database is unavailable")

    async def find_by_keycloak_id(self, keycloak_id: str) -> User | None:
        self._check()
        return self._users.get(keycloak_id)

    async def create_or_get(self, keycloak_id: str, email: str | None, username: str | None,
                            roles: Sequence[str]) -> User:
        return (await self.find_or_create(keycloak_id, email, username, roles))[0]

    async def find_or_create(self, keycloak_id: str, email: str | None, username: str | None,
                             roles: Sequence[str]) -> tuple[User, bool]:
        self._check()
        existing = self._users.get(keycloak_id)
        if existing is not None:
            return existing, False
        if email is not None and any(u.email == email for u in self._users.values()):
            raise EmailInUse(email_taken_message(email))
        now = self._now()
        user = User(id=self._next_id, keycloak_id=keycloak_id, email=email, username=username,
                    roles=tuple(roles), created_at=now, last_login_at=now)
        self._next_id += 1
        self._users[keycloak_id] = user
        return user, True

    async def touch_logins(self, batch: Mapping[str, datetime]) -> None:
        self._check()
        for keycloak_id, at in batch.items():
            user = self._users.get(keycloak_id)
            if user is not None and (user.last_login_at is None or at > user.last_login_at):
                self._users[keycloak_id] = replace(user, last_login_at=at)
