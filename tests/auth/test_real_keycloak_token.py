"""A token that a real Keycloak issued, checked with the realm keys it published.

The fixtures come unchanged from the public repository
SwissDataScienceCenter/renku-search, modules/openid-keycloak/src/test/resources/
(jwt-token2 + jwks2.json for the access token, jwt-token1 + jwks.json for the ID
token); see fixtures/keycloak_renku/SOURCE.md. Keycloak wrote these bytes, so
they pin our parser and validator to what Keycloak really sends: the header
with its spaces (``"typ" : "JWT"``), a JWKS with an ``enc`` key and ``x5c``, an
access token with no ``aud`` whose client is only in ``azp``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from wampchat.auth import tokens
from wampchat.auth.jwks import JwksCache, usable_keys
from wampchat.auth.keycloak import KeycloakAuthenticator
from wampchat.config_types import KeycloakAuthConfig

from .keycloak_fakes import failure_of, result_of

FIXTURES = Path(__file__).parent / "fixtures" / "keycloak_renku"
ACCESS_TOKEN = (FIXTURES / "access_token.jwt").read_text().strip()
ACCESS_JWKS = json.loads((FIXTURES / "access_token_jwks.json").read_text())
ID_TOKEN = (FIXTURES / "id_token.jwt").read_text().strip()
ID_JWKS = json.loads((FIXTURES / "id_token_jwks.json").read_text())

# What the access token says (read from it once by hand; the tests check it).
ISSUER = "https://ci-renku-3581.dev.renku.ch/auth/realms/Renku"
CLIENT = "admin-cli"               # azp; the token has no aud
SUB = "c221881a-81ea-4e7d-9b2c-2c887ca932a7"
IAT, EXP = 1716300006, 1716301806
SIGNING_KID = "rCfowtYHV4LiMvtye-vBX9FReP9_4LQ3HkeNmROzio8"
ENC_KID = "pGXWoq0eN3yina5xq6x11R1AXF3F5b_DgRdU2QR3p7s"

SETTINGS = tokens.TokenSettings(issuer=ISSUER, client_id=CLIENT)
INSIDE = IAT + 60


def signing_key():
    return usable_keys(ACCESS_JWKS, min_rsa_key_bits=2048)[SIGNING_KID]


def test_published_jwks_yields_only_the_signing_key():
    """Keycloak's /certs lists an RSA-OAEP `enc` key next to the RS256 one: only RS256 is used."""
    keys = usable_keys(ACCESS_JWKS, min_rsa_key_bits=2048)
    assert set(keys) == {SIGNING_KID}
    assert ENC_KID not in keys
    assert tokens.unverified_kid(ACCESS_TOKEN) == SIGNING_KID


def test_real_access_token_validates_inside_its_lifetime():
    """Signature, iss, azp, typ Bearer and times all check out with the clock inside the lifetime."""
    identity = tokens.validate(ACCESS_TOKEN, signing_key(), SETTINGS, INSIDE)
    assert identity.sub == SUB
    assert identity.email == "eike.kettner@sdsc.ethz.ch"
    assert identity.preferred_username == "eike.kettner@sdsc.ethz.ch"
    assert identity.name == "Eike Kettner"
    assert identity.sid == "1dc54f86-c65b-479b-b858-24832da2c9dc"
    assert (identity.iat, identity.exp) == (IAT, EXP)
    assert identity.roles == ()                      # this realm put no roles in the token
    assert identity.claims["typ"] == "Bearer" and "aud" not in identity.claims
    # The last second the leeway allows is still inside.
    assert tokens.validate(ACCESS_TOKEN, signing_key(), SETTINGS, EXP + 30).sub == SUB


@pytest.mark.parametrize("now, refusal", [
    (EXP + 31, tokens.TokenExpired),             # past exp + 30 s leeway
    (EXP + 86400 * 365, tokens.TokenExpired),   # today, more or less
    (IAT - 31, tokens.TokenNotYetValid),         # issued "in the future" beyond the leeway
])
def test_real_access_token_refused_outside_its_lifetime(now, refusal):
    with pytest.raises(refusal):
        tokens.validate(ACCESS_TOKEN, signing_key(), SETTINGS, now)


@pytest.mark.parametrize("settings, refusal", [
    (tokens.TokenSettings(issuer=ISSUER, client_id="wampchat"), tokens.WrongAudience),
    (tokens.TokenSettings(issuer=ISSUER + "/", client_id=CLIENT), tokens.WrongIssuer),
    (tokens.TokenSettings(issuer="https://ci-renku-3581.dev.renku.ch/auth/realms/renku",
                          client_id=CLIENT), tokens.WrongIssuer),
    (tokens.TokenSettings(issuer=ISSUER, client_id=CLIENT, algorithms=("RS512",)),
     tokens.UnsupportedAlgorithm),
])
def test_real_access_token_refused_with_other_settings(settings, refusal):
    """The same real token is refused for another client, an issuer differing by a slash or
    by case, and an allow-list without RS256."""
    with pytest.raises(refusal):
        tokens.validate(ACCESS_TOKEN, signing_key(), settings, INSIDE)


def test_real_access_token_with_one_changed_byte_is_refused():
    """Changing one character of sub, or reversing the signature, breaks Keycloak's signature."""
    header, payload, signature = ACCESS_TOKEN.split(".")
    text = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert SUB.encode() in text
    changed = base64.urlsafe_b64encode(text.replace(SUB.encode(), ("d" + SUB[1:]).encode()))
    forged = f"{header}.{changed.rstrip(b'=').decode()}.{signature}"
    with pytest.raises(tokens.BadSignature):
        tokens.validate(forged, signing_key(), SETTINGS, INSIDE)
    with pytest.raises(tokens.BadSignature):
        tokens.validate(f"{header}.{payload}.{signature[::-1]}", signing_key(), SETTINGS, INSIDE)


def test_real_access_token_does_not_verify_with_another_realms_key():
    """The other Renku realm's key (same kid format, same issuer family) does not verify it."""
    other = usable_keys(ID_JWKS, min_rsa_key_bits=2048)["Pg4RoLW9CNX6Z460K1vCjBckCnme3WV24D6i65KjsBU"]
    with pytest.raises(tokens.BadSignature):
        tokens.validate(ACCESS_TOKEN, other, SETTINGS, INSIDE)


def test_real_keycloak_id_token_is_refused_as_wrong_type():
    """A genuine, correctly signed Keycloak ID token is not an access token."""
    claims_iat, issuer = 1715782646, "https://ci-renku-3622.dev.renku.ch/auth/realms/Renku"
    key = usable_keys(ID_JWKS, min_rsa_key_bits=2048)[tokens.unverified_kid(ID_TOKEN)]
    with pytest.raises(tokens.WrongTokenType):
        tokens.validate(ID_TOKEN, key, tokens.TokenSettings(issuer=issuer, client_id="renku"),
                        claims_iat + 60)


# -- the same token through the authenticator, the JWKS served over (stub) HTTP ---------

class PublishedCerts(Resource):
    """The realm's /certs as Keycloak published it, counting requests."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def render_GET(self, request) -> bytes:
        self.requests += 1
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-cache")
        return json.dumps(ACCESS_JWKS).encode()


def test_real_access_token_through_the_keycloak_authenticator():
    """JwksCache fetches the published JWKS; the authenticator maps the real token to an Accept."""
    clock = Clock()
    clock.advance(INSIDE)
    certs = PublishedCerts()
    jwks_url = f"{ISSUER}/protocol/openid-connect/certs"
    config = KeycloakAuthConfig(issuer=ISSUER, client_id=CLIENT, jwks_url=jwks_url)
    cache = JwksCache(StubTreq(certs), clock, jwks_url=jwks_url, issuer=ISSUER)
    authenticator = KeycloakAuthenticator(config, cache, None, clock)

    accept = result_of(authenticator.accept_token(ACCESS_TOKEN))
    assert accept.authid == "eike.kettner@sdsc.ethz.ch"
    assert accept.authrole == "user" and accept.authprovider == "keycloak"
    assert accept.authextra["keycloak_id"] == SUB and accept.authextra["roles"] == []
    assert accept.expires_at == EXP + config.leeway
    assert certs.requests == 1

    clock.advance(EXP + 31 - INSIDE)          # past exp + leeway, keys still cached
    assert failure_of(authenticator.accept_token(ACCESS_TOKEN)).check(tokens.TokenExpired)
    assert certs.requests == 1
