"""Back-channel logout tokens (SPEC §3 item 7): the pure validator and the resource."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tests.auth.keycloak_fakes import CLIENT_ID, ISSUER, KEY_A, KEY_B, NOW
from wampchat import errors
from wampchat.auth import tokens
from wampchat.auth.authenticator import Accept
from wampchat.auth.logout import (BACKCHANNEL_LOGOUT_EVENT, BackchannelLogoutResource,
                                  LogoutRequest, NotALogoutToken, validate_logout)
from wampchat.errors import AuthFailure

SETTINGS = tokens.TokenSettings(issuer=ISSUER, client_id=CLIENT_ID)
KEY = KEY_A.pyjwk()
SUB = "5f0c4a3e-0000-4000-8000-000000000001"
SID = "3b1d9c1e-0000-4000-8000-0000000000aa"


def logout_claims(**overrides: Any) -> dict[str, Any]:
    """A logout token payload as Keycloak sends it; an override of None removes a claim."""
    claims = {"iat": NOW, "exp": NOW + 60, "jti": "a-jti", "iss": ISSUER, "aud": CLIENT_ID,
              "sub": SUB, "sid": SID, "typ": "Logout",
              "events": {BACKCHANNEL_LOGOUT_EVENT: {}}}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def logout_token(key=KEY_A, **overrides: Any) -> str:
    return key.sign(logout_claims(**overrides))


def test_a_valid_logout_token_names_sid_and_sub():
    assert validate_logout(logout_token(), KEY, SETTINGS, NOW) == LogoutRequest(sub=SUB, sid=SID)


@pytest.mark.parametrize("overrides, expected", [
    ({"sid": None}, LogoutRequest(sub=SUB, sid=None)),
    ({"sub": None}, LogoutRequest(sub=None, sid=SID)),
    ({"typ": None}, LogoutRequest(sub=SUB, sid=SID)),                 # typ is optional
    ({"aud": ["other", CLIENT_ID]}, LogoutRequest(sub=SUB, sid=SID)),  # aud may be a list
    ({"exp": None}, LogoutRequest(sub=SUB, sid=SID)),
])
def test_accepted_variants(overrides, expected):
    assert validate_logout(logout_token(**overrides), KEY, SETTINGS, NOW) == expected


def _tampered() -> str:
    header, _, signature = logout_token().split(".")
    _, payload, _ = logout_token(sub="someone-else").split(".")
    return ".".join([header, payload, signature])


REFUSALS = [
    ("wrong issuer", lambda: logout_token(iss="http://evil.test/realms/test"), tokens.WrongIssuer),
    ("wrong audience", lambda: logout_token(aud="account"), tokens.WrongAudience),
    ("azp is not enough", lambda: logout_token(aud="account", azp=CLIENT_ID),
     tokens.WrongAudience),
    ("missing event", lambda: logout_token(events=None), NotALogoutToken),
    ("other event", lambda: logout_token(events={"http://example.com/other": {}}),
     NotALogoutToken),
    ("events not an object", lambda: logout_token(events=[BACKCHANNEL_LOGOUT_EVENT]),
     NotALogoutToken),
    ("nonce present", lambda: logout_token(nonce="n-0S6_WzA2Mj"), NotALogoutToken),
    ("access token", lambda: logout_token(typ="Bearer"), NotALogoutToken),
    ("bad signature (other key)", lambda: logout_token(key=KEY_B), tokens.BadSignature),
    ("tampered payload", _tampered, tokens.BadSignature),
    ("neither sid nor sub", lambda: logout_token(sid=None, sub=None), tokens.InvalidClaim),
    ("empty sub", lambda: logout_token(sid=None, sub=""), tokens.InvalidClaim),
    ("missing iat", lambda: logout_token(iat=None), tokens.InvalidClaim),
    ("string iat", lambda: logout_token(iat=str(NOW)), tokens.InvalidClaim),
    ("iat in the future", lambda: logout_token(iat=NOW + 120, exp=NOW + 200),
     tokens.TokenNotYetValid),
    ("expired", lambda: logout_token(iat=NOW - 600, exp=NOW - 300), tokens.TokenExpired),
    ("stale without exp", lambda: logout_token(iat=NOW - 3600, exp=None), tokens.TokenExpired),
    ("alg none", lambda: "eyJhbGciOiJub25lIiwia2lkIjoia2V5LWEifQ."
                         + logout_token().split(".")[1] + ".", tokens.UnsupportedAlgorithm),
]


@pytest.mark.parametrize("case, make, failure", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals(case, make, failure):
    with pytest.raises(failure):
        validate_logout(make(), KEY, SETTINGS, NOW)


# -- the resource --------------------------------------------------------------------------

class FakeValidator:
    """validate(): the pure validator at NOW with KEY (the JWKS lookup is tested elsewhere)."""

    def __init__(self) -> None:
        self.tokens: list[Any] = []

    async def validate(self, token: Any) -> LogoutRequest:
        self.tokens.append(token)
        return validate_logout(token, KEY, SETTINGS, NOW)


class FakeSession:
    def __init__(self, sub: str, sid: str, provider: str = "keycloak") -> None:
        self.credentials = Accept(authid=sub, authrole="user", authmethod="ticket",
                                  authprovider=provider, subject=sub, sid=sid)
        self.closed: list[str] = []

    def close_by_router(self, reason: str, text: str | None = None) -> None:
        self.closed.append(reason)


class FakeRealm:
    def __init__(self, *sessions: FakeSession) -> None:
        self.sessions = dict(enumerate(sessions))


def post(resource: BackchannelLogoutResource, **form: str) -> tuple[int, dict[str, Any]]:
    request = DummyRequest([])
    request.method = b"POST"
    request.args = {k.encode(): [v.encode()] for k, v in form.items()}
    finished: Deferred = request.notifyFinish()
    body = resource.render(request)
    if body is not NOT_DONE_YET:
        request.write(body)
        request.finish()
    assert finished.called, "the resource did not answer"
    return request.responseCode or 200, json.loads(b"".join(request.written))


@pytest.fixture
def sessions():
    return {"alice1": FakeSession(SUB, SID), "alice2": FakeSession(SUB, "other-sid"),
            "bob": FakeSession("bob-sub", "bob-sid"),
            "static": FakeSession(SUB, SID, provider="static")}


@pytest.fixture
def resource(sessions):
    return BackchannelLogoutResource(FakeValidator(), {"wampchat": FakeRealm(*sessions.values())})


def test_sid_logout_ends_only_that_login_session(resource, sessions):
    status, body = post(resource, logout_token=logout_token())
    assert status == 200 and body == {"status": "ok"}
    assert sessions["alice1"].closed == [errors.CLOSE_LOGGED_OUT]
    assert not (sessions["alice2"].closed or sessions["bob"].closed or sessions["static"].closed)


def test_sub_logout_ends_every_session_of_the_user(resource, sessions):
    status, _ = post(resource, logout_token=logout_token(sid=None))
    assert status == 200
    assert sessions["alice1"].closed == sessions["alice2"].closed == [errors.CLOSE_LOGGED_OUT]
    assert not (sessions["bob"].closed or sessions["static"].closed)


@pytest.mark.parametrize("form", [
    {}, {"logout_token": "not-a-jwt"}, {"logout_token": logout_token(nonce="x")},
    {"logout_token": logout_token(key=KEY_B)},
])
def test_invalid_requests_get_400_and_end_nothing(resource, sessions, form):
    status, body = post(resource, **form)
    assert status == 400 and body["error"] == "invalid_request"
    assert all(not session.closed for session in sessions.values())
    token = form.get("logout_token")
    if token:
        assert token not in json.dumps(body)          # never echo the token


def test_failures_are_auth_failures():
    assert issubclass(NotALogoutToken, AuthFailure)
