"""WAMP-CRA (challenge-response) for backend components, and the pieces other methods reuse.

The router sends CHALLENGE ``wampcra`` whose ``extra.challenge`` is a JSON string
``{authid, authrole, authmethod, authprovider, nonce, timestamp, session}`` (plus
``salt``/``iterations``/``keylen`` in ``extra`` for salted secrets); the client
answers with ``compute_wcs(key, challenge)`` where ``key`` is the secret, or
``derive_key(secret, salt, iterations, keylen)`` when salted. That is exactly what
Autobahn's clients do in their standard ``onChallenge``.

Static principals hold the plain secret; the router derives the salted key once at
start. Dynamic/function authenticators return the key as Crossbar's do: the secret
itself, already derived when they also return a salt.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from autobahn.wamp.auth import compute_wcs, derive_key
from twisted.internet.interfaces import IReactorTime

from wampchat.auth.authenticator import Accept, Challenge, Hello
from wampchat.config_types import StaticPrincipal
from wampchat.errors import AuthFailure, BadCredentials

T = TypeVar("T")


class UnknownPrincipal(AuthFailure):
    reason = "unknown_authid"


class NoChallenge(AuthFailure):
    reason = "no_challenge"


@dataclass(frozen=True)
class CraKey:
    """The HMAC key of one principal and the salt parameters the client needs to derive it."""

    key: bytes
    salt: str | None = None
    iterations: int = 1000
    keylen: int = 32

    @classmethod
    def from_password(cls, secret: str, salt: str | None, iterations: int = 1000,
                      keylen: int = 32) -> CraKey:
        """The key for a plain secret: derived (PBKDF2, as Autobahn does) when salted."""
        key = derive_key(secret, salt, iterations, keylen) if salt else secret.encode("utf8")
        return cls(key=key, salt=salt, iterations=iterations, keylen=keylen)

    def challenge_extra(self, challenge: str) -> dict[str, Any]:
        extra: dict[str, Any] = {"challenge": challenge}
        if self.salt:
            extra.update(salt=self.salt, iterations=self.iterations, keylen=self.keylen)
        return extra

    def verifies(self, challenge: str, signature: str) -> bool:
        """Whether signature is compute_wcs(key, challenge); constant-time."""
        expected = compute_wcs(self.key, challenge.encode("utf8"))
        given = signature.encode("utf8") if isinstance(signature, str) else b""
        return hmac.compare_digest(expected, given)


def iso_utc(seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds, the form Autobahn/Crossbar use."""
    stamp = datetime.fromtimestamp(seconds, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def make_challenge(hello: Hello, authid: str, authrole: str, authprovider: str,
                   now: float) -> str:
    """The WAMP-CRA challenge string: JSON with a fresh random nonce, bound to this session."""
    return json.dumps({
        "authid": authid,
        "authrole": authrole,
        "authmethod": "wampcra",
        "authprovider": authprovider,
        "nonce": secrets.token_urlsafe(32),
        "timestamp": iso_utc(now),
        "session": hello.session_id,
    }, ensure_ascii=False)


class PendingChallenges(Generic[T]):
    """What an authenticator remembers between its CHALLENGE and the AUTHENTICATE answer.

    Keyed by the HELLO object the session passes to both calls; an entry disappears
    when it is taken, or when the session (which holds the HELLO) is garbage, so a
    client that never answers leaves nothing behind.
    """

    def __init__(self) -> None:
        self._pending: dict[int, T] = {}   # id(hello) -> state for that session's answer

    def remember(self, hello: Hello, state: T) -> None:
        key = id(hello)
        self._pending[key] = state
        weakref.finalize(hello, self._pending.pop, key, None)

    def take(self, hello: Hello) -> T:
        """The state remembered for hello, once. Raises NoChallenge."""
        state = self._pending.pop(id(hello), None)
        if state is None:
            raise NoChallenge("no WAMP-CRA challenge is pending for this session")
        return state

    def __len__(self) -> int:
        return len(self._pending)


@dataclass(frozen=True)
class _Sent:
    accept: Accept
    key: CraKey
    challenge: str


class CraChallenger:
    """Issue a WAMP-CRA challenge for an identity, then check the answer against it."""

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        self._pending: PendingChallenges[_Sent] = PendingChallenges()

    def challenge(self, hello: Hello, accept: Accept, key: CraKey) -> Challenge:
        """CHALLENGE wampcra for accept (the identity granted if the answer is right)."""
        now = self._clock.seconds() if self._clock is not None else time.time()
        text = make_challenge(hello, accept.authid, accept.authrole, accept.authprovider, now)
        self._pending.remember(hello, _Sent(accept, key, text))
        return Challenge("wampcra", key.challenge_extra(text))

    def verify(self, hello: Hello, signature: str) -> Accept:
        """The identity challenged for, if signature answers it. Raises BadCredentials."""
        sent = self._pending.take(hello)
        if not sent.key.verifies(sent.challenge, signature):
            raise BadCredentials(f"wrong WAMP-CRA signature for authid {sent.accept.authid!r}")
        return sent.accept

    @property
    def pending(self) -> int:
        return len(self._pending)


class WampCraAuthenticator:
    """Static WAMP-CRA: principals from the config, keys derived once at construction.

    ``hello`` challenges a known authid (no authid, or an unknown one: AuthFailure
    ``authentication_failed``); ``authenticate`` accepts a correct signature with
    authmethod ``wampcra``, authprovider ``static`` and the principal's role.
    """

    authmethod = "wampcra"
    takes_transport_token = False

    def __init__(self, principals: tuple[StaticPrincipal, ...],
                 clock: IReactorTime | None = None) -> None:
        # authid -> (role, key); PBKDF2 is slow on purpose, so it runs here, not per login.
        self._principals: dict[str, tuple[str, CraKey]] = {
            p.authid: (p.role, CraKey.from_password(p.secret, p.salt, p.iterations, p.keylen))
            for p in principals
        }
        self._challenger = CraChallenger(clock)

    async def hello(self, hello: Hello) -> Challenge:
        if not hello.authid:
            raise UnknownPrincipal("WAMP-CRA needs an authid in HELLO")
        principal = self._principals.get(hello.authid)
        if principal is None:
            raise UnknownPrincipal(f"no WAMP-CRA principal with authid {hello.authid!r}")
        role, key = principal
        accept = Accept(authid=hello.authid, authrole=role, authmethod="wampcra",
                        authprovider="static")
        return self._challenger.challenge(hello, accept, key)

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        return self._challenger.verify(hello, signature)

    @property
    def pending_challenges(self) -> int:
        """How many challenges await an answer (sessions that left are not counted)."""
        return self._challenger.pending
