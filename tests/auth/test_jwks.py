"""JwksCache over a fake Keycloak (StubTreq) and a Clock: TTL, rate limits, outages, rotation."""

from __future__ import annotations

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from wampchat.auth.jwks import JwksCache, cache_lifetime, usable_keys
from wampchat.auth.tokens import UnknownKey
from wampchat.errors import Unavailable

from .keycloak_fakes import (EC_KEY, ED_KEY, ISSUER, KEY_A, KEY_B, SMALL_RSA, FakeKeycloak,
                             failure_of, result_of)


@pytest.fixture
def keycloak():
    return FakeKeycloak(keys=[KEY_A])


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def outcomes():
    return []


@pytest.fixture
def http(keycloak):
    return StubTreq(keycloak)


@pytest.fixture
def jwks(http, clock, keycloak, outcomes):
    return JwksCache(http, clock, jwks_url=keycloak.jwks_url, on_fetch=outcomes.append)


def test_keys_are_fetched_once_and_served_from_memory(jwks, keycloak, outcomes):
    """One fetch serves every lookup within the TTL, whatever Keycloak's no-cache says."""
    for _ in range(50):
        assert result_of(jwks.key_for("key-a")).key_id == "key-a"
    assert keycloak.jwks_requests == 1
    assert outcomes == ["ok"]
    assert jwks.kids == ("key-a",)


def test_concurrent_misses_share_one_fetch(jwks, keycloak, http):
    """Lookups made while a fetch is in flight wait for that fetch instead of starting more."""
    keycloak.hang = True
    pending = [Deferred.fromCoroutine(jwks.key_for("key-a")) for _ in range(10)]
    results: list = []
    for d in pending:
        d.addBoth(results.append)
    assert results == [] and keycloak.jwks_requests == 1
    keycloak.release()
    http.flush()
    assert [key.key_id for key in results] == ["key-a"] * 10
    assert keycloak.jwks_requests == 1


def test_made_up_kids_cause_one_fetch_per_interval(jwks, keycloak, clock):
    """A flood of unknown kids reaches Keycloak at most once per min_refresh_interval."""
    for _ in range(100):
        assert failure_of(jwks.key_for("made-up")).check(UnknownKey)
    assert keycloak.jwks_requests == 1
    clock.advance(9.9)
    failure_of(jwks.key_for("made-up-too"))
    assert keycloak.jwks_requests == 1
    clock.advance(0.1)
    failure_of(jwks.key_for("made-up"))
    failure_of(jwks.key_for("made-up"))
    assert keycloak.jwks_requests == 2


def test_ttl_expiry_refetches(jwks, keycloak, clock):
    """The set is refreshed after jwks_ttl (3600 s), and not before."""
    result_of(jwks.key_for("key-a"))
    clock.advance(3599)
    result_of(jwks.key_for("key-a"))
    assert keycloak.jwks_requests == 1
    clock.advance(1)
    result_of(jwks.key_for("key-a"))
    assert keycloak.jwks_requests == 2
    assert jwks.age() == 0


def test_smaller_max_age_shortens_the_ttl(jwks, keycloak, clock):
    """Cache-Control max-age=60 makes the set stale after 60 s."""
    keycloak.cache_control = "public, max-age=60"
    result_of(jwks.key_for("key-a"))
    clock.advance(59)
    result_of(jwks.key_for("key-a"))
    assert keycloak.jwks_requests == 1
    clock.advance(1)
    result_of(jwks.key_for("key-a"))
    assert keycloak.jwks_requests == 2


@pytest.mark.parametrize("header, lifetime", [
    (None, 3600), ("no-cache", 3600), ("no-cache, no-store, must-revalidate", 3600),
    ("max-age=60", 60), ("public, max-age=\"120\"", 120), ("max-age=86400", 3600),
    ("max-age=0", 10), ("s-maxage=5", 3600), ("max-age=abc", 3600),
])
def test_cache_lifetime(header, lifetime):
    """max-age only shortens the TTL, never below the refresh interval; no-cache is ignored."""
    assert cache_lifetime(header, 3600, 10) == lifetime


def test_keycloak_down_keeps_serving_cached_keys(jwks, keycloak, clock, outcomes):
    """With Keycloak down, cached keys keep serving; an uncached kid is Unavailable."""
    result_of(jwks.key_for("key-a"))
    keycloak.up = False
    clock.advance(3600)
    with capturedLogs() as events:
        assert result_of(jwks.key_for("key-a")).key_id == "key-a"
        failure = failure_of(jwks.key_for("unknown"))
        assert failure.check(Unavailable)
        assert failure.value.retryable
        clock.advance(5)
        failure_of(jwks.key_for("unknown"))
    assert keycloak.jwks_requests == 2       # one attempt in that interval
    assert outcomes == ["ok", "error"]
    warnings = [e for e in events if "cannot fetch the JWKS" in e.get("log_format", "")]
    assert len(warnings) == 1
    keycloak.up = True
    clock.advance(5)
    failure = failure_of(jwks.key_for("unknown"))
    assert failure.check(UnknownKey) and keycloak.jwks_requests == 3


@pytest.mark.parametrize("breakage", ["garbage", "hang"])
def test_garbage_and_timeouts_are_outages(jwks, keycloak, clock, breakage):
    """A non-JSON answer or no answer within 5 s counts as Keycloak down."""
    setattr(keycloak, breakage, True)
    d = Deferred.fromCoroutine(jwks.key_for("key-a"))
    results: list = []
    d.addBoth(results.append)
    clock.advance(5)
    assert results and results[0].check(Unavailable)


def test_rotation_is_picked_up_and_removed_keys_stop_working(jwks, keycloak, clock):
    """A new kid is fetched on first sight; a key gone from the realm dies at the next refresh."""
    result_of(jwks.key_for("key-a"))
    keycloak.set_keys(KEY_A, KEY_B)
    clock.advance(10)
    assert result_of(jwks.key_for("key-b")).key_id == "key-b"
    keycloak.set_keys(KEY_B)
    clock.advance(3600)
    assert failure_of(jwks.key_for("key-a")).check(UnknownKey)
    assert result_of(jwks.key_for("key-b")).key_id == "key-b"


def test_reading_a_key_never_extends_its_lifetime(jwks, keycloak, clock):
    """Frequent use of a key does not postpone the refresh that would remove it."""
    result_of(jwks.key_for("key-a"))
    keycloak.set_keys(KEY_B)
    for _ in range(35):
        clock.advance(100)
        result_of(jwks.key_for("key-a"))
    clock.advance(100)
    assert failure_of(jwks.key_for("key-a")).check(UnknownKey)


def test_only_usable_signing_keys_are_kept():
    """use=enc, small RSA, symmetric, private and kid-less keys are skipped; RSA, EC, OKP kept."""
    document = {"keys": [
        KEY_A.jwk(), EC_KEY.jwk(), ED_KEY.jwk(),
        KEY_B.jwk(use="enc"), SMALL_RSA.jwk(),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {**KEY_B.jwk(kid="private"), "d": "AAAA"},
        KEY_B.jwk(kid=None), KEY_B.jwk(kid="hs", alg="HS256"),
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}, "not a key",
    ]}
    assert sorted(usable_keys(document, 2048)) == ["ec-1", "ed-1", "key-a"]
    assert "small" in usable_keys({"keys": [SMALL_RSA.jwk()]}, 1024)


def test_discovery_finds_the_jwks_uri(http, clock, keycloak):
    """With only an issuer, discovery's jwks_uri is used, and discovered once."""
    jwks = JwksCache(http, clock, issuer=ISSUER)
    result_of(jwks.key_for("key-a"))
    clock.advance(3600)
    result_of(jwks.key_for("key-a"))
    assert keycloak.discovery_requests == 1 and keycloak.jwks_requests == 2


def test_without_discovery_the_keycloak_path_is_used(http, clock, keycloak):
    """A realm without discovery falls back to <issuer>/protocol/openid-connect/certs."""
    keycloak.discovery = False
    jwks = JwksCache(http, clock, issuer=ISSUER)
    assert result_of(jwks.key_for("key-a")).key_id == "key-a"
    assert keycloak.requested_paths[-1] == "/realms/test/protocol/openid-connect/certs"


def test_explicit_jwks_url_skips_discovery(http, clock, keycloak):
    """An explicit jwks_url (internal address) is fetched directly."""
    jwks = JwksCache(http, clock, jwks_url="http://keycloak.internal:8080/realms/test/"
                     "protocol/openid-connect/certs", issuer=ISSUER)
    result_of(jwks.key_for("key-a"))
    assert keycloak.discovery_requests == 0 and keycloak.jwks_requests == 1


def test_needs_a_source():
    """A cache with neither jwks_url nor issuer is a configuration error."""
    with pytest.raises(ValueError):
        JwksCache(object(), Clock())


def test_a_cache_miss_is_logged_once_per_fetch(jwks, keycloak, clock):
    """Issue 4 §7: the miss is logged (with a cut-short kid), served lookups are not."""
    with capturedLogs() as events:
        result_of(jwks.key_for("key-a"))
        result_of(jwks.key_for("key-a"))
    misses = [e for e in events if "JWKS cache miss" in e.get("log_format", "")]
    assert len(misses) == 1 and misses[0]["kid"] == "key-a" and misses[0]["why"] == "keys expired"
    clock.advance(11)                       # past min_refresh_interval
    with capturedLogs() as events:
        failure_of(jwks.key_for("x" * 500))
    [miss] = [e for e in events if "JWKS cache miss" in e.get("log_format", "")]
    assert miss["kid"] == "x" * 64 and miss["why"] == "unknown kid"


def test_a_slow_issuer_does_not_stall_logins_with_known_expired_keys(jwks, keycloak, clock, http):
    """Expired but known kid: the refresh gets STALE_GRACE, then the cached key serves;
    the fetch goes on and its keys are used once they come. An unknown kid still waits."""
    from wampchat.auth.jwks import STALE_GRACE

    result_of(jwks.key_for("key-a"))
    clock.advance(3601)                           # expired
    keycloak.hang = True
    served: list = []
    Deferred.fromCoroutine(jwks.key_for("key-a")).addBoth(served.append)
    assert served == []                           # waiting for the refresh...
    clock.advance(STALE_GRACE)
    assert [key.key_id for key in served] == ["key-a"]     # ...not longer than the grace
    unknown: list = []
    Deferred.fromCoroutine(jwks.key_for("key-b")).addBoth(unknown.append)
    clock.advance(STALE_GRACE)
    assert unknown == []                          # an unknown kid waits for the fetch itself
    keycloak.set_keys(KEY_A, KEY_B)               # the slow answer brings key-b
    keycloak.release()
    http.flush()
    assert [key.key_id for key in unknown] == ["key-b"]
    assert keycloak.jwks_requests == 2            # one fetch served both
