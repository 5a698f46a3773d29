"""Static ticket, WAMP-CRA and anonymous logins, function authenticators and the factory."""

from __future__ import annotations

import gc
import json

import pytest
from twisted.internet.defer import Deferred

from tests.auth import CALLS, REALM, Client, Router, ticket, wampcra
from wampchat.auth.anonymous import AnonymousAuthenticator
from wampchat.auth.cra import WampCraAuthenticator
from wampchat.auth.factory import build_authenticators
from wampchat.auth.function import FunctionAuthenticator
from wampchat.auth.ticket import StaticTicketAuthenticator
from wampchat.config_types import AuthMethodConfig, KeycloakAuthConfig, StaticPrincipal

PRINCIPALS = (
    StaticPrincipal(authid="svc-chat", role="backend", secret="t1cket"),
    StaticPrincipal(authid="svc-salted", role="backend", secret="p4ss", salt="salt123",
                    iterations=100, keylen=16),
)


def static_router() -> Router:
    return Router({"ticket": StaticTicketAuthenticator(PRINCIPALS),
                   "anonymous": AnonymousAuthenticator("guest")})


# -- ticket ---------------------------------------------------------------------------

def test_ticket_with_the_right_secret_is_welcomed_as_its_principal():
    """The right ticket gives the principal's authid and role, method ticket, provider static."""
    router = static_router()
    client = router.connect(Client(["ticket"], "svc-chat", ticket("t1cket")))
    assert [c.method for c in client.challenges] == ["ticket"]
    assert (client.welcome.authid, client.welcome.authrole) == ("svc-chat", "backend")
    assert (client.welcome.authmethod, client.welcome.authprovider) == ("ticket", "static")


def test_wrong_ticket_is_refused_with_authentication_failed():
    """A wrong ticket ends in ABORT authentication_failed naming the authid, never the ticket."""
    client = static_router().connect(Client(["ticket"], "svc-chat", ticket("guess")))
    assert client.welcome is None
    assert client.left.reason == "wamp.error.authentication_failed"
    assert "wrong ticket" in client.left.message and "guess" not in client.left.message


def test_unknown_authid_is_refused_without_a_challenge():
    """An authid with no principal is refused at HELLO."""
    client = static_router().connect(Client(["ticket"], "nobody", ticket("t1cket")))
    assert client.challenges == []
    assert client.left.reason == "wamp.error.authentication_failed"
    assert "nobody" in client.left.message


# -- WAMP-CRA ---------------------------------------------------------------------------

@pytest.mark.parametrize("authid,secret", [("svc-chat", "t1cket"), ("svc-salted", "p4ss")])
def test_wampcra_login_with_autobahns_compute_wcs(authid, secret):
    """Autobahn's standard onChallenge (derive_key when salted, compute_wcs) logs in."""
    router = Router({"wampcra": WampCraAuthenticator(PRINCIPALS)})
    client = router.connect(Client(["wampcra"], authid, wampcra(secret)))
    assert (client.welcome.authid, client.welcome.authrole) == (authid, "backend")
    assert (client.welcome.authmethod, client.welcome.authprovider) == ("wampcra", "static")


def test_wampcra_challenge_is_bound_to_the_session_and_carries_the_salt():
    """The challenge JSON names authid, role, method, provider, nonce, time and the session id."""
    router = Router({"wampcra": WampCraAuthenticator(PRINCIPALS)})
    client = router.connect(Client(["wampcra"], "svc-salted", wampcra("p4ss")))
    extra = client.challenges[0].extra
    assert (extra["salt"], extra["iterations"], extra["keylen"]) == ("salt123", 100, 16)
    challenge = json.loads(extra["challenge"])
    assert challenge["session"] == client.welcome.session
    assert {k: challenge[k] for k in ("authid", "authrole", "authmethod", "authprovider")} == {
        "authid": "svc-salted", "authrole": "backend", "authmethod": "wampcra",
        "authprovider": "static"}
    assert challenge["nonce"] and challenge["timestamp"].endswith("Z")


def test_wampcra_nonces_differ_per_challenge():
    """Each challenge has a fresh nonce, so a signature cannot be replayed."""
    router = Router({"wampcra": WampCraAuthenticator(PRINCIPALS, Router().clock)})
    first = router.connect(Client(["wampcra"], "svc-chat", wampcra("t1cket")))
    second = router.connect(Client(["wampcra"], "svc-chat", wampcra("t1cket")))
    nonces = {json.loads(c.challenges[0].extra["challenge"])["nonce"] for c in (first, second)}
    assert len(nonces) == 2


@pytest.mark.parametrize("authid", ["svc-chat", "svc-salted"])
def test_wampcra_wrong_secret_is_refused(authid):
    """A signature made with another secret gets ABORT authentication_failed."""
    authenticator = WampCraAuthenticator(PRINCIPALS)
    client = Router({"wampcra": authenticator}).connect(
        Client(["wampcra"], authid, wampcra("not-it")))
    assert client.welcome is None
    assert client.left.reason == "wamp.error.authentication_failed"
    assert "WAMP-CRA signature" in client.left.message


def test_wampcra_pending_challenge_is_forgotten_when_the_session_goes():
    """A client that never answers leaves no pending challenge once its session is gone."""
    authenticator = WampCraAuthenticator(PRINCIPALS)
    router = Router({"wampcra": authenticator})
    client = router.connect(Client(["wampcra"], "svc-chat", lambda challenge: Deferred()))
    assert authenticator.pending_challenges == 1
    client.disconnect()
    router.pump()
    del client
    gc.collect()
    assert authenticator.pending_challenges == 0


# -- anonymous ----------------------------------------------------------------------------

def test_anonymous_gets_a_random_authid_and_the_configured_role():
    """Two anonymous clients get distinct random authids, role guest, and no challenge."""
    router = static_router()
    first = router.connect(Client(["anonymous"], "i-am-admin"))
    second = router.connect(Client([]))
    assert first.challenges == [] and first.welcome.authrole == "guest"
    assert first.welcome.authid != "i-am-admin"
    assert first.welcome.authid != second.welcome.authid
    assert (first.welcome.authmethod, first.welcome.authprovider) == ("anonymous", "static")


# -- function authenticators ---------------------------------------------------------------

def test_function_ticket_returning_a_role():
    """A function returning a string grants that role; it saw the ticket and the session."""
    CALLS.clear()
    router = Router({"ticket": FunctionAuthenticator("tests.auth.role_authenticate", "ticket")})
    client = router.connect(Client(["ticket"], "bob", ticket("letmein")))
    assert (client.welcome.authid, client.welcome.authrole) == ("bob", "user")
    assert client.welcome.authprovider == "function"
    realm, authid, details = CALLS[-1]
    assert (realm, authid, details["ticket"], details["authmethod"]) == (REALM, "bob", "letmein",
                                                                          "ticket")
    assert details["session"] == client.welcome.session
    assert details["transport"] == {"type": "memory", "peer": "memory"}


def test_function_returning_a_principal_dict_sets_authid_and_authextra():
    """A dict answer gives its authid, role and extra (as WELCOME authextra)."""
    router = Router({"ticket": FunctionAuthenticator("tests.auth.principal_authenticate",
                                                     "ticket")})
    client = router.connect(Client(["ticket"], "alice", ticket("whatever")))
    assert (client.welcome.authid, client.welcome.authrole) == ("alice@example.com", "admin")
    assert client.welcome.authextra == {"team": "blue"}


def test_async_function_authenticator():
    """An async function is awaited."""
    router = Router({"ticket": FunctionAuthenticator("tests.auth.async_authenticate", "ticket")})
    client = router.connect(Client(["ticket"], "carol", ticket("x")))
    assert client.welcome.authid == "async-carol"


@pytest.mark.parametrize("name,uri,text", [
    ("refusing_authenticate", "wamp.error.not_authorized", "nope"),
    ("role_authenticate", "wamp.error.authentication_failed", "wrong ticket"),
    ("crashing_authenticate", "wamp.error.authentication_failed", "the authenticator failed"),
])
def test_function_refusals_become_abort(name, uri, text):
    """ApplicationError is forwarded as URI and message; a crash is authentication_failed."""
    router = Router({"ticket": FunctionAuthenticator(f"tests.auth.{name}", "ticket")})
    client = router.connect(Client(["ticket"], "bob", ticket("bad")))
    assert client.welcome is None
    assert client.left.reason == uri
    assert text in client.left.message


def test_function_wampcra():
    """A function returning a secret drives WAMP-CRA; the wrong secret is refused."""
    router = Router({"wampcra": FunctionAuthenticator("tests.auth.cra_authenticate", "wampcra")})
    good = router.connect(Client(["wampcra"], "dave", wampcra("s3cret")))
    bad = router.connect(Client(["wampcra"], "dave", wampcra("nope")))
    assert (good.welcome.authid, good.welcome.authrole) == ("dave", "user")
    assert bad.left.reason == "wamp.error.authentication_failed"


def test_function_that_never_answers_is_unavailable_after_the_timeout():
    """A pending Deferred ends in ABORT wampchat.error.unavailable after the timeout."""
    router = Router()
    router.context.authenticators["ticket"] = FunctionAuthenticator(
        "tests.auth.never_authenticate", "ticket", router.clock, timeout=5)
    client = router.connect(Client(["ticket"], "erin", ticket("x")))
    router.clock.advance(4.9)
    router.pump()
    assert client.left is None
    router.clock.advance(0.1)
    router.pump()
    assert client.left.reason == "wampchat.error.unavailable"


@pytest.mark.parametrize("name", ["nodots", "tests.auth.missing", "no.such.module.fn",
                                  "tests.auth.NOT_CALLABLE"])
def test_bad_dotted_name_is_refused_at_construction(name):
    """A function that cannot be imported is a ValueError naming it, at start."""
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        FunctionAuthenticator(name, "ticket")


# -- factory -----------------------------------------------------------------------------

def test_factory_builds_every_type():
    """Each config type maps to its authenticator; keycloak goes to the given factory."""
    router = Router()
    made = []
    keycloak = KeycloakAuthConfig(issuer="https://kc/realms/x", client_id="wampchat")
    configs = (
        AuthMethodConfig("ticket", "keycloak", keycloak=keycloak),
        AuthMethodConfig("wampcra", "static", principals=PRINCIPALS),
        AuthMethodConfig("anonymous", "dynamic", authenticator="com.example.authenticate"),
    )
    result = build_authenticators(configs, router.realms, router.clock,
                                  keycloak_factory=lambda c: made.append(c) or "KC")
    assert result["ticket"] == "KC" and made == [keycloak]
    assert isinstance(result["wampcra"], WampCraAuthenticator)
    assert result["anonymous"].procedure == "com.example.authenticate"
    static = build_authenticators((AuthMethodConfig("ticket", "static", principals=PRINCIPALS),
                                   AuthMethodConfig("anonymous", "static", role="guest")),
                                  router.realms, router.clock)
    assert isinstance(static["ticket"], StaticTicketAuthenticator)
    assert isinstance(static["anonymous"], AnonymousAuthenticator)
    function = build_authenticators((AuthMethodConfig("ticket", "function",
                                                      authenticator="tests.auth.role_authenticate"),),
                                    router.realms, router.clock)
    assert function["ticket"].authprovider == "function"


@pytest.mark.parametrize("configs,names", [
    ((AuthMethodConfig("ticket", "keycloak",
                       keycloak=KeycloakAuthConfig(issuer="i", client_id="c")),), "'ticket'"),
    ((AuthMethodConfig("anonymous", "static"),), "'anonymous'"),
    ((AuthMethodConfig("ticket", "dynamic"),), "'ticket'"),
    ((AuthMethodConfig("ticket", "static"), AuthMethodConfig("ticket", "static")), "twice"),
    ((AuthMethodConfig("ticket", "function", authenticator="nope.nope"),), "nope.nope"),
])
def test_factory_refuses_what_it_cannot_serve(configs, names):
    """Impossible configurations are ValueErrors naming the method."""
    router = Router()
    with pytest.raises(ValueError, match=names):
        build_authenticators(configs, router.realms, router.clock)
