"""Crossbar-style dynamic authentication: a procedure a backend session registers decides.

The router calls ``procedure(realm, authid, details)`` through the dealer of the
authenticator realm (``authenticator_realm``, else the HELLO's realm):

- ``ticket``: CHALLENGE ``ticket`` first; the call happens on AUTHENTICATE with
  ``details["ticket"]`` = the signature.
- ``anonymous``: the call happens at HELLO; no challenge.
- ``wampcra``: the call happens at HELLO and returns ``{secret, role, authid?,
  salt?, iterations?, keylen?, extra?}``; then WAMP-CRA as in ``cra.py`` (the
  secret is the HMAC key itself, already derived when salted, as in Crossbar).

``details`` = ``{authmethod, authextra, session, transport: {type, peer}}`` (never a
token or HTTP header). The callee returns the authrole (a string) or a principal
dict ``{role, authid?, realm?, extra?}`` (``extra`` becomes WELCOME's authextra).
It refuses by raising ``ApplicationError``: the ABORT carries that URI and message.
The procedure not being registered, its callee leaving and a timeout are
``Unavailable`` (``wampchat.error.unavailable``, retryable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime

from wampchat import errors
from wampchat.auth.anonymous import random_authid
from wampchat.auth.authenticator import Accept, Challenge, Hello
from wampchat.auth.cra import CraChallenger, CraKey, NoChallenge, UnknownPrincipal
from wampchat.errors import AuthFailure, Unavailable
from wampchat.logs import Logger

if TYPE_CHECKING:
    from wampchat.router.dealer import Dealer

log = Logger()

METHODS = ("ticket", "wampcra", "anonymous")
DEFAULT_TIMEOUT = 10.0


class InvalidPrincipal(AuthFailure):
    reason = "invalid_principal"


class RefusedByAuthenticator(AuthFailure):
    """The authenticator raised ApplicationError: forwarded as-is, URI and message (Crossbar)."""

    reason = "refused"

    def __init__(self, uri: str, text: str | None) -> None:
        super().__init__(text or "")
        self.uri = uri

    def message(self) -> str:
        return str(self) or self.uri


def refusal_from(error: ApplicationError) -> RefusedByAuthenticator:
    """The ABORT for an authenticator's ApplicationError: its URI, args[0] as the message."""
    text = str(error.args[0]) if error.args else None
    return RefusedByAuthenticator(error.error, text)


def session_details(hello: Hello, authmethod: str) -> dict[str, Any]:
    """The ``details`` argument of an authenticator call (no token, no headers)."""
    return {"authmethod": authmethod, "authextra": dict(hello.authextra),
            "session": hello.session_id,
            "transport": {"type": hello.transport.kind, "peer": hello.transport.peer}}


def as_principal(result: Any) -> dict[str, Any]:
    """The callee's answer as a principal dict. Raises InvalidPrincipal."""
    if isinstance(result, CallResult) and not result.results:
        result = result.kwresults            # the callee answered with kwargs only
    if isinstance(result, str):
        result = {"role": result}
    if not isinstance(result, dict):
        raise InvalidPrincipal(f"the authenticator returned {type(result).__name__}, "
                               "expected a role string or a principal dict")
    for key, kind in (("role", str), ("authid", str), ("realm", str), ("extra", dict),
                      ("secret", str), ("salt", str), ("iterations", int), ("keylen", int)):
        value = result.get(key)
        if value is not None and not isinstance(value, kind):
            raise InvalidPrincipal(f"the authenticator returned a non-{kind.__name__} {key!r}")
    if not result.get("role"):
        raise InvalidPrincipal("the authenticator returned no role")
    return result


def accept_from(principal: dict[str, Any], hello: Hello, authmethod: str,
                authprovider: str) -> Accept:
    """Accept for a principal dict: its authid (else HELLO's), role, realm and extra."""
    authid = principal.get("authid") or hello.authid
    if not authid:
        if authmethod != "anonymous":
            raise InvalidPrincipal("neither HELLO nor the authenticator gave an authid")
        authid = random_authid()
    return Accept(authid=authid, authrole=principal["role"], authmethod=authmethod,
                  authprovider=authprovider, authextra=dict(principal.get("extra") or {}),
                  realm=principal.get("realm"))


class CallbackAuthenticator:
    """The flows shared by dynamic and function authenticators; subclasses provide ``_invoke``."""

    authprovider = "dynamic"
    takes_transport_token = False

    def __init__(self, authmethod: str, clock: IReactorTime,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        if authmethod not in METHODS:
            raise ValueError(f"authmethod {authmethod!r} cannot be served by a "
                             f"{self.authprovider} authenticator (expected one of {METHODS})")
        self.authmethod = authmethod
        self._clock = clock
        self._timeout = timeout
        self._cra = CraChallenger(clock)

    def _invoke(self, hello: Hello, details: dict[str, Any]) -> Deferred:
        """Call the authenticator with (realm, authid, details); a Deferred of its answer."""
        raise NotImplementedError

    async def hello(self, hello: Hello) -> Accept | Challenge:
        if self.authmethod == "ticket":
            return Challenge("ticket")
        if self.authmethod == "wampcra" and not hello.authid:
            raise UnknownPrincipal("WAMP-CRA needs an authid in HELLO")
        principal = await self._ask(hello, session_details(hello, self.authmethod))
        accept = accept_from(principal, hello, self.authmethod, self.authprovider)
        if self.authmethod == "anonymous":
            return accept
        secret = principal.get("secret")
        if not secret:
            raise InvalidPrincipal("the authenticator returned no WAMP-CRA secret")
        key = CraKey(key=secret.encode("utf8"), salt=principal.get("salt"),
                     iterations=principal.get("iterations") or 1000,
                     keylen=principal.get("keylen") or 32)
        return self._cra.challenge(hello, accept, key)

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        if self.authmethod == "wampcra":
            return self._cra.verify(hello, signature)
        if self.authmethod != "ticket":
            raise NoChallenge(f"{self.authmethod} authentication has no challenge to answer")
        details = session_details(hello, "ticket")
        details["ticket"] = signature
        principal = await self._ask(hello, details)
        return accept_from(principal, hello, "ticket", self.authprovider)

    async def _ask(self, hello: Hello, details: dict[str, Any]) -> dict[str, Any]:
        d = self._invoke(hello, details)
        if self._timeout:
            d.addTimeout(self._timeout, self._clock)
        try:
            result = await d
        except AuthFailure:
            raise
        except ApplicationError as error:
            raise self._refusal(error) from None
        except (TimeoutError, CancelledError):
            raise Unavailable(f"authenticator did not answer within {self._timeout} s") from None
        except Exception:
            log.failure("{provider} authenticator for {authmethod} failed",
                        provider=self.authprovider, authmethod=self.authmethod)
            raise AuthFailure("the authenticator failed") from None
        return as_principal(result)

    def _refusal(self, error: ApplicationError) -> AuthFailure:
        return refusal_from(error)


class DynamicAuthenticator(CallbackAuthenticator):
    """A procedure registered by a backend session decides (Crossbar's ``type: dynamic``).

    ``dealer_for_realm(name)`` gives the dealer of a realm (None: no such realm);
    the call goes to ``authenticator_realm``, else to the realm the HELLO names.
    """

    authprovider = "dynamic"

    def __init__(self, authmethod: str, procedure: str,
                 dealer_for_realm: Callable[[str], Dealer | None], clock: IReactorTime,
                 timeout: float | None = DEFAULT_TIMEOUT,
                 authenticator_realm: str | None = None) -> None:
        super().__init__(authmethod, clock, timeout)
        self.procedure = procedure
        self._dealer_for_realm = dealer_for_realm
        self._authenticator_realm = authenticator_realm

    def _invoke(self, hello: Hello, details: dict[str, Any]) -> Deferred:
        realm = self._authenticator_realm or hello.realm
        dealer = self._dealer_for_realm(realm)
        if dealer is None:
            raise Unavailable(f"authenticator unavailable: no realm {realm!r} for {self.procedure}")
        # The timeout is ours (addTimeout in _ask), which also cancels the call in the dealer.
        return dealer.call_from_router(self.procedure, [hello.realm, hello.authid, details], {},
                                       timeout=None)

    def _refusal(self, error: ApplicationError) -> AuthFailure:
        # These come from the dealer, not from an authenticator saying no.
        if error.error == errors.NO_SUCH_PROCEDURE:
            return Unavailable(f"authenticator unavailable: nothing registered {self.procedure}")
        if error.error in (errors.CANCELED, errors.TIMEOUT):
            return Unavailable(f"authenticator unavailable: {self.procedure} did not answer")
        return refusal_from(error)
