"""A Crossbar.io `function` ticket authenticator doing what wampchat's keycloak authenticator does.

Crossbar calls ``create_authenticator(config, controller)`` once, in the router
worker, and then ``authenticate(realm, authid, details)`` for every AUTHENTICATE.
Same work as wampchat: the ticket is a Keycloak access token, validated locally
with PyJWT (RS256) against the issuer's JWKS, cached and refetched only for an
unknown kid (at most every `min_refresh_interval` s); roles mapped the same way;
the user looked up by `sub` in the same PostgreSQL schema (txpostgres, async on
the reactor, like wampchat) and created on first login.

Deliberately plain, as a Crossbar deployment would write it: no user cache in
front of the database (wampchat has one; that difference is part of what the bench
measures), no write-behind of last_login_at (which favours Crossbar slightly).

Runs only in `bench/.crossbar-venv` (crossbar + pyjwt + psycopg2-binary + txpostgres).
"""

from __future__ import annotations

import json
import time

import jwt
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from txpostgres.txpostgres import ConnectionPool

log = Logger()

_COLUMNS = "id, keycloak_id, email, username, roles"
# (token role, authrole), first match wins; None matches anything (wampchat's default mapping)
DEFAULT_ROLE_MAPPING = (("wampchat-backend", "backend"), ("admin", "admin"),
                        ("ROLE_ADMIN", "admin"), (None, "user"))


class _Keys:
    """The issuer's JWKS, fetched with treq, refetched for an unknown kid (rate-limited)."""

    def __init__(self, jwks_url: str, min_refresh_interval: float) -> None:
        self.url = jwks_url
        self.min_refresh_interval = min_refresh_interval
        self.keys: dict[str, object] = {}        # kid -> public key
        self.fetched_at = float("-inf")
        self.fetches = 0
        self._waiters: list[Deferred] | None = None   # callers waiting for the fetch under way

    async def fetch(self) -> None:
        import treq
        self.fetches += 1
        self.fetched_at = time.monotonic()
        response = await treq.get(self.url, timeout=5)
        document = json.loads(await response.content())
        self.keys = {jwk["kid"]: jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
                     for jwk in document.get("keys", []) if jwk.get("kty") == "RSA"}

    async def key_for(self, kid: str):
        key = self.keys.get(kid)
        if key is not None:
            return key
        if self._waiters is not None:                 # a fetch is under way: share it
            waiter: Deferred = Deferred()
            self._waiters.append(waiter)
            await waiter
        elif time.monotonic() - self.fetched_at >= self.min_refresh_interval:
            self._waiters = []
            try:
                await self.fetch()
            except Exception:
                log.failure("JWKS fetch failed")
            finally:
                waiters, self._waiters = self._waiters, None
                for waiter in waiters:
                    waiter.callback(None)
        key = self.keys.get(kid)
        if key is None:
            raise ApplicationError(ApplicationError.AUTHENTICATION_FAILED,
                                   "the token's key is not published by the issuer")
        return key


class KeycloakTicketAuthenticator:
    def __init__(self, config: dict, pool: ConnectionPool, keys: _Keys) -> None:
        self.issuer = config["issuer"].rstrip("/")
        self.client_id = config.get("client_id", "wampchat")
        self.leeway = float(config.get("leeway", 30))
        self.role_mapping = tuple((rule.get("role"), rule["authrole"])
                                  for rule in config["role_mapping"]) \
            if config.get("role_mapping") else DEFAULT_ROLE_MAPPING
        self.pool = pool
        self.keys = keys

    def __call__(self, realm: str, authid: str, details: dict) -> Deferred:
        return ensureDeferred(self.authenticate(details.get("ticket")))

    async def authenticate(self, token) -> dict:
        if not isinstance(token, str):
            raise ApplicationError(ApplicationError.AUTHENTICATION_FAILED, "no token")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise ApplicationError(ApplicationError.AUTHENTICATION_FAILED, "malformed token") from None
        key = await self.keys.key_for(kid)
        try:
            claims = jwt.decode(token, key, algorithms=["RS256"], issuer=self.issuer,
                                leeway=self.leeway, options={"verify_aud": False,
                                                             "require": ["exp", "iat", "sub"]})
        except jwt.PyJWTError as error:
            raise ApplicationError(ApplicationError.AUTHENTICATION_FAILED,
                                   f"invalid token: {error}") from None
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if claims.get("typ") != "Bearer" or (self.client_id not in audiences
                                             and claims.get("azp") != self.client_id):
            raise ApplicationError(ApplicationError.AUTHENTICATION_FAILED,
                                   "the token is not an access token for this client")
        roles = list((claims.get("realm_access") or {}).get("roles") or [])
        roles += ((claims.get("resource_access") or {}).get(self.client_id) or {}).get("roles") or []
        authrole = next((to for role, to in self.role_mapping if role is None or role in roles), None)
        if authrole is None:
            raise ApplicationError(ApplicationError.NOT_AUTHORIZED, "no role mapping rule matches")
        user_id = await self.user_id(claims["sub"], claims.get("email"),
                                     claims.get("preferred_username"), roles)
        email = claims.get("email")
        return {"authid": email or claims.get("preferred_username") or claims["sub"],
                "role": authrole,
                "extra": {"user_id": user_id, "keycloak_id": claims["sub"], "email": email,
                          "roles": roles, "activity_status": "online"}}

    async def user_id(self, sub: str, email, username, roles) -> int:
        rows = await self.pool.runQuery("SELECT id FROM users WHERE keycloak_id = %s", (sub,))
        if rows:
            return rows[0][0]
        rows = await self.pool.runQuery(
            "INSERT INTO users (keycloak_id, email, username, roles, last_login_at)"
            " VALUES (%s, %s, %s, %s::text[], now()) ON CONFLICT (keycloak_id) DO NOTHING"
            " RETURNING id", (sub, email, username, roles))
        if rows:
            return rows[0][0]
        rows = await self.pool.runQuery("SELECT id FROM users WHERE keycloak_id = %s", (sub,))
        if not rows:
            raise ApplicationError("wampchat.error.unavailable", "user vanished; try again")
        return rows[0][0]


async def _create(config: dict):
    pool = ConnectionPool(None, config["dsn"], min=int(config.get("pool_size", 5)))
    await pool.start()
    keys = _Keys(config["jwks_url"], float(config.get("min_refresh_interval", 10)))
    await keys.fetch()
    log.info("bench authenticator ready: {n} keys, pool of {size}", n=len(keys.keys),
             size=config.get("pool_size", 5))
    return KeycloakTicketAuthenticator(config, pool, keys)


_created: Deferred | None = None       # the one authenticator of this worker, once created
_instance: KeycloakTicketAuthenticator | None = None


def create_authenticator(config: dict, controller=None) -> Deferred:
    """Crossbar's entry point for a `function` authenticator: a Deferred of the callable.

    Crossbar caches the authenticator only once it exists, so the HELLOs that arrive
    while the first one is being created call this again: they share that creation
    (one pool, one JWKS fetch) instead of each opening a pool.
    """
    global _created
    if _instance is not None:
        return succeed(_instance)
    if _created is None:
        _created = ensureDeferred(_create(config))
        _created.addCallback(_remember)
    waiter: Deferred = Deferred()
    _created.addBoth(lambda result: (waiter.callback(result), result)[1])
    return waiter


def _remember(authenticator: KeycloakTicketAuthenticator) -> KeycloakTicketAuthenticator:
    global _instance
    _instance = authenticator
    return authenticator


# -- the `dynamic` variant (bench.run --crossbar-auth dynamic) -------------------------------

PROCEDURE = "bench.authenticate"

try:
    from autobahn.twisted.wamp import ApplicationSession
except ImportError:                       # pragma: no cover - only Crossbar's venv runs this
    ApplicationSession = object


class AuthenticatorComponent(ApplicationSession):
    """The same authenticator behind a WAMP procedure, registered from inside the router
    worker: Crossbar's `dynamic` authenticator calls it once per AUTHENTICATE."""

    async def onJoin(self, details):
        authenticator = await create_authenticator(self.config.extra)
        await self.register(authenticator, PROCEDURE)
        log.info("bench authenticator registered as {procedure}", procedure=PROCEDURE)
