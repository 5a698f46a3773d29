"""The signing keys of one issuer, fetched with treq and cached in memory.

SPEC §3 items 1-2: one fetch serves every connection for ``ttl`` seconds (a
smaller Cache-Control max-age shortens it; Keycloak's ``no-cache`` on /certs is
ignored), concurrent misses share one fetch, an unknown kid causes at most one
refetch per ``min_refresh_interval``, and while the issuer is down the keys we
have keep serving. Where keys come from is fixed by configuration only, never by
anything in a token.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import jwt
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

from wampchat.auth.tokens import UnknownKey
from wampchat.errors import Unavailable
from wampchat.logs import Logger

log = Logger()

FETCH_TIMEOUT = 5.0
# How long a login with a known but expired key waits for the refresh before the cached
# key serves it anyway.
STALE_GRACE = 1.0
MAX_JWKS_BYTES = 1024 * 1024

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)

Outcome = str      # "ok" or "error", reported to on_fetch (metrics)


class JwksFetchError(Exception):
    """The issuer did not give us a usable JWKS (down, timeout, garbage)."""


def cache_lifetime(cache_control: str | None, ttl: float, floor: float) -> float:
    """How long a fetched JWKS is trusted: ttl, shortened by a smaller max-age.

    ``no-cache``/``no-store`` are ignored on purpose (Keycloak sends them on /certs
    and honouring them would mean a fetch per connection), and the result is never
    below ``floor`` so that ``max-age=0`` cannot do the same.
    """
    lifetime = ttl
    match = _MAX_AGE.search(cache_control or "")
    if match is not None:
        lifetime = min(lifetime, float(match.group(1)))
    return max(lifetime, floor)


def usable_keys(document: Any, min_rsa_key_bits: int) -> dict[str, jwt.PyJWK]:
    """kid -> verification key for the signing keys of a JWKS document.

    Skips (without failing the set) encryption keys, symmetric keys, private
    keys, keys without kid, unknown types and RSA keys under min_rsa_key_bits.
    Raises JwksFetchError if the document is not a JWKS at all.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksFetchError("the JWKS has no keys list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        key = _signing_key(entry, min_rsa_key_bits)
        if key is not None:
            keys[entry["kid"]] = key
    return keys


def _signing_key(entry: Any, min_rsa_key_bits: int) -> jwt.PyJWK | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
        return None
    if entry.get("use", "sig") != "sig" or entry.get("kty") not in ("RSA", "EC", "OKP"):
        return None
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    if "d" in entry:                      # private material has no place in a JWKS
        return None
    alg = entry.get("alg")
    if alg is not None and (not isinstance(alg, str) or alg.upper().startswith("HS")
                            or alg.lower() == "none"):
        return None
    try:
        key = jwt.PyJWK(entry)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if entry["kty"] == "RSA" and key.key.key_size < min_rsa_key_bits:
        return None
    return key


class JwksCache:
    """Signing keys of one issuer, kept in memory and served while the issuer is down.

    An unknown kid causes at most one fetch per min_refresh_interval, shared by all
    concurrent misses. ``on_fetch(outcome)`` is told "ok" or "error" per fetch.
    """

    def __init__(self, http: Any, clock: IReactorTime, jwks_url: str | None = None,
                 issuer: str | None = None, ttl: float = 3600.0,
                 min_refresh_interval: float = 10.0, min_rsa_key_bits: int = 2048,
                 on_fetch: Callable[[Outcome], None] | None = None,
                 timeout: float = FETCH_TIMEOUT) -> None:
        if not jwks_url and not issuer:
            raise ValueError("JwksCache needs a jwks_url or an issuer")
        self._http = http
        self._clock = clock
        self._jwks_url = jwks_url              # explicit, or found by discovery
        self._issuer = issuer.rstrip("/") if issuer else None
        self._ttl = ttl
        self._min_refresh_interval = min_refresh_interval
        self._min_rsa_key_bits = min_rsa_key_bits
        self._on_fetch = on_fetch
        self._timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}  # kid -> signing key
        self._fetched_at: float | None = None  # clock time of the last good fetch
        self._expires_at = float("-inf")       # the cached set is trusted until then
        self._last_attempt = float("-inf")     # clock time of the last fetch started
        self._last_failed = False              # whether the last fetch failed
        self._last_failure_log = float("-inf")
        self._waiters: list[Deferred] | None = None   # misses waiting on the fetch in flight

    # -- what the authenticator and metrics use ------------------------------------------

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def age(self) -> float | None:
        """Seconds since the keys were last fetched successfully; None before that."""
        return None if self._fetched_at is None else self._clock.seconds() - self._fetched_at

    async def key_for(self, kid: str) -> jwt.PyJWK:
        """The key for kid, fetching the JWKS if it is stale or lacks kid (rate limited).

        Raises UnknownKey (authentication_failed) when the issuer answered and has
        no such key, Unavailable (wampchat.error.unavailable, retryable) when the
        key is not cached and the issuer cannot be reached.
        """
        now = self._clock.seconds()
        stale = now >= self._expires_at
        if (stale or kid not in self._keys) and self._may_fetch(now):
            # kid is the token's header value: cut short, it is attacker-controlled
            log.info("JWKS cache miss for kid {kid} at {issuer} ({why}): fetching", kid=kid[:64],
                     issuer=self._issuer or self._jwks_url,
                     why="keys expired" if stale else "unknown kid")
            refreshing = ensureDeferred(self._refresh())
            if kid in self._keys:
                # Expired but known: fresh keys decide if they come quickly; a slow issuer
                # must not stall logins, so after STALE_GRACE the cached key serves while
                # the fetch goes on (as it would with the issuer down).
                await self._at_most(refreshing, STALE_GRACE)
            else:
                await refreshing
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._last_failed:
            raise Unavailable("the identity provider's keys cannot be fetched")
        raise UnknownKey(f"no signing key with kid {kid[:64]!r} at the issuer")

    def _at_most(self, d: Deferred, seconds: float) -> Deferred:
        """A Deferred firing (with None) when d does or after seconds; d itself runs on."""
        waiter: Deferred = Deferred()
        timer = self._clock.callLater(seconds, lambda: waiter.called or waiter.callback(None))

        def settled(result):
            if timer.active():
                timer.cancel()
            if not waiter.called:
                waiter.callback(None)
            return None                    # _refresh handles its own failures

        d.addBoth(settled)
        return waiter

    async def refresh(self) -> None:
        """Fetch now (shared with a fetch in flight), whatever the intervals say."""
        await self._refresh()

    # -- fetching ----------------------------------------------------------------------

    def _may_fetch(self, now: float) -> bool:
        return self._waiters is not None or now - self._last_attempt >= self._min_refresh_interval

    async def _refresh(self) -> None:
        if self._waiters is not None:
            waiter: Deferred = Deferred()
            self._waiters.append(waiter)
            await waiter
            return
        self._waiters = []
        self._last_attempt = self._clock.seconds()
        try:
            await self._fetch_once()
        finally:
            waiters, self._waiters = self._waiters, None
            for waiter in waiters:
                waiter.callback(None)

    async def _fetch_once(self) -> None:
        try:
            keys, lifetime = await self._fetch()
        except Exception as exc:           # anything at all: keep serving what we have
            self._fetch_failed(exc)
            return
        now = self._clock.seconds()
        if set(keys) != set(self._keys):
            log.info("JWKS of {issuer} now has keys {kids}", issuer=self._issuer or self._jwks_url,
                     kids=sorted(keys))
        if self._last_failed:
            log.info("JWKS of {issuer} reachable again", issuer=self._issuer or self._jwks_url)
        self._keys = keys                  # a key gone from the realm is no longer trusted
        self._fetched_at = now
        self._expires_at = now + lifetime
        self._last_failed = False
        self._report("ok")

    def _fetch_failed(self, exc: Exception) -> None:
        self._last_failed = True
        self._report("error")
        now = self._clock.seconds()
        if now - self._last_failure_log >= self._min_refresh_interval:
            self._last_failure_log = now
            log.warn("cannot fetch the JWKS of {issuer}: {error}; serving {count} cached keys",
                     issuer=self._issuer or self._jwks_url, error=_describe(exc),
                     count=len(self._keys))

    def _report(self, outcome: Outcome) -> None:
        if self._on_fetch is not None:
            try:
                self._on_fetch(outcome)
            except Exception:
                log.failure("JWKS on_fetch observer failed")

    async def _fetch(self) -> tuple[dict[str, jwt.PyJWK], float]:
        url = self._jwks_url or await self._discover()
        response, body = await self._get(url)
        if response.code != 200:
            raise JwksFetchError(f"HTTP {response.code} from {url}")
        keys = usable_keys(_json(body), self._min_rsa_key_bits)
        cache_control = response.headers.getRawHeaders(b"cache-control", [b""])
        lifetime = cache_lifetime(b",".join(cache_control).decode("latin-1"), self._ttl,
                                  self._min_refresh_interval)
        return keys, lifetime

    async def _discover(self) -> str:
        """jwks_uri from discovery, remembered; Keycloak's fixed path if discovery fails."""
        assert self._issuer is not None
        fallback = f"{self._issuer}/protocol/openid-connect/certs"
        url = f"{self._issuer}/.well-known/openid-configuration"
        try:
            response, body = await self._get(url)
        except Exception as exc:
            log.warn("OpenID discovery at {url} failed ({error}); using {fallback}",
                     url=url, error=_describe(exc), fallback=fallback)
            return fallback
        try:
            document = _json(body) if response.code == 200 else None
        except JwksFetchError:
            document = None
        jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
        # The discovery document must be the issuer's own, or we do not follow it.
        if (not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://"))
                or str(document.get("issuer", "")).rstrip("/") != self._issuer):
            log.warn("OpenID discovery at {url} gave no usable jwks_uri; using {fallback}",
                     url=url, fallback=fallback)
            return fallback
        self._jwks_url = jwks_uri
        return jwks_uri

    async def _get(self, url: str) -> tuple[Any, bytes]:
        # treq falls back to the global reactor unless told otherwise.
        response = await self._http.get(url, timeout=self._timeout, reactor=self._clock,
                                        headers={b"Accept": [b"application/json"]})
        body = await response.content()
        if len(body) > MAX_JWKS_BYTES:
            raise JwksFetchError(f"the answer from {url} is over {MAX_JWKS_BYTES} bytes")
        return response, body


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise JwksFetchError(f"not JSON ({exc})") from None


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
