"""Tests of the authenticators, and a small harness: one realm, a Clock, Autobahn clients.

The clients are Autobahn's own ``ApplicationSession`` connected over the memory
transport, so a login here is exactly what a real component does; the ``Clock``
is pumped with ``advance(0)`` because the memory transport delivers on a later turn.
The ``*_authenticate`` functions are the in-process authenticators the
function-authenticator tests name by dotted path (``tests.auth.<name>``).
"""

from __future__ import annotations

from typing import Any, Callable

import wampchat  # noqa: F401  (selects txaio's Twisted framework before autobahn)
from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.auth import compute_wcs, derive_key
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from wampchat.config_types import PermissionConfig, RealmConfig, RoleConfig
from wampchat.router.realm import Realm
from wampchat.router.session import RouterContext
from wampchat.transport.memory import MEMORY_INFO, connect_pair

REALM = "test"
_EVERYTHING = PermissionConfig(uri="", match="prefix", call=True, register=True,
                               publish=True, subscribe=True)
ROLES = (RoleConfig("backend", (_EVERYTHING,)), RoleConfig("user"), RoleConfig("admin"),
         RoleConfig("guest"))


class Client(ApplicationSession):
    """An Autobahn client that logs in with given authmethods and records what happened."""

    def __init__(self, authmethods: list[str], authid: str | None = None,
                 answer: Callable[[Any], str] | None = None, realm: str = REALM,
                 authextra: dict | None = None) -> None:
        super().__init__(ComponentConfig(realm=realm))
        self._authmethods = authmethods
        self._authid = authid
        self._answer = answer
        self._authextra = authextra
        self.challenges: list[Any] = []
        self.welcome = None              # SessionDetails once joined
        self.left = None                 # CloseDetails once refused or closed

    def onConnect(self) -> None:
        self.join(self.config.realm, authmethods=self._authmethods, authid=self._authid,
                  authextra=self._authextra)

    def onChallenge(self, challenge: Any) -> str:
        self.challenges.append(challenge)
        if self._answer is None:
            raise RuntimeError("no answer configured")
        return self._answer(challenge)

    def onJoin(self, details: Any) -> Any:
        self.welcome = details

    def onLeave(self, details: Any) -> None:
        self.left = details
        super().onLeave(details)


def ticket(value: str) -> Callable[[Any], str]:
    """The onChallenge answer of a ticket client."""
    return lambda challenge: value


def wampcra(secret: str) -> Callable[[Any], str]:
    """The standard Autobahn WAMP-CRA onChallenge: derive when salted, then compute_wcs."""
    def answer(challenge: Any) -> str:
        key: Any = secret
        if "salt" in challenge.extra:
            key = derive_key(secret, challenge.extra["salt"], challenge.extra.get("iterations"),
                             challenge.extra.get("keylen"))
        return compute_wcs(key, challenge.extra["challenge"])
    return answer


class Router:
    """One router context on a Clock, with realm ``test`` (and ``other``)."""

    def __init__(self, authenticators: dict[str, Any] | None = None) -> None:
        self.clock = Clock()
        self.realms = {name: Realm(RealmConfig(name, ROLES), self.clock)
                       for name in (REALM, "other")}
        self.realm = self.realms[REALM]
        self.context = RouterContext(self.realms, dict(authenticators or {}), self.clock)

    def connect(self, client: ApplicationSession) -> ApplicationSession:
        """Connect client, run the handshake as far as it goes without time passing."""
        connect_pair(self.clock, self.context.session(MEMORY_INFO), client)
        self.pump()
        return client

    def pump(self) -> None:
        for _ in range(5):
            self.clock.advance(0)


class Backend(ApplicationSession):
    """A backend component that registers one procedure when it joins."""

    def __init__(self, procedure: str, endpoint: Callable[..., Any], secret: str) -> None:
        super().__init__(ComponentConfig(realm=REALM))
        self._procedure = procedure
        self._endpoint = endpoint
        self._secret = secret
        self.registered = False

    def onConnect(self) -> None:
        self.join(REALM, authmethods=["wampcra"], authid="backend")

    def onChallenge(self, challenge: Any) -> str:
        return wampcra(self._secret)(challenge)

    async def onJoin(self, details: Any) -> None:
        await self.register(self._endpoint, self._procedure)
        self.registered = True


# -- in-process authenticators for the function-authenticator tests -------------------

CALLS: list[tuple[str, Any, dict]] = []   # (realm, authid, details) of every call below


def role_authenticate(realm: str, authid: Any, details: dict) -> str:
    CALLS.append((realm, authid, details))
    return "user" if details.get("ticket") == "letmein" else _refuse()


def principal_authenticate(realm: str, authid: Any, details: dict) -> dict:
    CALLS.append((realm, authid, details))
    return {"role": "admin", "authid": "alice@example.com", "extra": {"team": "blue"}}


async def async_authenticate(realm: str, authid: Any, details: dict) -> dict:
    CALLS.append((realm, authid, details))
    return {"role": "user", "authid": f"async-{authid}"}


def refusing_authenticate(realm: str, authid: Any, details: dict) -> str:
    raise ApplicationError(ApplicationError.NOT_AUTHORIZED, "nope")


def crashing_authenticate(realm: str, authid: Any, details: dict) -> str:
    raise KeyError("a bug in the authenticator")


def cra_authenticate(realm: str, authid: Any, details: dict) -> dict:
    return {"role": "user", "secret": "s3cret"}


def never_authenticate(realm: str, authid: Any, details: dict) -> Deferred:
    return Deferred()


def _refuse() -> str:
    raise ApplicationError(ApplicationError.AUTHENTICATION_FAILED, "wrong ticket")


NOT_CALLABLE = 42
