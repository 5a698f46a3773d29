"""End to end: the issuer rotates or drops keys, or stops, while the router keeps running.

The development issuer listens on its own loopback port (as Keycloak would, apart
from the router), so "Keycloak stopped" is a closed port, not a flag. The router is
the shipped config with small JWKS timings (jwks_ttl, min_refresh_interval) so a
refresh happens within the test; clients log in over real WebSockets. Waits are
bounded sleeps past those intervals; nothing asserts on durations.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.integration.conftest import reactor, within
from tests.integration.dev_node import build_dev_node, stop_node
from tests.integration.test_keycloak_login import login
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)
from wampchat import errors
from wampchat.config_types import NodeConfig
from wampchat.dev.issuer import DevIssuer, realms_resource

INTERVAL = 0.5       # min_refresh_interval of these tests' router


def jwks_timing(ttl: float, interval: float = INTERVAL):
    """A config transform setting the keycloak authenticators' JWKS ttl and refresh interval."""
    def transform(config: NodeConfig) -> NodeConfig:
        transports = []
        for transport in config.transports:
            auth = tuple(replace(method, keycloak=replace(method.keycloak, jwks_ttl=ttl,
                                                          min_refresh_interval=interval))
                         if method.keycloak is not None else method
                         for method in transport.auth)
            transports.append(replace(transport, auth=auth))
        return replace(config, transports=tuple(transports))
    return transform


class StandaloneIssuer:
    """A DevIssuer on its own 127.0.0.1 port, counting JWKS requests; stop() closes the port."""

    def __init__(self) -> None:
        self._root = Resource()
        self._site = Site(self._root)
        self._listener = reactor().listenTCP(0, self._site, interface="127.0.0.1")
        self.port = self._listener.getHost().port
        self.issuer = DevIssuer(f"http://127.0.0.1:{self.port}/realms/wampchat", reactor())
        self._root.putChild(b"realms", realms_resource(self.issuer))
        self.jwks_requests = 0
        serve = self.issuer.jwks

        def counted():                 # the /certs endpoint calls issuer.jwks() per GET
            self.jwks_requests += 1
            return serve()
        self.issuer.jwks = counted

    def stop(self) -> Deferred:
        """Close the port (the issuer is unreachable: connection refused)."""
        listener, self._listener = self._listener, None
        return maybeDeferred(listener.stopListening) if listener is not None else succeed(None)

    def start(self) -> None:
        """Listen again on the same port (the issuer is back)."""
        if self._listener is None:
            self._listener = reactor().listenTCP(self.port, self._site, interface="127.0.0.1")


def router_for(dsn: str, issuer: StandaloneIssuer, ttl: float):
    port, _, node = build_dev_node(dsn, issuer_url=issuer.issuer.issuer,
                                   transform=jwks_timing(ttl))
    node.service.startService()
    pytest_twisted.blockon(within(node.transports[0].ready))
    return port, node


@pytest.fixture
def issuer():
    standalone = StandaloneIssuer()
    yield standalone
    pytest_twisted.blockon(standalone.stop())


@pytest.fixture
def long_ttl_router(users_database, issuer):  # noqa: F811 (pytest fixture injection)
    """Keys trusted for an hour: only an unknown kid makes the router fetch."""
    port, node = router_for(users_database, issuer, ttl=3600)
    yield port
    stop_node(node)


@pytest.fixture
def short_ttl_router(users_database, issuer):  # noqa: F811 (pytest fixture injection)
    """Keys trusted for one second: the next login after that refreshes them."""
    port, node = router_for(users_database, issuer, ttl=1)
    yield port
    stop_node(node)


def sleep(seconds: float):
    return task.deferLater(reactor(), seconds, lambda: None)


async def welcomed(port: int, token: str) -> None:
    outcome, details = await login(port, token)
    assert outcome == "welcome", (details.reason, details.message)


async def refused(port: int, token: str, reason: str, words: str) -> None:
    outcome, details = await login(port, token)
    assert outcome == "abort" and details.reason == reason, (outcome, details.reason)
    assert words in details.message, details.message


@pytest_twisted.ensureDeferred
async def test_rotation_is_picked_up_and_a_dropped_key_stops_at_the_next_refresh(
        issuer, long_ttl_router):
    """New kid → one refetch and accepted, no restart; old key kept → still accepted; old key
    dropped → still cached until the next refresh, then refused as an unknown key."""
    port = long_ttl_router
    first = issuer.issuer.mint("alice")
    await welcomed(port, first)
    assert issuer.jwks_requests == 1

    await sleep(INTERVAL + 0.2)
    issuer.issuer.rotate_key()                    # the realm now signs with K2, still lists K1
    second = issuer.issuer.mint("alice")
    await welcomed(port, second)
    assert issuer.jwks_requests == 2              # the unknown kid caused exactly one fetch
    await welcomed(port, issuer.issuer.mint("bob"))
    await welcomed(port, first)
    assert issuer.jwks_requests == 2              # known kids: no fetch at all

    await sleep(INTERVAL + 0.2)
    issuer.issuer.rotate_key(keep_previous=False)     # K3 only: K1 and K2 leave the realm
    await welcomed(port, second)                  # cached K2, no refresh has happened yet
    await welcomed(port, issuer.issuer.mint("bob"))   # K3 unknown: the refresh
    assert issuer.jwks_requests == 3
    await refused(port, second, errors.AUTHENTICATION_FAILED, "no signing key")
    await refused(port, first, errors.AUTHENTICATION_FAILED, "no signing key")


@pytest_twisted.ensureDeferred
async def test_dropped_key_refused_after_the_ttl_refresh(issuer, short_ttl_router):
    """With a short TTL, the refresh that drops the key is the TTL's own, not a new kid's."""
    port = short_ttl_router
    old = issuer.issuer.mint("alice")
    await welcomed(port, old)
    issuer.issuer.rotate_key(keep_previous=False)
    await sleep(1.3)                              # past jwks_ttl: the cached set is stale
    await refused(port, old, errors.AUTHENTICATION_FAILED, "no signing key")
    assert issuer.jwks_requests == 2
    await welcomed(port, issuer.issuer.mint("alice"))
    assert issuer.jwks_requests == 2


@pytest_twisted.ensureDeferred
async def test_issuer_stopped_known_keys_serve_unknown_kid_is_unavailable(issuer, short_ttl_router):
    """Issuer port closed: logins with cached keys still work (even with the set stale); a
    new kid is ABORT wampchat.error.unavailable; once the issuer is back, it is accepted."""
    port = short_ttl_router
    await welcomed(port, issuer.issuer.mint("alice"))
    await issuer.stop()
    await sleep(1.3)                              # stale: the next login tries to refresh
    await welcomed(port, issuer.issuer.mint("bob"))
    await welcomed(port, issuer.issuer.mint("alice"))

    issuer.issuer.rotate_key()
    await sleep(INTERVAL + 0.2)
    rotated = issuer.issuer.mint("alice")
    await refused(port, rotated, errors.UNAVAILABLE, "cannot be fetched")
    assert issuer.jwks_requests == 1              # the closed port never answered

    issuer.start()
    await sleep(INTERVAL + 0.2)
    await welcomed(port, rotated)
    assert issuer.jwks_requests == 2
