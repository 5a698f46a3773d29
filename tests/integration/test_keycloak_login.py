"""End to end: the shipped config, the dev issuer's tokens, JWKS over HTTP, users in PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest
import pytest_twisted
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.types import ComponentConfig
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.integration.conftest import reactor, within
from tests.integration.dev_node import start_dev_node, stop_node
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)


class TicketClient(ApplicationSession):
    """Joins with ticket auth; `outcome` fires with ("welcome", details) or ("abort", details)."""

    def __init__(self, config, token):
        super().__init__(config)
        self.token = token
        self.outcome = Deferred()

    def onConnect(self):
        self.join(self.config.realm, ["ticket"])

    def onChallenge(self, challenge):
        return self.token

    def onJoin(self, details):
        self.outcome.callback(("welcome", details))
        self.leave()

    def onLeave(self, details):
        if not self.outcome.called:
            self.outcome.callback(("abort", details))
        self.disconnect()


@pytest.fixture
def keycloak_node(users_database):  # noqa: F811 (pytest fixture injection)
    """The shipped crossbar-like.yaml node, its own dev issuer mounted at /realms/wampchat."""
    port, issuer, node = start_dev_node(users_database)
    yield port, issuer, node
    stop_node(node)


async def login(port: int, token: str):
    """(outcome, details) of one ticket login over a real WebSocket."""
    client = TicketClient(ComponentConfig(realm="wampchat"), token)
    factory = WampWebSocketClientFactory(lambda: client, url=f"ws://127.0.0.1:{port}/ws")
    await TCP4ClientEndpoint(reactor(), "127.0.0.1", port).connect(factory)
    return await within(client.outcome, 10)


@pytest_twisted.ensureDeferred
async def test_user_logs_in_with_a_keycloak_token_and_is_provisioned(keycloak_node):
    """A dev-issuer token validates against the fetched JWKS; the WELCOME carries the new user row."""
    port, issuer, node = keycloak_node
    outcome, details = await login(port, issuer.mint("alice"))
    assert outcome == "welcome", (details.reason, details.message)
    assert details.authid == "alice@example.com"
    assert details.authrole == "user"
    assert details.authmethod == "ticket"
    assert details.authprovider == "keycloak"
    extra = details.authextra
    assert set(extra) == {"user_id", "keycloak_id", "email", "roles", "activity_status"}
    assert isinstance(extra["user_id"], int) and extra["email"] == "alice@example.com"
    again, details_again = await login(port, issuer.mint("alice"))
    assert again == "welcome" and details_again.authextra["user_id"] == extra["user_id"]


@pytest_twisted.ensureDeferred
async def test_admin_role_maps_to_admin(keycloak_node):
    """A token with the Keycloak role admin gets authrole admin."""
    port, issuer, node = keycloak_node
    outcome, details = await login(port, issuer.mint("admin"))
    assert outcome == "welcome" and details.authrole == "admin"


@pytest_twisted.ensureDeferred
async def test_expired_and_forged_tokens_are_refused(keycloak_node):
    """Expired or wrongly signed tokens get ABORT wamp.error.authentication_failed naming the cause."""
    port, issuer, node = keycloak_node
    outcome, details = await login(port, issuer.mint("bob", exp=1000, iat=900))
    assert outcome == "abort" and details.reason == "wamp.error.authentication_failed"
    assert "expired" in details.message
    forged = issuer.mint("bob")
    header, payload, signature = forged.split(".")
    outcome, details = await login(port, ".".join([header, payload, signature[::-1]]))
    assert outcome == "abort" and details.reason == "wamp.error.authentication_failed"


# -- session lifetime: expiry and refresh over real sockets ------------------------------

LEEWAY = 1      # the node below: tokens live only a second past exp


def short_leeway(config):
    """The shipped config with leeway LEEWAY on the keycloak authenticators."""
    transports = []
    for transport in config.transports:
        auth = tuple(replace(method, keycloak=replace(method.keycloak, leeway=LEEWAY))
                     if method.keycloak is not None else method for method in transport.auth)
        transports.append(replace(transport, auth=auth))
    return replace(config, transports=tuple(transports))


@pytest.fixture
def short_leeway_node(users_database):  # noqa: F811 (pytest fixture injection)
    port, issuer, node = start_dev_node(users_database, transform=short_leeway)
    clients: list = []
    yield port, issuer, clients
    stop_node(node)
    for client in clients:
        if client.is_attached():
            client.leave()


@pytest_twisted.ensureDeferred
async def test_session_ends_at_token_expiry_unless_refreshed(short_leeway_node):
    """Tokens expiring in 2 s: an idle session gets GOODBYE wampchat.close.token_expired at
    exp + leeway; wampchat.session.refresh with a fresh token for the same user moves the
    deadline; a token for another user is refused and the old deadline stands."""
    from autobahn.wamp.exception import ApplicationError

    from tests.integration.test_backchannel_logout import connect
    from wampchat import errors

    port, issuer, clients = short_leeway_node
    exp = int(reactor().seconds()) + 2
    idle = await connect(port, issuer.mint("alice", exp=exp), clients)
    renewed = await connect(port, issuer.mint("alice", exp=exp), clients)
    hijacker = await connect(port, issuer.mint("alice", exp=exp), clients)

    fresh_exp = int(reactor().seconds()) + 120
    answer = await within(renewed.call("wampchat.session.refresh",
                                       issuer.mint("alice", exp=fresh_exp)))
    assert answer == {"status": "ok", "expires_at": fresh_exp}
    with pytest.raises(ApplicationError) as refused:
        await within(hijacker.call("wampchat.session.refresh", issuer.mint("bob")))
    assert refused.value.error == errors.AUTHENTICATION_FAILED
    assert "wrong_subject" in refused.value.args[0]

    for client in (idle, hijacker):
        details = await within(client.left, 10)
        assert details.reason == errors.CLOSE_TOKEN_EXPIRED
    assert reactor().seconds() >= exp + LEEWAY - 0.5       # not before exp + leeway
    assert not renewed.left.called
    # Still a working session past the old deadline.
    again = await within(renewed.call("wampchat.session.refresh",
                                      issuer.mint("alice", exp=fresh_exp + 1)))
    assert again["expires_at"] == fresh_exp + 1
