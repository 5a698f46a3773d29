"""Production dependencies of a node: the HTTP client for Keycloak and the user directory.

Kept apart from node.py so tests can build nodes with fakes and cli.py/tap.py with
the real things.
"""

from __future__ import annotations

from typing import Callable

from twisted.logger import Logger

from wampchat.config_types import NodeConfig

log = Logger()


def uses_keycloak(config: NodeConfig) -> bool:
    return any(method.type == "keycloak" for t in config.transports for method in t.auth)


def keycloak_factory_for(config: NodeConfig, reactor, users=None) -> Callable | None:
    """A factory of Keycloak authenticators sharing one JWKS cache per issuer, or None."""
    if not uses_keycloak(config):
        return None
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    from wampchat.auth.keycloak import keycloak_factory

    http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor)))
    return keycloak_factory(http, reactor, users)
