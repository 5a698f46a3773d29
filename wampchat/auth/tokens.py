"""Access-token validation: a compact JWS + one public key + settings -> Identity.

Pure: no I/O, no clock of its own (``now`` is passed in). Every refusal is an
``AuthFailure`` subclass with a stable ``reason`` (SPEC §3 items 3-4); messages
name the cause and never contain the token.

We parse the header and payload ourselves with a strict JSON reader so that
duplicate member names, ``NaN``/``Infinity``, overflowing numbers and
non-integer times are refused before any claim is trusted; PyJWT's algorithm
objects do the signature check. Header members that point at keys (``jku``,
``x5u``, ``jwk``, ``x5c``) are never read: the key comes from the caller.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import jwt

from wampchat.errors import AuthFailure

MAX_TOKEN_BYTES = 16 * 1024

# Algorithms that are never accepted, whatever the configuration says: "none"
# has no signature and HMAC would let anyone holding the public key sign.
_FORBIDDEN_ALGORITHM = re.compile(r"^(none|hs\d*)$", re.IGNORECASE)

# Signature algorithm -> (JWK kty it needs, EC curve it needs or None).
_KEY_FAMILY: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "ES256K": ("EC", "secp256k1"), "EdDSA": ("OKP", None),
}

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


# -- failures, one per reason ---------------------------------------------------------

class TokenTooLarge(AuthFailure):
    reason = "too_large"


class MalformedToken(AuthFailure):
    reason = "malformed"


class NestedToken(AuthFailure):
    """Encrypted (five segments) or nested (``cty: JWT``) tokens."""
    reason = "nested_token"


class CriticalHeader(AuthFailure):
    reason = "crit_header"


class UnsupportedAlgorithm(AuthFailure):
    reason = "unsupported_algorithm"


class KeyMismatch(AuthFailure):
    """The token's algorithm does not fit the key its kid names."""
    reason = "key_mismatch"


class UnknownKey(AuthFailure):
    reason = "unknown_key"


class BadSignature(AuthFailure):
    reason = "bad_signature"


class InvalidClaim(AuthFailure):
    """A required claim is missing or has the wrong JSON type (exp, nbf, iat, sub)."""
    reason = "invalid_claim"


class TokenExpired(AuthFailure):
    reason = "expired"


class TokenNotYetValid(AuthFailure):
    reason = "not_yet_valid"


class WrongIssuer(AuthFailure):
    reason = "wrong_issuer"


class WrongAudience(AuthFailure):
    reason = "wrong_audience"


class WrongTokenType(AuthFailure):
    reason = "wrong_type"


# -- values ---------------------------------------------------------------------------

class ValidationSettings(Protocol):
    """What validate() needs; KeycloakAuthConfig and TokenSettings both fit."""

    issuer: str
    client_id: str
    algorithms: Sequence[str]
    leeway: float


@dataclass(frozen=True)
class TokenSettings:
    """Validation settings on their own (tests, back-channel logout)."""

    issuer: str
    client_id: str
    algorithms: tuple[str, ...] = ("RS256",)
    leeway: float = 30.0


@dataclass(frozen=True)
class Identity:
    """Who a valid access token speaks for."""

    sub: str
    email: str | None
    preferred_username: str | None
    name: str | None
    roles: tuple[str, ...]            # realm_access.roles + resource_access.<client>.roles
    sid: str | None
    exp: int
    iat: int | None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


# -- strict parsing -------------------------------------------------------------------

def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):                      # 1e400 would become inf
        raise ValueError("number out of range")
    return value


# Built once: json.loads with hooks builds a decoder per call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float,
                                   object_pairs_hook=_refuse_duplicates)


def strict_json_object(data: bytes, part: str) -> dict[str, Any]:
    """Decode one JSON object, refusing NaN/Infinity, overflow and duplicate members."""
    try:
        value = _STRICT_DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedToken(f"the {part} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise MalformedToken(f"the {part} is not a JSON object")
    return value


def _b64decode(segment: str, part: str) -> bytes:
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise MalformedToken(f"the {part} is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken(f"the {part} is not base64url") from None


def _split(token: Any) -> list[str]:
    if not isinstance(token, str):
        raise MalformedToken("the token is not a string")
    if len(token) > MAX_TOKEN_BYTES or len(token.encode("utf-8", "replace")) > MAX_TOKEN_BYTES:
        raise TokenTooLarge(f"the token is over {MAX_TOKEN_BYTES} bytes")
    segments = token.split(".")
    if len(segments) == 5:
        raise NestedToken("encrypted tokens (JWE) are not accepted")
    if len(segments) != 3 or not segments[0] or not segments[1]:
        raise MalformedToken("the token is not a compact JWS of three segments")
    return segments


# Checked headers by their encoded segment: a realm's tokens share a few (one per key), and
# each token's header is read twice (its kid, then its alg). Read-only; bounded.
_HEADERS: dict[str, dict[str, Any]] = {}
_HEADERS_MAX = 64


def _header(segments: list[str]) -> dict[str, Any]:
    header = _HEADERS.get(segments[0])
    if header is None:
        header = _checked_header(segments[0])
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[segments[0]] = header
    return header


def _checked_header(segment: str) -> dict[str, Any]:
    header = strict_json_object(_b64decode(segment, "header"), "header")
    if "crit" in header:
        raise CriticalHeader("the token has a crit header")
    cty = header.get("cty")
    if isinstance(cty, str) and cty.upper() in ("JWT", "APPLICATION/JWT"):
        raise NestedToken("nested tokens (cty JWT) are not accepted")
    if "enc" in header:
        raise NestedToken("encrypted tokens (JWE) are not accepted")
    return header


def unverified_kid(token: str) -> str:
    """The header's kid, to find the key; nothing else of an unverified token is used.

    Raises TokenTooLarge, MalformedToken (no kid, or not a string), NestedToken,
    CriticalHeader.
    """
    kid = _header(_split(token)).get("kid")
    if not isinstance(kid, str) or not kid:
        raise MalformedToken("the token header has no kid")
    return kid


# -- checks ---------------------------------------------------------------------------

def allowed_algorithms(configured: Sequence[str]) -> tuple[str, ...]:
    """The configured allow-list without none/HMAC, which are never allowed."""
    return tuple(alg for alg in configured if not _FORBIDDEN_ALGORITHM.match(alg))


def _check_algorithm(header: dict[str, Any], key: jwt.PyJWK, settings: ValidationSettings) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise MalformedToken("the token header has no alg")
    if _FORBIDDEN_ALGORITHM.match(alg):
        raise UnsupportedAlgorithm(f"algorithm {alg!r} is never accepted")
    if alg not in allowed_algorithms(settings.algorithms) or alg not in _KEY_FAMILY:
        raise UnsupportedAlgorithm(f"algorithm {alg!r} is not allowed")
    kty, curve = _KEY_FAMILY[alg]
    if key.key_type != kty:
        raise KeyMismatch(f"algorithm {alg} needs a {kty} key, the key is {key.key_type}")
    # PyJWK's algorithm_name is the JWK's own alg (or the one its kty implies);
    # the token may not pick another one for the same key.
    if key.algorithm_name != alg:
        raise KeyMismatch(f"algorithm {alg} does not match the key's {key.algorithm_name}")
    if curve is not None and getattr(getattr(key.key, "curve", None), "name", None) not in (
            None, _CURVE_NAMES[curve]):
        raise KeyMismatch(f"algorithm {alg} needs curve {curve}")
    if key.public_key_use not in (None, "sig"):
        raise KeyMismatch("the key is not a signing key")
    return alg


# JOSE curve name -> cryptography's curve name
_CURVE_NAMES = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1",
                "secp256k1": "secp256k1"}


def _check_signature(segments: list[str], key: jwt.PyJWK) -> None:
    signature = _b64decode(segments[2], "signature")
    if not signature:
        raise BadSignature("the token is not signed")
    signing_input = f"{segments[0]}.{segments[1]}".encode("ascii")
    try:
        valid = key.Algorithm.verify(signing_input, key.key, signature)
    except Exception:                      # a malformed signature is a bad signature
        valid = False
    if not valid:
        raise BadSignature("the signature does not verify with the realm's key")


def _integer_claim(claims: dict[str, Any], name: str, required: bool) -> int | None:
    value = claims.get(name)
    if value is None and name not in claims and not required:
        return None
    if type(value) is not int:             # bool is an int subclass: refuse it too
        what = "missing" if name not in claims else "not a JSON integer"
        raise InvalidClaim(f"claim {name} is {what}")
    return value


def _check_claims(claims: dict[str, Any], settings: ValidationSettings, now: float) -> None:
    exp = _integer_claim(claims, "exp", required=True)
    nbf = _integer_claim(claims, "nbf", required=False)
    iat = _integer_claim(claims, "iat", required=False)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidClaim("claim sub is missing or empty")
    if claims.get("typ") != "Bearer":
        raise WrongTokenType(f"token type {claims.get('typ')!r} is not an access token (Bearer)")
    if claims.get("iss") != settings.issuer:
        raise WrongIssuer(f"issuer {claims.get('iss')!r} is not {settings.issuer!r}")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if settings.client_id not in audiences and claims.get("azp") != settings.client_id:
        raise WrongAudience(f"the token is not for client {settings.client_id!r}")
    leeway = settings.leeway
    assert exp is not None
    if now > exp + leeway:
        raise TokenExpired(f"the token expired {int(now - exp)} s ago")
    if nbf is not None and nbf > now + leeway:
        raise TokenNotYetValid("the token is not valid yet (nbf)")
    if iat is not None and iat > now + leeway:
        raise TokenNotYetValid("the token was issued in the future (iat)")


def _roles(claims: dict[str, Any], client_id: str) -> tuple[str, ...]:
    found: list[str] = []
    realm_access = claims.get("realm_access")
    resource_access = claims.get("resource_access")
    client_access = resource_access.get(client_id) if isinstance(resource_access, dict) else None
    for access in (realm_access, client_access):
        roles = access.get("roles") if isinstance(access, dict) else None
        for role in roles if isinstance(roles, list) else ():
            if isinstance(role, str) and role not in found:
                found.append(role)
    return tuple(found)


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def validate(token: str, key: jwt.PyJWK, settings: ValidationSettings, now: float) -> Identity:
    """Check token against key and settings at time now; the Identity it carries.

    Raises one AuthFailure subclass per reason: TokenTooLarge, MalformedToken,
    NestedToken, CriticalHeader, UnsupportedAlgorithm, KeyMismatch, BadSignature,
    InvalidClaim, WrongTokenType, WrongIssuer, WrongAudience, TokenExpired,
    TokenNotYetValid (all with URI wamp.error.authentication_failed).
    """
    segments = _split(token)
    header = _header(segments)
    claims = strict_json_object(_b64decode(segments[1], "payload"), "payload")
    _check_algorithm(header, key, settings)
    _check_signature(segments, key)
    _check_claims(claims, settings, now)
    return Identity(sub=claims["sub"], email=_text(claims, "email"),
                    preferred_username=_text(claims, "preferred_username"),
                    name=_text(claims, "name"), roles=_roles(claims, settings.client_id),
                    sid=_text(claims, "sid"), exp=claims["exp"], iat=claims.get("iat"),
                    claims=claims)
