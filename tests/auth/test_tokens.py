"""tokens.validate: every refusal of SPEC §3 items 3-4 has its own reason, and good tokens pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from wampchat.auth import tokens
from wampchat.errors import AUTHENTICATION_FAILED, AuthFailure

from .keycloak_fakes import CLIENT_ID, EC_KEY, ED_KEY, ISSUER, KEY_A, KEY_B, NOW, claims, token

SETTINGS = tokens.TokenSettings(issuer=ISSUER, client_id=CLIENT_ID)
KEY = KEY_A.pyjwk()


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def raw_token(header: str | None = None, payload: str | None = None, key=KEY_A) -> str:
    """Sign hand-written JSON text, to reach what PyJWT's encoder would never produce."""
    header = header if header is not None else json.dumps({"alg": "RS256", "kid": key.kid})
    payload = payload if payload is not None else json.dumps(claims())
    signing_input = f"{b64(header)}.{b64(payload)}"
    algorithm = jwt.algorithms.get_default_algorithms()[key.alg]
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), key.private))}"


def hs256_with_public_key(as_jwk: bool) -> str:
    public = KEY_A.private.public_key()
    secret = (json.dumps(KEY_A.jwk()).encode() if as_jwk else public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': KEY_A.kid}))}.{b64(json.dumps(claims()))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def exp_payload(text: str) -> str:
    """A payload whose exp member is the given raw JSON text."""
    body = json.dumps(claims(exp=None))
    return body[:-1] + f', "exp": {text}}}'


def tampered() -> str:
    header, _, signature = token().split(".")
    return f"{header}.{b64(json.dumps(claims(sub='someone-else')))}.{signature}"


REFUSALS = [
    # (case, token, reason)
    ("expired", lambda: token(exp=NOW - 31), "expired"),
    ("not yet valid (nbf)", lambda: token(nbf=NOW + 31), "not_yet_valid"),
    ("issued in the future", lambda: token(iat=NOW + 31), "not_yet_valid"),
    ("tampered payload", tampered, "bad_signature"),
    ("signed by another key", lambda: token(KEY_B), "bad_signature"),
    ("stripped signature", lambda: token().rsplit(".", 1)[0] + ".", "bad_signature"),
    ("jwk header names the signer", lambda: KEY_B.sign(claims(), jwk=KEY_B.jwk(),
                                                       jku="http://evil/certs", x5u="http://evil/x5u"),
     "bad_signature"),
    ("wrong issuer", lambda: token(iss="http://evil.test/realms/test"), "wrong_issuer"),
    ("issuer with trailing slash", lambda: token(iss=ISSUER + "/"), "wrong_issuer"),
    ("account alone in aud", lambda: token(aud="account", azp="other"), "wrong_audience"),
    ("another client in aud list", lambda: token(aud=["other", "account"], azp="other"),
     "wrong_audience"),
    ("no aud and no azp", lambda: token(aud=None, azp=None), "wrong_audience"),
    ("ID token", lambda: token(typ="ID"), "wrong_type"),
    ("refresh token", lambda: token(typ="Refresh"), "wrong_type"),
    ("logout token", lambda: token(typ="Logout"), "wrong_type"),
    ("no typ", lambda: token(typ=None), "wrong_type"),
    ("empty sub", lambda: token(sub=""), "invalid_claim"),
    ("missing sub", lambda: token(sub=None), "invalid_claim"),
    ("numeric sub", lambda: token(sub=42), "invalid_claim"),
    ("missing exp", lambda: token(exp=None), "invalid_claim"),
    ("exp as a string", lambda: token(exp="9999999999"), "invalid_claim"),
    ("exp as a boolean", lambda: token(exp=True), "invalid_claim"),
    ("exp as a fraction", lambda: token(exp=NOW + 300.5), "invalid_claim"),
    ("exp null", lambda: raw_token(payload=exp_payload("null")), "invalid_claim"),
    ("nbf as a string", lambda: token(nbf=str(NOW)), "invalid_claim"),
    ("iat as a boolean", lambda: token(iat=False), "invalid_claim"),
    ("exp NaN", lambda: raw_token(payload=exp_payload("NaN")), "malformed"),
    ("exp Infinity", lambda: raw_token(payload=exp_payload("Infinity")), "malformed"),
    ("exp 1e400", lambda: raw_token(payload=exp_payload("1e400")), "malformed"),
    ("duplicate exp", lambda: raw_token(payload=exp_payload(f"{NOW + 300}, \"exp\": 9999999999")),
     "malformed"),
    ("duplicate alg in header", lambda: raw_token(
        header='{"alg": "RS256", "kid": "key-a", "alg": "RS256"}'), "malformed"),
    ("payload not JSON", lambda: raw_token(payload="not json"), "malformed"),
    ("payload a JSON array", lambda: raw_token(payload="[1, 2]"), "malformed"),
    ("header not base64", lambda: "!!!." + token().split(".", 1)[1], "malformed"),
    ("two segments", lambda: token().rsplit(".", 1)[0], "malformed"),
    ("four segments", lambda: token() + ".x", "malformed"),
    ("header without alg", lambda: raw_token(header='{"kid": "key-a"}'), "malformed"),
    ("not a string", lambda: b"bytes", "malformed"),
    ("over 16 KiB", lambda: token(padding="x" * 16 * 1024), "too_large"),
    ("1 MiB", lambda: "a" * (1024 * 1024), "too_large"),
    ("five segments (JWE)", lambda: "a.b.c.d.e", "nested_token"),
    ("cty JWT", lambda: KEY_A.sign(claims(), cty="JWT"), "nested_token"),
    ("crit header", lambda: KEY_A.sign(claims(), crit=["exp"]), "crit_header"),
    ("alg none", lambda: raw_token(header='{"alg": "none", "kid": "key-a"}'),
     "unsupported_algorithm"),
    ("alg NoNe", lambda: raw_token(header='{"alg": "NoNe", "kid": "key-a"}'),
     "unsupported_algorithm"),
    ("HS256 with the PEM public key", lambda: hs256_with_public_key(False), "unsupported_algorithm"),
    ("HS256 with the JWK public key", lambda: hs256_with_public_key(True), "unsupported_algorithm"),
    ("RS384 not allowed", lambda: jwt.encode(claims(), KEY_A.private, algorithm="RS384",
                                             headers={"kid": KEY_A.kid}), "unsupported_algorithm"),
    ("PS256 not allowed", lambda: raw_token(header='{"alg": "PS256", "kid": "key-a"}'),
     "unsupported_algorithm"),
]


@pytest.mark.parametrize("case, make, reason", REFUSALS, ids=[case for case, _, _ in REFUSALS])
def test_refusals_name_their_reason(case, make, reason):
    """Each broken token is refused with its own stable reason and no trace of the token."""
    bad = make()
    with pytest.raises(AuthFailure) as info:
        tokens.validate(bad, KEY, SETTINGS, now=NOW)
    failure = info.value
    assert failure.reason == reason, failure.message()
    assert failure.uri == AUTHENTICATION_FAILED
    assert isinstance(bad, bytes) or bad not in failure.message()
    assert str(failure)                      # the text names the cause


def test_hmac_is_refused_even_when_configured():
    """none and HS* in the configured allow-list are dropped, never honoured."""
    settings = tokens.TokenSettings(issuer=ISSUER, client_id=CLIENT_ID,
                                    algorithms=("HS256", "none", "RS256"))
    assert tokens.allowed_algorithms(settings.algorithms) == ("RS256",)
    with pytest.raises(tokens.UnsupportedAlgorithm):
        tokens.validate(hs256_with_public_key(False), KEY, settings, now=NOW)


def test_algorithm_must_fit_the_key():
    """An ES256 token named against an RSA key is refused even when ES256 is allowed."""
    settings = tokens.TokenSettings(issuer=ISSUER, client_id=CLIENT_ID, algorithms=("RS256", "ES256"))
    with pytest.raises(tokens.KeyMismatch):
        tokens.validate(token(EC_KEY), KEY, settings, now=NOW)
    with pytest.raises(tokens.KeyMismatch):
        tokens.validate(token(), KEY_A.pyjwk(use="enc"), settings, now=NOW)


ACCEPTED = [
    ("aud account + azp client", {}),
    ("client in aud list, other azp", {"aud": ["account", CLIENT_ID], "azp": "other"}),
    ("client as the aud string", {"aud": CLIENT_ID, "azp": None}),
    ("expired within leeway", {"exp": NOW - 30}),
    ("nbf within leeway", {"nbf": NOW + 30}),
    ("no nbf, no iat", {"iat": None}),
]


@pytest.mark.parametrize("case, overrides", ACCEPTED, ids=[case for case, _ in ACCEPTED])
def test_valid_tokens_give_the_identity(case, overrides):
    """A good token gives sub, email, names, sid, exp and realm + client roles."""
    identity = tokens.validate(token(**overrides), KEY, SETTINGS, now=NOW)
    assert identity.sub == "f1b2c3d4-0000-4000-8000-000000000001"
    assert identity.email == "alice@example.com"
    assert identity.preferred_username == "alice"
    assert identity.name == "Alice Liddell"
    assert identity.roles == ("offline_access", "user", "chatter")
    assert identity.sid == "sid-1"
    assert identity.exp == overrides.get("exp", NOW + 300)


@pytest.mark.parametrize("key, alg", [(EC_KEY, "ES256"), (ED_KEY, "EdDSA")])
def test_ec_and_okp_keys(key, alg):
    """EC and OKP realm keys verify tokens of their own algorithm when it is allowed."""
    settings = tokens.TokenSettings(issuer=ISSUER, client_id=CLIENT_ID, algorithms=(alg,))
    assert tokens.validate(token(key), key.pyjwk(), settings, now=NOW).sub


def test_leeway_is_configurable():
    """With no leeway a token is refused the second after exp."""
    settings = tokens.TokenSettings(issuer=ISSUER, client_id=CLIENT_ID, leeway=0)
    assert tokens.validate(token(exp=NOW), KEY, settings, now=NOW).exp == NOW
    with pytest.raises(tokens.TokenExpired):
        tokens.validate(token(exp=NOW), KEY, settings, now=NOW + 1)


def test_roles_ignore_other_clients_and_junk():
    """Only realm roles and the configured client's roles count; non-strings are dropped."""
    identity = tokens.validate(token(realm_access={"roles": ["user", 7, None]},
                                     resource_access={"other": {"roles": ["admin"]}}),
                               KEY, SETTINGS, now=NOW)
    assert identity.roles == ("user",)


def test_unverified_kid():
    """The kid is read from the header only; a token without one is malformed."""
    assert tokens.unverified_kid(token()) == "key-a"
    assert tokens.unverified_kid(token(KEY_B)) == "key-b"
    with pytest.raises(tokens.MalformedToken):
        tokens.unverified_kid(raw_token(header='{"alg": "RS256"}'))
    with pytest.raises(tokens.TokenTooLarge):
        tokens.unverified_kid("x" * 20000)


def test_checked_headers_are_reused_refused_ones_never():
    """A header seen before is not parsed again; one that was refused is refused every time,
    and a flood of distinct headers keeps the table bounded without changing any answer."""
    tokens._HEADERS.clear()
    good = token()
    tokens.validate(good, KEY, SETTINGS, NOW)
    assert list(tokens._HEADERS) == [good.split(".")[0]]
    crit = KEY_A.sign(claims(), crit=["exp"])
    for _ in range(2):
        with pytest.raises(tokens.CriticalHeader):
            tokens.validate(crit, KEY, SETTINGS, NOW)
    assert crit.split(".")[0] not in tokens._HEADERS
    for n in range(3 * tokens._HEADERS_MAX):
        varied = KEY_A.sign(claims(), typ=f"JWT{n}")
        assert tokens.validate(varied, KEY, SETTINGS, NOW).sub == claims()["sub"]
        assert len(tokens._HEADERS) <= tokens._HEADERS_MAX
    assert tokens.validate(good, KEY, SETTINGS, NOW).sub == claims()["sub"]
