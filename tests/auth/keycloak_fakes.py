"""Test doubles for Keycloak: signing keys, token minting and a fake realm Resource.

Keys are made with cryptography once per test run (RSA generation is slow);
tokens are minted with PyJWT, exactly as a real issuer would sign them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

ISSUER = "http://keycloak.test/realms/test"
CLIENT_ID = "wampchat"
JWKS_URL = f"{ISSUER}/protocol/openid-connect/certs"
NOW = 1_700_000_000


@dataclass
class SigningKey:
    """A private key with its kid and algorithm, and its public JWK."""

    kid: str
    private: Any
    alg: str

    def jwk(self, **extra: Any) -> dict[str, Any]:
        public = self.private.public_key()
        data = json.loads(jwt.algorithms.get_default_algorithms()[self.alg].to_jwk(public))
        data.update(kid=self.kid, alg=self.alg, use="sig")
        data.update(extra)
        return {k: v for k, v in data.items() if v is not None}

    def pyjwk(self, **extra: Any) -> jwt.PyJWK:
        return jwt.PyJWK(self.jwk(**extra))

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        header = {"kid": self.kid, **headers}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=header)


def _rsa(bits: int = 2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


KEY_A = SigningKey("key-a", _rsa(), "RS256")
KEY_B = SigningKey("key-b", _rsa(), "RS256")
SMALL_RSA = SigningKey("small", _rsa(1024), "RS256")
EC_KEY = SigningKey("ec-1", ec.generate_private_key(ec.SECP256R1()), "ES256")
ED_KEY = SigningKey("ed-1", ed25519.Ed25519PrivateKey.generate(), "EdDSA")


def claims(now: int = NOW, **overrides: Any) -> dict[str, Any]:
    """A Keycloak-shaped access token payload; an override of None drops the claim."""
    payload: dict[str, Any] = {
        "exp": now + 300, "iat": now, "jti": "2b7e3c1d", "iss": ISSUER,
        "aud": "account", "sub": "f1b2c3d4-0000-4000-8000-000000000001", "typ": "Bearer",
        "azp": CLIENT_ID, "sid": "sid-1", "scope": "openid email profile",
        "email_verified": True, "name": "Alice Liddell", "preferred_username": "alice",
        "email": "alice@example.com",
        "realm_access": {"roles": ["offline_access", "user"]},
        "resource_access": {CLIENT_ID: {"roles": ["chatter"]},
                            "account": {"roles": ["manage-account"]}},
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def token(key: SigningKey = KEY_A, now: int = NOW, **overrides: Any) -> str:
    return key.sign(claims(now, **overrides))


class FakeKeycloak(Resource):
    """A realm's discovery and /certs endpoints, counting requests.

    ``up = False`` answers 503, ``garbage`` answers non-JSON, ``hang`` never answers.
    """

    isLeaf = True

    def __init__(self, keys: list[SigningKey] | None = None, issuer: str = ISSUER) -> None:
        super().__init__()
        self.issuer = issuer
        self.jwks = [key.jwk() for key in keys or []]
        self.cache_control = "no-cache"          # what Keycloak sends on /certs
        self.up = True
        self.garbage = False
        self.hang = False
        self.discovery = True
        self.jwks_requests = 0
        self.discovery_requests = 0
        self.requested_paths: list[str] = []
        self.pending: list[Any] = []              # requests held by `hang`

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    def set_keys(self, *keys: SigningKey) -> None:
        self.jwks = [key.jwk() for key in keys]

    def render_GET(self, request) -> bytes:
        path = request.path.decode()
        self.requested_paths.append(path)
        if path.endswith("/.well-known/openid-configuration"):
            self.discovery_requests += 1
            if not self.discovery:
                request.setResponseCode(404)
                return b"not found"
            return self._json(request, {"issuer": self.issuer, "jwks_uri": self.jwks_url})
        if path.endswith("/protocol/openid-connect/certs"):
            self.jwks_requests += 1
            if self.hang:
                self.pending.append(request)
                return NOT_DONE_YET
            if not self.up:
                request.setResponseCode(503)
                return b"Service Unavailable"
            if self.garbage:
                return b"<html>proxy error</html>"
            request.setHeader(b"cache-control", self.cache_control.encode())
            return self._json(request, {"keys": self.jwks})
        request.setResponseCode(404)
        return b"not found"

    def release(self) -> None:
        """Answer the requests held while `hang` was set (then StubTreq.flush())."""
        self.hang = False
        pending, self.pending = self.pending, []
        for request in pending:
            request.write(self._json(request, {"keys": self.jwks}))
            request.finish()

    @staticmethod
    def _json(request, document: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(document).encode()


def result_of(coroutine) -> Any:
    """The result of a coroutine that must already have finished (StubTreq + Clock)."""
    results: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert results, "the coroutine did not finish"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure_of(coroutine) -> Failure:
    """The Failure of a coroutine that must already have failed."""
    results: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert results, "the coroutine did not finish"
    assert isinstance(results[0], Failure), f"expected a failure, got {results[0]!r}"
    return results[0]


class StoreLogin:
    """The just-in-time user seam over a MemoryUserStore (users.directory's role, in tests)."""

    def __init__(self, store) -> None:
        self.store = store

    async def login(self, identity):
        return await self.store.create_or_get(identity.sub, identity.email,
                                              identity.preferred_username, identity.roles)
