"""KeycloakAuthenticator behind a real RouterSession over the memory transport.

An Autobahn ApplicationSession does ticket auth exactly as a browser client
would; StubTreq serves the realm's JWKS and a Clock drives time.
"""

from __future__ import annotations

from typing import Any

import pytest
from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from wampchat import errors
from wampchat.auth.authenticator import Accept, Challenge, Hello, TransportInfo
from wampchat.auth.jwks import JwksCache
from wampchat.auth.keycloak import KeycloakAuthenticator, SubjectMismatch, keycloak_factory
from wampchat.config_types import (KeycloakAuthConfig, PermissionConfig, RealmConfig,
                                   RoleConfig, RoleMappingRule)
from wampchat.router.realm import Realm
from wampchat.router.session import RouterContext, install_refresh
from wampchat.transport.memory import connect_pair
from wampchat.users.store import MemoryUserStore

from .keycloak_fakes import (CLIENT_ID, ISSUER, KEY_A, KEY_B, NOW, FakeKeycloak, StoreLogin,
                             failure_of, result_of, token)

CONFIG = KeycloakAuthConfig(issuer=ISSUER, client_id=CLIENT_ID)
EVERYTHING = (PermissionConfig(uri="", match="prefix", call=True, register=True,
                               publish=True, subscribe=True),)
REALM = RealmConfig(name="wampchat", roles=tuple(RoleConfig(name, EVERYTHING)
                                                for name in ("user", "admin", "backend")))


class TicketClient(ApplicationSession):
    """Joins with authmethods ["ticket"] and answers the challenge with its token."""

    def __init__(self, token: str | None) -> None:
        super().__init__(ComponentConfig(realm="wampchat"))
        self.token = token
        self.challenges: list[str] = []
        self.welcome: Any = None
        self.left: Any = None

    def onConnect(self):
        self.join("wampchat", authmethods=["ticket"])

    def onChallenge(self, challenge):
        self.challenges.append(challenge.method)
        return self.token

    def onJoin(self, details):
        self.welcome = details

    def onLeave(self, details):
        self.left = details


class Harness:
    """A realm, a Keycloak authenticator and a way to connect clients, on one Clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.keycloak = FakeKeycloak(keys=[KEY_A])
        self.jwks = JwksCache(StubTreq(self.keycloak), self.clock, jwks_url=self.keycloak.jwks_url)
        self.store = MemoryUserStore()
        self.authenticator = KeycloakAuthenticator(CONFIG, self.jwks, StoreLogin(self.store),
                                                   self.clock)
        self.realm = Realm(REALM, self.clock)
        install_refresh(self.realm)
        self.context = RouterContext({"wampchat": self.realm}, {"ticket": self.authenticator},
                                     self.clock)

    def connect(self, token: str | None, bearer: str | None = None) -> TicketClient:
        client = TicketClient(token)
        session = self.context.session(TransportInfo(kind="memory", peer="memory",
                                                     bearer_token=bearer))
        connect_pair(self.clock, session, client)
        self.pump()
        return client

    def pump(self) -> None:
        for _ in range(10):
            self.clock.advance(0)

    def call(self, client: TicketClient, procedure: str, *args: Any) -> list:
        outcome: list = []
        Deferred.fromCoroutine(_awaited(client.call(procedure, *args))).addBoth(outcome.append)
        self.pump()
        assert outcome, "no answer"
        return outcome


async def _awaited(d):
    return await d


@pytest.fixture
def router():
    return Harness()


def test_ticket_login_gives_the_lean_identity(router):
    """CHALLENGE ticket, the token as signature, WELCOME with authid email and SPEC authextra."""
    client = router.connect(token(now=NOW))
    assert client.challenges == ["ticket"]
    welcome = client.welcome
    assert (welcome.authid, welcome.authrole, welcome.authmethod, welcome.authprovider) == (
        "alice@example.com", "user", "ticket", "keycloak")
    assert welcome.authextra == {
        "user_id": 1, "keycloak_id": "f1b2c3d4-0000-4000-8000-000000000001",
        "email": "alice@example.com", "roles": ["offline_access", "user", "chatter"],
        "activity_status": "online"}


def test_transport_token_skips_the_challenge(router):
    """A Bearer token from the upgrade request authenticates the HELLO directly."""
    client = router.connect(None, bearer=token(now=NOW, realm_access={"roles": ["admin"]}))
    assert client.challenges == []
    assert client.welcome.authrole == "admin"


def test_authid_falls_back_to_username_then_sub(router):
    """Accounts without email are known by preferred_username, then by sub."""
    assert router.connect(token(now=NOW, email=None)).welcome.authid == "alice"
    assert router.connect(token(now=NOW, email=None, preferred_username=None,
                                sub="only-sub")).welcome.authid == "only-sub"


@pytest.mark.parametrize("make, uri, reason", [
    (lambda: token(now=NOW - 400), errors.AUTHENTICATION_FAILED, "expired"),
    (lambda: token(KEY_B, now=NOW), errors.AUTHENTICATION_FAILED, "unknown_key"),
    (lambda: KEY_B.sign({"sub": "x"}, kid="key-a"), errors.AUTHENTICATION_FAILED, "bad_signature"),
    (lambda: token(now=NOW, iss="http://evil"), errors.AUTHENTICATION_FAILED, "wrong_issuer"),
    (lambda: "garbage", errors.AUTHENTICATION_FAILED, "malformed"),
])
def test_refusals_abort_with_the_reason(router, make, uri, reason):
    """A bad token ends in one ABORT whose message starts with the reason."""
    client = router.connect(make())
    assert client.welcome is None
    assert client.left.reason == uri
    assert client.left.message.startswith(f"{reason}: ")


def test_keycloak_down_and_unknown_kid_is_retryable(router):
    """Keycloak unreachable while the kid is not cached: wampchat.error.unavailable."""
    router.keycloak.up = False
    client = router.connect(token(now=NOW))
    assert client.left.reason == errors.UNAVAILABLE


def test_database_down_is_retryable(router):
    """The user store being down refuses the login with wampchat.error.unavailable."""
    router.store.available = False
    assert router.connect(token(now=NOW)).left.reason == errors.UNAVAILABLE


def test_no_matching_role_rule_is_not_authorized(router):
    """A mapping without catch-all refuses tokens none of its rules match."""
    config = KeycloakAuthConfig(issuer=ISSUER, client_id=CLIENT_ID,
                                role_mapping=(RoleMappingRule(authrole="admin", role="admin"),))
    router.context.authenticators["ticket"] = KeycloakAuthenticator(config, router.jwks, None,
                                                                    router.clock)
    assert router.connect(token(now=NOW)).left.reason == errors.NOT_AUTHORIZED


def test_session_ends_when_its_token_expires(router):
    """The router says GOODBYE token_expired at exp + leeway, not a second earlier."""
    client = router.connect(token(now=NOW))           # exp = NOW + 300, leeway 30
    router.clock.advance(329)
    router.pump()
    assert client.left is None
    router.clock.advance(1)
    router.pump()
    assert client.left.reason == errors.CLOSE_TOKEN_EXPIRED


def test_refresh_moves_the_deadline(router):
    """wampchat.session.refresh with a fresh token for the same sub keeps the session open."""
    client = router.connect(token(now=NOW))
    router.clock.advance(200)
    fresh = token(now=NOW + 200, realm_access={"roles": ["user", "vip"]})
    [answer] = router.call(client, "wampchat.session.refresh", fresh)
    assert answer == {"status": "ok", "expires_at": NOW + 500}
    router.clock.advance(300)
    router.pump()
    assert client.left is None
    router.clock.advance(30)
    router.pump()
    assert client.left.reason == errors.CLOSE_TOKEN_EXPIRED


def test_refresh_for_another_sub_is_refused(router):
    """A token of another user is refused with an error and the old deadline stays."""
    client = router.connect(token(now=NOW))
    [failure] = router.call(client, "wampchat.session.refresh", token(now=NOW, sub="mallory"))
    assert failure.check(ApplicationError)
    assert failure.value.error == errors.AUTHENTICATION_FAILED
    assert "wrong_subject" in failure.value.args[0]
    router.clock.advance(330)
    router.pump()
    assert client.left.reason == errors.CLOSE_TOKEN_EXPIRED


def _hello(bearer: str | None = None) -> Hello:
    return Hello(realm="wampchat", authmethods=("ticket",), authid=None, authrole=None,
                 authextra={}, roles={}, session_id=1,
                 transport=TransportInfo(kind="memory", peer="memory", bearer_token=bearer))


def test_authenticator_without_users_has_no_user_id(router):
    """With no user store the Accept carries user_id None, exp and sid."""
    authenticator = KeycloakAuthenticator(CONFIG, router.jwks, None, router.clock)
    assert result_of(authenticator.hello(_hello())) == Challenge("ticket")
    accept = result_of(authenticator.authenticate(_hello(), token(now=NOW), {}))
    assert isinstance(accept, Accept)
    assert accept.authextra["user_id"] is None
    assert (accept.expires_at, accept.credential_expires_at) == (NOW + 330, NOW + 300)
    assert (accept.subject, accept.sid) == ("f1b2c3d4-0000-4000-8000-000000000001", "sid-1")
    assert failure_of(authenticator.refresh(accept, token(now=NOW, sub="x"))).check(SubjectMismatch)


def test_factory_shares_one_cache_per_issuer(router):
    """Authenticators for the same issuer share one JwksCache; another jwks_url gets its own."""
    factory = keycloak_factory(StubTreq(router.keycloak), router.clock, None)
    first, second = factory(CONFIG), factory(CONFIG)
    other = factory(KeycloakAuthConfig(issuer=ISSUER, client_id="x",
                                       jwks_url="http://internal/certs"))
    assert factory.jwks_for(CONFIG) is factory.jwks_for(CONFIG)
    assert len(factory.caches) == 2
    result_of(first.accept_token(token(now=NOW)))
    result_of(second.accept_token(token(now=NOW)))
    assert router.keycloak.jwks_requests == 1
    assert other.authmethod == "ticket" and other.takes_transport_token


def test_the_token_is_never_logged(router):
    """Neither accepted nor refused logins, nor expiry, put the token in a log event."""
    good, expired = token(now=NOW), token(now=NOW - 400)
    with capturedLogs() as events:
        router.connect(good)
        router.connect(expired)
        router.connect(None, bearer=good)
        router.clock.advance(400)
        router.pump()
    assert events
    for event in events:
        text = formatEvent(event) + repr(sorted(event.items(), key=lambda item: item[0]))
        assert good not in text and expired not in text
        assert good.split(".")[2] not in text
