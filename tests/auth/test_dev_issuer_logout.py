"""The dev issuer's end-session endpoint, back-channel logout calls, introspection and
key-rotation admin path, through its HTTP resource (StubTreq, a Clock)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from treq.testing import StubTreq
from twisted.web.resource import Resource

from wampchat.auth.logout import LogoutValidator
from wampchat.auth.tokens import TokenSettings, WrongTokenType
from wampchat.dev.issuer import DevIssuer, stable_sub

from .keycloak_fakes import failure_of, result_of
from .test_dev_issuer import ISSUER, OIDC, Realm, _await

BACKCHANNEL = "http://127.0.0.1:9999/backchannel-logout"
INTROSPECT = f"{OIDC}/token/introspect"
BACKEND = {"client_id": "wampchat-backend", "client_secret": "wampchat-backend-secret"}


class Recorder(Resource):
    """The router's back-channel endpoint, recording each logout_token."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[str] = []
        self.status = 200

    def render_POST(self, request) -> bytes:
        self.tokens += [v.decode() for v in request.args.get(b"logout_token", [])]
        request.setResponseCode(self.status)
        return b'{"status": "ok"}'


@pytest.fixture
def realm():
    realm = Realm()
    realm.recorder = Recorder()
    realm.issuer.backchannel_logout_url = BACKCHANNEL
    realm.issuer.http = StubTreq(realm.recorder)
    return realm


def login(realm, username: str = "alice", scope: str = "openid email profile") -> dict:
    status, answer = realm.grant(grant_type="password", client_id="wampchat", username=username,
                                 password=username, scope=scope)
    assert status == 200, answer
    return answer


def logout_claims(realm, token: str) -> dict:
    """The logout token checked exactly as the router's /backchannel-logout checks it."""
    validator = LogoutValidator(TokenSettings(issuer=ISSUER, client_id="wampchat"),
                                realm.jwks, realm.clock)
    request = result_of(validator.validate(token))
    return {"sub": request.sub, "sid": request.sid}


def test_openid_scope_gives_an_id_token_the_router_refuses_as_access_token(realm):
    """The ID token is Keycloak-shaped (typ ID, aud = client, sid) and never logs a session in."""
    answer = login(realm)
    claims = jwt.decode(answer["id_token"], options={"verify_signature": False})
    assert claims["typ"] == "ID" and claims["aud"] == "wampchat" and claims["azp"] == "wampchat"
    assert claims["sub"] == stable_sub("alice") and claims["sid"] == answer["session_state"]
    assert failure_of(realm.authenticator.accept_token(answer["id_token"])).check(WrongTokenType)
    assert "id_token" not in login(realm, scope="email profile")


def test_logout_with_id_token_hint_ends_the_login_and_calls_the_backchannel(realm):
    """Refresh tokens of that login stop working; a valid logout token for sub+sid is POSTed;
    the redirect goes to the loopback page with state."""
    answer = login(realm)
    other = login(realm)                      # alice's second login (another browser) survives
    response, _ = realm.get(f"{OIDC}/logout", {
        "id_token_hint": answer["id_token"], "client_id": "wampchat",
        "post_logout_redirect_uri": "http://127.0.0.1:8080/", "state": "s1"})
    assert response.code == 302
    location = response.headers.getRawHeaders(b"location")[0].decode()
    assert location.startswith("http://127.0.0.1:8080/?") and parse_qs(
        urlsplit(location).query)["state"] == ["s1"]
    assert len(realm.recorder.tokens) == 1
    assert logout_claims(realm, realm.recorder.tokens[0]) == {
        "sub": stable_sub("alice"), "sid": answer["session_state"]}
    status, refused = realm.grant(grant_type="refresh_token", client_id="wampchat",
                                  refresh_token=answer["refresh_token"])
    assert (status, refused["error"]) == (400, "invalid_grant")
    assert realm.grant(grant_type="refresh_token", client_id="wampchat",
                       refresh_token=other["refresh_token"])[0] == 200


def test_logout_with_refresh_token_form_post_answers_204(realm):
    """Keycloak's POST form with client_id + refresh_token (what a public web client can send)."""
    answer = login(realm, "bob")
    response, body = realm.post(f"{OIDC}/logout", {"client_id": "wampchat",
                                                   "refresh_token": answer["refresh_token"]})
    assert response.code == 204 and body == b""
    assert logout_claims(realm, realm.recorder.tokens[0])["sid"] == answer["session_state"]
    response, body = realm.post(f"{OIDC}/logout", {"client_id": "wampchat",
                                                   "refresh_token": answer["refresh_token"]})
    assert response.code == 400 and json.loads(body)["error"] == "invalid_grant"
    assert len(realm.recorder.tokens) == 1


def test_logout_without_redirect_shows_a_page(realm):
    response, page = realm.get(f"{OIDC}/logout", {"id_token_hint": login(realm)["id_token"]})
    assert response.code == 200 and b"logged out" in page


@pytest.mark.parametrize("case", ["no hint", "foreign redirect", "other client", "forged hint",
                                  "access token as hint", "wrong refresh client"])
def test_bad_logout_requests_end_nothing(realm, case):
    """Each bad request is a 400 OAuth error; the login keeps working and nothing is POSTed."""
    answer = login(realm)
    impostor = DevIssuer(ISSUER, realm.clock)
    impostor_login = impostor.token_grant({"grant_type": "password", "client_id": "wampchat",
                                           "username": "alice", "password": "alice"})
    params = {
        "no hint": {"client_id": "wampchat"},
        "foreign redirect": {"id_token_hint": answer["id_token"],
                             "post_logout_redirect_uri": "https://evil.example/"},
        "other client": {"id_token_hint": answer["id_token"], "client_id": "wampchat-backend"},
        "forged hint": {"id_token_hint": impostor_login["id_token"]},
        "access token as hint": {"id_token_hint": answer["access_token"]},
        "wrong refresh client": {"refresh_token": answer["refresh_token"],
                                 "client_id": "wampchat-backend", **BACKEND},
    }[case]
    response, body = realm.post(f"{OIDC}/logout", params)
    assert response.code in (400, 401) and json.loads(body)["error"], body
    assert realm.recorder.tokens == []
    assert realm.grant(grant_type="refresh_token", client_id="wampchat",
                       refresh_token=answer["refresh_token"])[0] == 200


def test_logout_completes_when_the_backchannel_fails(realm):
    """A router answering 500 (or unreachable) does not undo or block the logout."""
    realm.recorder.status = 500
    answer = login(realm)
    response, _ = realm.post(f"{OIDC}/logout", {"client_id": "wampchat",
                                                "refresh_token": answer["refresh_token"]})
    assert response.code == 204 and len(realm.recorder.tokens) == 1
    realm.issuer.backchannel_logout_url = None          # nothing configured: nothing sent
    second = login(realm)
    response, _ = realm.post(f"{OIDC}/logout", {"client_id": "wampchat",
                                                "refresh_token": second["refresh_token"]})
    assert response.code == 204 and len(realm.recorder.tokens) == 1


def introspect(realm, token: str, **client) -> tuple[int, dict]:
    response, body = realm.post(INTROSPECT, {"token": token, **(client or BACKEND)})
    return response.code, json.loads(body)


def test_introspection_answers_like_keycloak(realm):
    """Backend client: active + claims for a live token; inactive when expired, forged,
    or after logout. The public client may not introspect."""
    answer = login(realm)
    status, result = introspect(realm, answer["access_token"])
    assert status == 200 and result["active"] is True
    assert result["sub"] == stable_sub("alice") and result["client_id"] == "wampchat"
    assert result["username"] == "alice" and result["token_type"] == "Bearer"
    assert result["realm_access"]["roles"][0] == "user"
    header, payload, signature = answer["access_token"].split(".")
    assert introspect(realm, f"{header}.{payload}.{signature[::-1]}")[1] == {"active": False}
    assert introspect(realm, "not a token")[1] == {"active": False}
    status, refused = introspect(realm, answer["access_token"], client_id="wampchat")
    assert status == 401 and refused["error"] == "invalid_client"
    status, refused = introspect(realm, answer["access_token"], client_id="wampchat-backend",
                                 client_secret="wrong")
    assert status == 401
    realm.post(f"{OIDC}/logout", {"client_id": "wampchat",
                                  "refresh_token": answer["refresh_token"]})
    assert introspect(realm, answer["access_token"])[1] == {"active": False}
    fresh = realm.issuer.mint("bob")
    realm.clock.advance(301)
    assert introspect(realm, fresh)[1] == {"active": False}


def test_key_rotation_admin_path(realm):
    """POST dev/rotate-key rotates (keeping or dropping the old key); foreign origins are refused."""
    old = realm.issuer.kid
    response, body = realm.post(f"{ISSUER}/dev/rotate-key", {})
    assert response.code == 200
    rotated = json.loads(body)
    assert rotated["kid"] == realm.issuer.kid != old and rotated["kids"] == [rotated["kid"], old]
    response, body = realm.post(f"{ISSUER}/dev/rotate-key?keep_previous=false", {})
    assert json.loads(body)["kids"] == [realm.issuer.kid]
    response = result_of(_await(realm.http.post(f"{ISSUER}/dev/rotate-key", data={},
                                                headers={b"Origin": [b"https://evil.example"]})))
    assert response.code == 403
    assert realm.get(f"{ISSUER}/dev/rotate-key")[0].code == 405
