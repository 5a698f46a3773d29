"""Production dependencies of a node: the HTTP client for Keycloak and the user directory.

Kept apart from node.py so tests can build nodes with fakes, and cli.py/tap.py with
the real things.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from wampchat.config_types import NodeConfig

log = Logger()


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
    """Applies missing migrations when the node starts (database.migrate_on_start)."""

    def __init__(self, reactor, dsn: str) -> None:
        self._reactor = reactor
        self._dsn = dsn
        # Fires (never fails) once the attempt is over: transports open only then, so no
        # login meets a half-migrated schema. A failure is logged; logins then get
        # wampchat.error.unavailable until the database is fixed.
        self.done: Deferred = Deferred()

    def startService(self) -> None:
        super().startService()
        from wampchat.users.migrate import run_migrations

        d = ensureDeferred(run_migrations(self._reactor, self._dsn))
        d.addCallbacks(
            lambda applied: log.info("database migrations applied: {applied}",
                                     applied=applied or "none needed"),
            lambda failure: log.error("database migrations failed: {error}",
                                      error=failure.getErrorMessage()))
        d.addBoth(lambda _: self.done.callback(None))


def user_services(config: NodeConfig, reactor, dsn: str | None = None):
    """(user directory, services to run) for the configured database, or (None, [])."""
    chosen = dsn or config.database.dsn
    if not chosen:
        return None, []
    from wampchat.users.directory import UserDirectory
    from wampchat.users.postgres import PostgresUserStore, pool_from_config

    pool = pool_from_config(reactor, config.database, dsn=chosen)
    services: list[Service] = [pool]
    if config.database.migrate_on_start:
        services.insert(0, MigrationService(reactor, chosen))
    return UserDirectory(PostgresUserStore(pool), reactor), services
