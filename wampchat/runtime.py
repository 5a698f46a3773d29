"""Production dependencies of a node: the HTTP client for Keycloak and the user directory.

Kept apart from node.py so tests can build nodes with fakes, and cli.py/tap.py with
the real things.
"""

from __future__ import annotations

import gc
from typing import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred

from wampchat.config_types import NodeConfig
from wampchat.logs import Logger

log = Logger()


# Full collections at most once per this many younger (generation 1) ones, not 10.
FULL_COLLECTION_EVERY = 100


def tune_garbage_collection() -> None:
    """Keep full garbage collections, which stop the reactor, few and short once started.

    A full collection walks every tracked object: what start-up built (modules, classes,
    config, the node: ~70,000 objects, 20-27 ms, the p99 latency of the bench's fan-out
    to 1000 subscribers at a fixed rate) and every session's ~33. Start-up's objects live
    as long as the process, so they are frozen out of collections (its garbage collected
    first: frozen objects are never collected). Closed connections leave no cycles (see
    HoldsAdmissionSlot), so little garbage waits for a full collection: it runs after
    FULL_COLLECTION_EVERY younger collections instead of Python's 10 (under load, every
    ~2-20 s instead of every 0.2-2 s). Called by each process entry point once its node
    has started.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def uses_keycloak(config: NodeConfig) -> bool:
    return any(method.type == "keycloak" for t in config.transports for method in t.auth)


def keycloak_factory_for(config: NodeConfig, reactor, users=None,
                         on_fetch: Callable[[str], None] | None = None) -> Callable | None:
    """A factory of Keycloak authenticators sharing one JWKS cache per issuer, or None.

    on_fetch(outcome) is told of every JWKS fetch (Metrics.jwks_fetched).
    """
    if not uses_keycloak(config):
        return None
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    from wampchat.auth.keycloak import keycloak_factory

    # Fetches are rare (TTL, min_refresh_interval): a fresh connection each time avoids
    # reusing one the issuer has already closed.
    http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    return keycloak_factory(http, reactor, users, on_fetch=on_fetch)


class MigrationService(Service):
    """Applies missing migrations when the node starts (database.migrate_on_start).

    While the database cannot be reached (down, black-holed, wrong host, not
    yet started by the orchestrator) the attempt is retried with a growing
    delay, and every failed attempt is logged as an error saying the node is not
    listening yet. This is what an operator of a router expects: the node and
    its database are often started together and the node must come up on its
    own once the database does, yet never sit silent. A migration the database
    refuses (`MigrationFailed`, a broken release) is not retried: it is logged
    and the node opens its transports, logins then getting the retryable
    wampchat.error.unavailable. `wampchat migrate` instead fails at once.
    """

    def __init__(self, reactor, dsn: str, connect_timeout: float = 5.0, clock=None,
                 migrations=None, initial_delay: float = 1.0, max_delay: float = 30.0) -> None:
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._migrations = migrations
        self._initial_delay, self._max_delay = initial_delay, max_delay
        self._retry = None              # IDelayedCall of the next attempt
        self.attempts = 0
        # Fires (never fails) once migrations are applied or refused: transports open
        # only then, so no login meets a half-migrated schema.
        self.done: Deferred = Deferred()

    def startService(self) -> None:
        super().startService()
        self._attempt()

    def stopService(self):
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _attempt(self) -> None:
        from wampchat.users.migrate import run_migrations

        self._retry = None
        self.attempts += 1
        d = ensureDeferred(run_migrations(self._reactor, self._dsn, self._migrations,
                                          connect_timeout=self._connect_timeout,
                                          clock=self._clock))
        d.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, applied) -> None:
        log.info("database migrations applied: {applied}", applied=applied or "none needed")
        self._finish()

    def _failed(self, failure) -> None:
        from wampchat.errors import Unavailable

        if not self.running:            # stopped meanwhile: nothing waits for us
            return
        if not failure.check(Unavailable):
            log.error("database migrations failed: {error}", error=failure.getErrorMessage())
            self._finish()
            return
        from wampchat.users.pool import reconnect_delay

        delay = reconnect_delay(self.attempts - 1, self._initial_delay, self._max_delay)
        log.error("database migrations failed (attempt {attempt}): {error}; the node is not"
                  " listening yet, retrying in {delay:g}s", attempt=self.attempts,
                  error=failure.getErrorMessage(), delay=delay)
        self._retry = self._clock.callLater(delay, self._attempt)

    def _finish(self) -> None:
        if not self.done.called:
            self.done.callback(None)


def user_services(config: NodeConfig, reactor, dsn: str | None = None):
    """(user directory, services to run) for the configured database, or (None, [])."""
    chosen = dsn or config.database.dsn
    if not chosen:
        return None, []
    from wampchat.users.directory import UserDirectory
    from wampchat.users.pool import pool_from_config
    from wampchat.users.postgres import PostgresUserStore

    pool = pool_from_config(reactor, config.database, dsn=chosen)
    services: list[Service] = [pool]
    if config.database.migrate_on_start:
        services.insert(0, MigrationService(reactor, chosen,
                                            connect_timeout=config.database.connect_timeout))
    return UserDirectory(PostgresUserStore(pool), reactor), services
