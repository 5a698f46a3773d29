"""The Keycloak `ticket` authenticator: an access token in, an Accept out.

The token arrives as the AUTHENTICATE signature after CHALLENGE ``ticket``, or
on the WebSocket upgrade (``Authorization: Bearer`` / ``?token=``), in which case
HELLO is answered at once. Validation is local (SPEC §3): kid -> cached JWKS
key -> tokens.validate -> roles -> the user directory (just-in-time users).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.interfaces import IReactorTime

from wampchat.auth import roles, tokens
from wampchat.auth.authenticator import Accept, Challenge, Hello
from wampchat.auth.jwks import JwksCache
from wampchat.config_types import KeycloakAuthConfig
from wampchat.errors import AuthFailure, RoleRefused
from wampchat.logs import Logger

log = Logger()

AUTHMETHOD = "ticket"
AUTHPROVIDER = "keycloak"


class SubjectMismatch(AuthFailure):
    """A refresh token for another user than the session's."""
    reason = "wrong_subject"


class UserLogin(Protocol):
    """The just-in-time user seam (users.directory): identity -> user row with .id."""

    async def login(self, identity: tokens.Identity) -> Any:
        """The user for identity, created on first login. Raises EmailInUse, Unavailable."""


class KeycloakAuthenticator:
    """Ticket authenticator validating Keycloak access tokens against a JwksCache.

    ``users`` may be None (no database): the session's ``user_id`` is then None.
    Failures are AuthFailure subclasses from tokens.py (authentication_failed),
    Unavailable (wampchat.error.unavailable) and RoleRefused (not_authorized).
    """

    authmethod = AUTHMETHOD
    takes_transport_token = True

    def __init__(self, config: KeycloakAuthConfig, jwks: JwksCache, users: UserLogin | None,
                 clock: IReactorTime) -> None:
        self._config = config
        self._jwks = jwks
        self._users = users
        self._clock = clock

    async def hello(self, hello: Hello) -> Accept | Challenge:
        """A transport token is validated at once; otherwise CHALLENGE ticket."""
        token = hello.transport.bearer_token
        if token:
            return await self.accept_token(token)
        return Challenge(AUTHMETHOD)

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        """The AUTHENTICATE signature is the access token."""
        return await self.accept_token(signature)

    async def refresh(self, current: Accept, token: str) -> Accept:
        """A fresh token for the same sub: the session's new identity and deadline.

        Raises SubjectMismatch when the token is another user's, or any failure
        accept_token raises; the caller keeps the old identity then.
        """
        identity = await self.identify(token)
        if identity.sub != current.subject:
            raise SubjectMismatch("the token belongs to another user than this session")
        return await self._accept(identity)

    async def identify(self, token: Any) -> tokens.Identity:
        """Validate token locally: its kid picks a cached key of the configured issuer."""
        if not isinstance(token, str):
            raise tokens.MalformedToken("the token is not a string")
        kid = tokens.unverified_kid(token)
        key = await self._jwks.key_for(kid)
        return tokens.validate(token, key, self._config, self._clock.seconds())

    async def accept_token(self, token: Any) -> Accept:
        """identify() + role mapping + user lookup -> Accept."""
        return await self._accept(await self.identify(token))

    async def _accept(self, identity: tokens.Identity) -> Accept:
        authrole = roles.authrole_for(identity.roles, self._config.role_mapping)
        if authrole is None:
            raise RoleRefused("no role mapping rule matches the token's roles")
        user = await self._users.login(identity) if self._users is not None else None
        return Accept(
            authid=identity.email or identity.preferred_username or identity.sub,
            authrole=authrole,
            authmethod=AUTHMETHOD,
            authprovider=AUTHPROVIDER,
            authextra={"user_id": getattr(user, "id", None), "keycloak_id": identity.sub,
                       "email": identity.email, "roles": list(identity.roles),
                       "activity_status": "online"},
            expires_at=identity.exp + self._config.leeway,
            credential_expires_at=identity.exp,
            subject=identity.sub,
            sid=identity.sid,
        )


class KeycloakFactory:
    """Builds KeycloakAuthenticators that share one JwksCache per key source.

    Two transports configured with the same issuer (or jwks_url) share the cache,
    so a node fetches each realm's keys once, whatever the number of transports.
    """

    def __init__(self, http: Any, clock: IReactorTime, users: UserLogin | None,
                 on_fetch: Callable[[str], None] | None = None) -> None:
        self._http = http
        self._clock = clock
        self._users = users
        self._on_fetch = on_fetch
        self.caches: dict[tuple[str, str], JwksCache] = {}   # (issuer, jwks_url or "") -> cache

    def jwks_for(self, config: KeycloakAuthConfig) -> JwksCache:
        """The shared cache for config's issuer (the first config's settings win)."""
        source = (config.issuer.rstrip("/"), config.jwks_url or "")
        cache = self.caches.get(source)
        if cache is None:
            cache = JwksCache(self._http, self._clock, jwks_url=config.jwks_url,
                              issuer=config.issuer, ttl=config.jwks_ttl,
                              min_refresh_interval=config.min_refresh_interval,
                              min_rsa_key_bits=config.min_rsa_key_bits,
                              on_fetch=self._on_fetch)
            self.caches[source] = cache
        return cache

    def __call__(self, config: KeycloakAuthConfig) -> KeycloakAuthenticator:
        return KeycloakAuthenticator(config, self.jwks_for(config), self._users, self._clock)


def keycloak_factory(http: Any, clock: IReactorTime, users: UserLogin | None,
                     on_fetch: Callable[[str], None] | None = None) -> KeycloakFactory:
    """A callable(config) -> KeycloakAuthenticator sharing JWKS caches (see KeycloakFactory)."""
    return KeycloakFactory(http, clock, users, on_fetch)
