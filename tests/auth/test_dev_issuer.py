"""The development issuer speaks enough Keycloak for the router and the web client."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from wampchat.auth.jwks import JwksCache
from wampchat.auth.keycloak import KeycloakAuthenticator
from wampchat.auth.tokens import UnknownKey
from wampchat.config_types import KeycloakAuthConfig
from wampchat.dev.issuer import BACKCHANNEL_LOGOUT_EVENT, DevIssuer, pkce_s256, site_root, stable_sub

from .keycloak_fakes import failure_of, result_of

ISSUER = "http://127.0.0.1:8080/realms/wampchat"
OIDC = f"{ISSUER}/protocol/openid-connect"
REDIRECT = "http://127.0.0.1:8080/?page=chat"


class Realm:
    """A DevIssuer behind StubTreq, and the router's authenticator pointed at it."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.issuer = DevIssuer(ISSUER, self.clock)
        self.http = StubTreq(site_root(self.issuer))
        self.jwks = JwksCache(self.http, self.clock, issuer=ISSUER)
        self.authenticator = KeycloakAuthenticator(
            KeycloakAuthConfig(issuer=ISSUER, client_id="wampchat"), self.jwks, None, self.clock)

    def post(self, url: str, data: dict, **kwargs):
        response = result_of(_await(self.http.post(url, data=data, allow_redirects=False, **kwargs)))
        return response, result_of(_await(response.content()))

    def get(self, url: str, params: dict | None = None):
        response = result_of(_await(self.http.get(url, params=params, allow_redirects=False)))
        return response, result_of(_await(response.content()))

    def grant(self, **form) -> tuple[int, dict]:
        response, body = self.post(f"{OIDC}/token", form)
        return response.code, json.loads(body)

    def accept(self, token: str):
        return result_of(self.authenticator.accept_token(token))


async def _await(d):
    return await d


@pytest.fixture
def realm():
    return Realm()


@pytest.mark.parametrize("username, authid, authrole", [
    ("alice", "alice@example.com", "user"), ("bob", "bob@example.com", "user"),
    ("admin", "admin@example.com", "admin"),
])
def test_password_grant_tokens_pass_the_router(realm, username, authid, authrole):
    """A password-grant access token validates through discovery, the JWKS and the authenticator."""
    status, answer = realm.grant(grant_type="password", client_id="wampchat",
                                 username=username, password=username)
    assert status == 200 and answer["token_type"] == "Bearer" and answer["expires_in"] == 300
    accept = realm.accept(answer["access_token"])
    assert (accept.authid, accept.authrole, accept.subject) == (authid, authrole,
                                                                stable_sub(username))


def test_tokens_are_shaped_like_keycloaks(realm):
    """iss, aud account, azp, typ Bearer, UUID sub, roles, sid and exp in 300 s."""
    claims = jwt.decode(realm.issuer.mint("alice"), options={"verify_signature": False})
    assert claims["iss"] == ISSUER and claims["aud"] == ["account"] and claims["azp"] == "wampchat"
    assert claims["typ"] == "Bearer" and uuid.UUID(claims["sub"])
    assert claims["exp"] - claims["iat"] == 300 and claims["sid"]
    assert "user" in claims["realm_access"]["roles"]
    assert claims["email"] == "alice@example.com" and claims["preferred_username"] == "alice"
    assert jwt.get_unverified_header(realm.issuer.mint("alice"))["kid"] == realm.issuer.kid


def test_client_credentials_give_a_backend_token(realm):
    """The backend client's service account maps to authrole backend."""
    status, answer = realm.grant(grant_type="client_credentials", client_id="wampchat-backend",
                                 client_secret="wampchat-backend-secret")
    assert status == 200
    accept = realm.accept(answer["access_token"])
    assert (accept.authid, accept.authrole) == ("service-account-wampchat-backend", "backend")


@pytest.mark.parametrize("form, status, error", [
    ({"grant_type": "password", "client_id": "wampchat", "username": "alice", "password": "x"},
     401, "invalid_grant"),
    ({"grant_type": "client_credentials", "client_id": "wampchat-backend", "client_secret": "x"},
     401, "invalid_client"),
    ({"grant_type": "client_credentials", "client_id": "wampchat"}, 401, "unauthorized_client"),
    ({"grant_type": "password", "client_id": "nobody", "username": "alice", "password": "alice"},
     401, "invalid_client"),
    ({"grant_type": "implicit", "client_id": "wampchat"}, 400, "unsupported_grant_type"),
])
def test_bad_grants_are_oauth_errors(realm, form, status, error):
    """Wrong credentials and unknown grants answer OAuth errors, not tokens."""
    code, answer = realm.grant(**form)
    assert (code, answer["error"]) == (status, error)
    assert answer["error_description"] and "access_token" not in answer


def test_refresh_token_grant_rotates_the_refresh_token(realm):
    """A refresh token gives a new access token once; reusing it is refused."""
    _, first = realm.grant(grant_type="password", client_id="wampchat", username="bob",
                           password="bob")
    realm.clock.advance(200)
    status, second = realm.grant(grant_type="refresh_token", client_id="wampchat",
                                 refresh_token=first["refresh_token"])
    assert status == 200
    accept = realm.accept(second["access_token"])
    assert accept.credential_expires_at == int(realm.clock.seconds()) + 300
    assert realm.grant(grant_type="refresh_token", client_id="wampchat",
                       refresh_token=first["refresh_token"])[0] == 400


def _code_flow(realm, verifier: str = "v" * 43, password: str = "alice", redirect=REDIRECT):
    params = {"client_id": "wampchat", "redirect_uri": redirect, "response_type": "code",
              "state": "xyz", "code_challenge": pkce_s256(verifier),
              "code_challenge_method": "S256", "scope": "openid"}
    return realm.post(f"{OIDC}/auth", {**params, "username": "alice", "password": password})


def test_authorization_code_with_pkce(realm):
    """Login page, redirect with code and state, code + verifier exchanged once for a token."""
    response, page = realm.get(f"{OIDC}/auth", {
        "client_id": "wampchat", "redirect_uri": REDIRECT, "response_type": "code",
        "code_challenge": pkce_s256("v" * 43), "code_challenge_method": "S256",
        "state": "<script>"})
    assert response.code == 200 and b"<form" in page and b"&lt;script&gt;" in page
    response, _ = _code_flow(realm)
    assert response.code == 302
    location = response.headers.getRawHeaders(b"location")[0].decode()
    assert location.startswith(REDIRECT + "&")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["xyz"]
    exchange = {"grant_type": "authorization_code", "client_id": "wampchat",
                "code": query["code"][0], "redirect_uri": REDIRECT, "code_verifier": "v" * 43}
    status, answer = realm.grant(**exchange)
    assert status == 200 and realm.accept(answer["access_token"]).authid == "alice@example.com"
    assert realm.grant(**exchange)[0] == 400                    # codes are single use


def test_code_flow_refusals(realm):
    """A wrong password shows the form again; a wrong verifier or foreign redirect is refused."""
    response, page = _code_flow(realm, password="wrong")
    assert response.code == 200 and b"Invalid username or password" in page
    response, _ = _code_flow(realm)
    code = parse_qs(urlsplit(response.headers.getRawHeaders(b"location")[0].decode()).query)
    status, answer = realm.grant(grant_type="authorization_code", client_id="wampchat",
                                 code=code["code"][0], redirect_uri=REDIRECT,
                                 code_verifier="w" * 43)
    assert (status, answer["error"]) == (400, "invalid_grant")
    response, _ = _code_flow(realm, redirect="https://evil.example/cb")
    assert response.code == 400


def test_key_rotation_is_picked_up_and_old_keys_retire(realm):
    """After rotation the router fetches the new key; a retired key stops verifying."""
    old = realm.issuer.mint("alice")
    realm.accept(old)
    realm.issuer.rotate_key(keep_previous=False)
    realm.clock.advance(10)
    assert realm.accept(realm.issuer.mint("alice")).authid == "alice@example.com"
    assert failure_of(realm.authenticator.accept_token(old)).check(UnknownKey)


def test_logout_tokens(realm):
    """mint_logout gives a signed back-channel logout token for a sid."""
    claims = jwt.decode(realm.issuer.mint_logout(sid="s-1"), options={"verify_signature": False})
    assert claims["typ"] == "Logout" and claims["sid"] == "s-1" and "sub" not in claims
    assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}} and claims["aud"] == "wampchat"
