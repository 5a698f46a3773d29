"""The user directory: who a validated token belongs to, from a short-TTL cache in front of the store.

`UserDirectory.login(identity)` is step 4 of the HELLO -> WELCOME flow
(STYLE §2): cache, else find by Keycloak `sub`, else create (just in time).
It keeps a reconnect storm off the database three ways:

- a bounded LRU cache answers repeat logins within `ttl` seconds;
- concurrent logins of the same user share one in-flight lookup;
- `last_login_at` is written behind, in one batch per `touch_interval`.

When the store is `Unavailable`, a user already in the cache is still served
(even past its TTL: stale-if-error); a user never seen gets `Unavailable`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from wampchat.errors import Unavailable
from wampchat.logs import Logger
from wampchat.users.store import User, UserStore

log = Logger()


class LoginIdentity(Protocol):
    """What the directory reads from a validated token (auth.tokens.Identity fits)."""

    sub: str
    email: str | None
    preferred_username: str | None
    roles: Sequence[str]


@dataclass(frozen=True)
class _Entry:
    user: User
    fetched_at: float          # clock.seconds() when the store last confirmed it


def authid_of(identity: LoginIdentity) -> str:
    """The WAMP authid: email, else preferred_username, else sub (SPEC §3)."""
    return identity.email or identity.preferred_username or identity.sub


class UserDirectory:
    """Logins resolved to `User` rows, cached for `ttl` seconds, at most `max_size` users.

    `login` raises what the store raises: `EmailInUse` (refused, not retryable)
    or `Unavailable` (retryable) for a user not in the cache. Call `close()` on
    shutdown to cancel the timer and write pending login times.
    """

    def __init__(self, store: UserStore, clock, ttl: float = 30.0, max_size: int = 10000,
                 touch_interval: float = 60.0, outage_log_interval: float = 60.0) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._max_size = max_size
        self._touch_interval = touch_interval
        self._outage_log_interval = outage_log_interval
        self._cache: OrderedDict[str, _Entry] = OrderedDict()   # keycloak_id -> entry, LRU first
        self._in_flight: dict[str, list[Deferred]] = {}         # keycloak_id -> waiters of the lookup
        self._pending_logins: dict[str, datetime] = {}          # keycloak_id -> latest unwritten login
        self._touch_call: IDelayedCall | None = None
        self._last_outage_log = float("-inf")                   # clock.seconds() of the last warning
        self.store_lookups = 0                                  # lookups that reached the store

    async def login(self, identity: LoginIdentity) -> User:
        """The user row for a validated token, provisioning it on first login."""
        user = await self._resolve(identity)
        self._note_login(user.keycloak_id)
        log.info("user {authid} ({user_id}, {sub}) authenticated via Keycloak with roles {roles}",
                 authid=authid_of(identity), user_id=user.id, sub=identity.sub,
                 roles=list(identity.roles))
        return user

    def cached(self, keycloak_id: str) -> User | None:
        """The cached user, fresh or stale, without touching the store."""
        entry = self._cache.get(keycloak_id)
        return entry.user if entry is not None else None

    async def flush_logins(self) -> None:
        """Write the pending login times now, in one batch; kept for later if the store is down."""
        if self._touch_call is not None and self._touch_call.active():
            self._touch_call.cancel()
        self._touch_call = None
        batch, self._pending_logins = self._pending_logins, {}
        if not batch:
            return
        try:
            await self._store.touch_logins(batch)
        except Unavailable as error:
            for keycloak_id, at in batch.items():
                self._merge_login(keycloak_id, at)
            self._log_outage(error)
            self._schedule_touch()

    async def close(self) -> None:
        """Cancel the write-behind timer and make one last attempt to write pending logins."""
        await self.flush_logins()
        if self._touch_call is not None and self._touch_call.active():
            self._touch_call.cancel()
        self._touch_call = None

    # -- lookup ---------------------------------------------------------------

    async def _resolve(self, identity: LoginIdentity) -> User:
        sub = identity.sub
        entry = self._cache.get(sub)
        if entry is not None and self._clock.seconds() - entry.fetched_at < self._ttl:
            self._cache.move_to_end(sub)
            return entry.user
        try:
            return await self._shared_lookup(identity)
        except Unavailable as error:
            entry = self._cache.get(sub)
            if entry is None:
                raise
            self._log_outage(error)
            return entry.user

    def _shared_lookup(self, identity: LoginIdentity) -> Deferred:
        waiter: Deferred = Deferred()
        waiters = self._in_flight.get(identity.sub)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        # Registered before the lookup starts: with a store that answers at once
        # the lookup finishes inside fromCoroutine.
        self._in_flight[identity.sub] = [waiter]
        Deferred.fromCoroutine(self._lookup(identity)).addBoth(self._lookup_done, identity.sub)
        return waiter

    def _lookup_done(self, result, sub: str) -> None:
        for waiter in self._in_flight.pop(sub):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        return None    # every waiter got the failure; none is left unhandled here

    async def _lookup(self, identity: LoginIdentity) -> User:
        self.store_lookups += 1
        user, created = await self._store.find_or_create(
            identity.sub, identity.email, identity.preferred_username, tuple(identity.roles))
        if created:
            log.info("user with Keycloak ID {sub} not found, provisioned as {user_id}",
                     sub=identity.sub, user_id=user.id)
        self._remember(user)
        return user

    def _remember(self, user: User) -> None:
        self._cache[user.keycloak_id] = _Entry(user, self._clock.seconds())
        self._cache.move_to_end(user.keycloak_id)
        while len(self._cache) > self._max_size:
            self._cache.popitem(last=False)

    # -- write-behind of last_login_at ---------------------------------------

    def _note_login(self, keycloak_id: str) -> None:
        self._merge_login(keycloak_id, datetime.fromtimestamp(self._clock.seconds(), timezone.utc))
        self._schedule_touch()

    def _merge_login(self, keycloak_id: str, at: datetime) -> None:
        known = self._pending_logins.get(keycloak_id)
        if known is None or at > known:
            self._pending_logins[keycloak_id] = at

    def _schedule_touch(self) -> None:
        if self._touch_call is None or not self._touch_call.active():
            self._touch_call = self._clock.callLater(self._touch_interval, self._touch_due)

    def _touch_due(self) -> None:
        self._touch_call = None
        Deferred.fromCoroutine(self.flush_logins()).addErrback(
            lambda failure: log.failure("writing login times failed", failure))

    def _log_outage(self, error: Unavailable) -> None:
        now = self._clock.seconds()
        if now - self._last_outage_log >= self._outage_log_interval:
            self._last_outage_log = now
            log.warn("user database unavailable, serving cached users: {error}", error=str(error))
