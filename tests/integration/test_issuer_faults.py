"""The issuer answering garbage or hanging on /certs, with the router running (issue 8 §3).

Same set-up as test_key_rotation.py: the development issuer on its own loopback port,
the shipped router with a one-second key lifetime, logins over real WebSockets. Known
keys keep serving (a hanging issuer delays such a login by the stale grace at most),
an unknown kid is ABORT wampchat.error.unavailable, and the failed fetches are counted.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.integration.dev_node import stop_node
from tests.integration.test_key_rotation import (INTERVAL, StandaloneIssuer, refused, router_for,
                                                 sleep, welcomed)
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)
from wampchat import errors


class BrokenCerts(Resource):
    """/certs that answers an HTML error page, or never answers."""

    isLeaf = True

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.requests = 0
        self.held: list = []

    def render_GET(self, request) -> bytes:
        self.requests += 1
        if self.mode == "hang":
            self.held.append(request)
            # the router's fetch gives up and drops the connection: forget the request then
            request.notifyFinish().addErrback(lambda _: self.held.remove(request))
            return NOT_DONE_YET
        return b"<html><body>502 Bad Gateway</body></html>"


def break_certs(issuer: StandaloneIssuer, mode: str) -> BrokenCerts:
    broken = BrokenCerts(mode)
    oidc = issuer.issuer.resource.children[b"protocol"].children[b"openid-connect"]
    oidc.putChild(b"certs", broken)
    return broken


@pytest.fixture
def setup(users_database):  # noqa: F811 (pytest fixture injection)
    issuer = StandaloneIssuer()
    port, node = router_for(users_database, issuer, ttl=1)
    yield issuer, port, node
    stop_node(node)
    pytest_twisted.blockon(issuer.stop())


def failed_fetches(node) -> float:
    return node.metrics.registry.get_sample_value("wampchat_jwks_fetches_total",
                                                  {"outcome": "error"}) or 0.0


@pytest.mark.parametrize("mode", ["garbage", "hang"])
@pytest_twisted.ensureDeferred
async def test_broken_issuer_known_keys_serve_unknown_kid_is_unavailable(setup, mode):
    issuer, port, node = setup
    await welcomed(port, issuer.issuer.mint("alice"))        # keys fetched and cached
    broken = break_certs(issuer, mode)
    await sleep(1.3)                                          # the cached set is now stale
    await welcomed(port, issuer.issuer.mint("bob"))           # served from the cache
    assert broken.requests == 1
    signed_with_cached_key = issuer.issuer.mint("bob")
    issuer.issuer.rotate_key()
    await sleep(INTERVAL + 0.2)
    # garbage: answered at once; hang: the fetch gives up after its timeout
    await refused(port, issuer.issuer.mint("alice"), errors.UNAVAILABLE, "cannot be fetched")
    await welcomed(port, signed_with_cached_key)             # the router serves on
    assert failed_fetches(node) >= 1
    for request in list(broken.held):
        request.finish()
