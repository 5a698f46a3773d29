"""OIDC back-channel logout (SPEC §3 item 7): POST /backchannel-logout.

Keycloak POSTs a signed ``logout_token`` (form field) when a user's login
session ends. ``validate_logout`` checks it with the same strict parsing, key and
algorithm rules as access tokens (tokens.py): signed by the realm's key (its
``kid`` found in the JWKS cache), an allowed algorithm, ``iss`` equal to the
configured issuer, the configured client id in ``aud``, payload ``typ`` "Logout"
when present, the back-channel logout event, no ``nonce``, ``sid`` and/or
``sub``, an integer ``iat`` not in the future (and ``exp``, when present, not past).

``BackchannelLogoutResource`` answers 200 and ends, with GOODBYE
``wampchat.close.logged_out``, every Keycloak session of that ``sid`` (else of
that ``sub``); a token failing any check gets 400 and ends nothing. Tokens are
never logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

import jwt
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET

from wampchat import errors
from wampchat.auth import tokens
from wampchat.auth.jwks import JwksCache
from wampchat.errors import AuthFailure
from wampchat.logs import Logger

log = Logger()

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
KEYCLOAK_PROVIDER = "keycloak"
# Without exp, a logout token older than this (plus leeway) is refused.
MAX_AGE_WITHOUT_EXP = 300.0


class NotALogoutToken(AuthFailure):
    """Payload typ other than Logout, no back-channel logout event, or a nonce."""
    reason = "not_a_logout_token"


@dataclass(frozen=True)
class LogoutRequest:
    """Whose sessions a valid logout token ends: a login session (sid) and/or a user (sub)."""

    sub: str | None
    sid: str | None


def _optional_text(claims: dict[str, Any], name: str) -> str | None:
    if name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, str) or not value:
        raise tokens.InvalidClaim(f"claim {name} is not a non-empty string")
    return value


def _check_logout_claims(claims: dict[str, Any], settings: tokens.ValidationSettings,
                         now: float) -> LogoutRequest:
    iat = tokens._integer_claim(claims, "iat", required=True)
    exp = tokens._integer_claim(claims, "exp", required=False)
    nbf = tokens._integer_claim(claims, "nbf", required=False)
    if claims.get("iss") != settings.issuer:
        raise tokens.WrongIssuer(f"issuer {claims.get('iss')!r} is not {settings.issuer!r}")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if settings.client_id not in audiences:
        raise tokens.WrongAudience(f"the logout token is not for client {settings.client_id!r}")
    if "typ" in claims and claims["typ"] != "Logout":
        raise NotALogoutToken(f"token type {claims.get('typ')!r} is not Logout")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise NotALogoutToken("the token has no back-channel logout event")
    if "nonce" in claims:
        raise NotALogoutToken("a logout token must not carry a nonce")
    sub, sid = _optional_text(claims, "sub"), _optional_text(claims, "sid")
    if sub is None and sid is None:
        raise tokens.InvalidClaim("the logout token has neither sid nor sub")
    leeway = settings.leeway
    assert iat is not None
    if iat > now + leeway:
        raise tokens.TokenNotYetValid("the logout token was issued in the future (iat)")
    if nbf is not None and nbf > now + leeway:
        raise tokens.TokenNotYetValid("the logout token is not valid yet (nbf)")
    if exp is not None and now > exp + leeway:
        raise tokens.TokenExpired(f"the logout token expired {int(now - exp)} s ago")
    if exp is None and now > iat + MAX_AGE_WITHOUT_EXP + leeway:
        raise tokens.TokenExpired("the logout token is too old (iat)")
    return LogoutRequest(sub=sub, sid=sid)


def validate_logout(token: str, key: jwt.PyJWK, settings: tokens.ValidationSettings,
                    now: float) -> LogoutRequest:
    """Check a back-channel logout token against key and settings at time now.

    Pure. Raises AuthFailure subclasses: those of tokens.validate for parsing,
    algorithm, signature, issuer, audience and times, and NotALogoutToken.
    """
    segments = tokens._split(token)
    header = tokens._header(segments)
    claims = tokens.strict_json_object(tokens._b64decode(segments[1], "payload"), "payload")
    tokens._check_algorithm(header, key, settings)
    tokens._check_signature(segments, key)
    return _check_logout_claims(claims, settings, now)


class LogoutValidator:
    """validate_logout with the key from the issuer's JwksCache (which may fetch)."""

    def __init__(self, settings: tokens.ValidationSettings, jwks: JwksCache,
                 clock: IReactorTime) -> None:
        self._settings = settings
        self._jwks = jwks
        self._clock = clock

    async def validate(self, token: Any) -> LogoutRequest:
        if not isinstance(token, str):
            raise tokens.MalformedToken("the token is not a string")
        key = await self._jwks.key_for(tokens.unverified_kid(token))
        return validate_logout(token, key, self._settings, self._clock.seconds())


def matching_sessions(realms: dict[str, Any], request: LogoutRequest) -> list[Any]:
    """Keycloak sessions of request.sid (and its sub, if given), else of request.sub."""
    found = []
    for realm in realms.values():
        for session in list(realm.sessions.values()):
            accept = session.credentials
            if accept is None or accept.authprovider != KEYCLOAK_PROVIDER:
                continue
            if request.sid is not None:
                hit = accept.sid == request.sid and request.sub in (None, accept.subject)
            else:
                hit = accept.subject == request.sub
            if hit:
                found.append(session)
    return found


def end_sessions(realms: dict[str, Any], request: LogoutRequest) -> int:
    """GOODBYE wampchat.close.logged_out to every matching session; how many."""
    sessions = matching_sessions(realms, request)
    for session in sessions:
        session.close_by_router(errors.CLOSE_LOGGED_OUT, "the user logged out")
    return len(sessions)


def _json(request, status: int, document: dict[str, Any]) -> None:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    request.write(json.dumps(document).encode("utf-8"))
    request.finish()


class BackchannelLogoutResource(resource.Resource):
    """POST /backchannel-logout with form field logout_token (OIDC back-channel logout)."""

    isLeaf = True

    def __init__(self, validator: LogoutValidator, realms: dict[str, Any]) -> None:
        super().__init__()
        self._validator = validator
        self._realms = realms

    def render_POST(self, request):
        values = (request.args or {}).get(b"logout_token") or []
        if len(values) != 1:
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Cache-Control", b"no-store")
            return json.dumps({"error": "invalid_request",
                               "error_description": "exactly one logout_token form field "
                                                    "is required"}).encode("utf-8")
        try:
            token = values[0].decode("ascii")
        except UnicodeDecodeError:
            token = None
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = ensureDeferred(self._validator.validate(token))

        def valid(logout: LogoutRequest) -> None:
            count = end_sessions(self._realms, logout)
            log.info("back-channel logout ended {count} sessions", count=count)
            if not gone:
                _json(request, 200, {"status": "ok"})

        def invalid(failure) -> None:
            if failure.check(AuthFailure):
                text = failure.value.message()
            else:
                log.failure("back-channel logout failed", failure)
                text = "the logout token cannot be checked"
            log.info("back-channel logout refused: {text}", text=text)
            if not gone:
                _json(request, 400, {"error": "invalid_request", "error_description": text})

        d.addCallbacks(valid, invalid)
        return NOT_DONE_YET


def logout_resource_for(auth_configs: Iterable[Any], keycloak_factory: Any,
                        realms: dict[str, Any], clock: IReactorTime
                        ) -> BackchannelLogoutResource | None:
    """The logout resource of a transport whose auth has a keycloak entry, or None.

    Needs a factory with jwks_for(config) (KeycloakFactory), so the logout token
    is checked against the same key cache as the access tokens.
    """
    jwks_for = getattr(keycloak_factory, "jwks_for", None)
    if jwks_for is None:
        return None
    for config in auth_configs:
        if config.type == "keycloak" and config.keycloak is not None:
            validator = LogoutValidator(config.keycloak, jwks_for(config.keycloak), clock)
            return BackchannelLogoutResource(validator, realms)
    return None
