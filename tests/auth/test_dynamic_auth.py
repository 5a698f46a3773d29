"""Dynamic authenticators (a procedure a backend registers) and Dealer.call_from_router."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult
from twisted.internet.defer import Deferred

from tests.auth import REALM, Backend, Client, Router, ticket, wampcra
from wampchat.auth.cra import WampCraAuthenticator
from wampchat.auth.dynamic import DynamicAuthenticator
from wampchat.auth.ticket import StaticTicketAuthenticator
from wampchat.config_types import StaticPrincipal

PROCEDURE = "com.example.authenticate"
BACKEND = StaticPrincipal(authid="backend", role="backend", secret="b4ckend")


class Recorder:
    """An authenticator endpoint that records its calls and answers as told."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, realm: str, authid: Any, details: dict) -> Any:
        self.calls.append((realm, authid, details))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer() if callable(self.answer) else self.answer


def dynamic_router(method: str = "ticket", timeout: float = 10.0,
                   authenticator_realm: str | None = None) -> Router:
    router = Router({"wampcra": WampCraAuthenticator((BACKEND,))})
    realms = router.realms
    router.context.authenticators[method] = DynamicAuthenticator(
        method, PROCEDURE, lambda name: realms[name].dealer if name in realms else None,
        router.clock, timeout=timeout, authenticator_realm=authenticator_realm)
    return router


def with_backend(router: Router, endpoint: Any) -> Backend:
    backend = router.connect(Backend(PROCEDURE, endpoint, "b4ckend"))
    assert backend.registered
    return backend


# -- ticket through a backend procedure ---------------------------------------------------

def test_dynamic_ticket_gets_the_returned_role_authid_and_extra():
    """The callee sees (realm, authid, details with the ticket) and its principal is WELCOMEd."""
    router = dynamic_router()
    endpoint = Recorder({"role": "admin", "authid": "alice@example.com", "extra": {"x": 1}})
    with_backend(router, endpoint)
    client = router.connect(Client(["ticket"], "alice", ticket("tok"), authextra={"a": "b"}))
    assert (client.welcome.authid, client.welcome.authrole) == ("alice@example.com", "admin")
    assert client.welcome.authextra == {"x": 1}
    assert (client.welcome.authmethod, client.welcome.authprovider) == ("ticket", "dynamic")
    [(realm, authid, details)] = endpoint.calls
    assert (realm, authid) == (REALM, "alice")
    assert details == {"ticket": "tok", "authmethod": "ticket", "authextra": {"a": "b"},
                       "session": client.welcome.session,
                       "transport": {"type": "memory", "peer": "memory"}}


def test_dynamic_ticket_returning_a_role_string_keeps_the_hello_authid():
    """A plain string is the authrole; the authid is the HELLO's."""
    router = dynamic_router()
    with_backend(router, Recorder("user"))
    client = router.connect(Client(["ticket"], "bob", ticket("tok")))
    assert (client.welcome.authid, client.welcome.authrole) == ("bob", "user")


def test_dynamic_principal_may_move_the_session_to_another_realm():
    """A principal with `realm` WELCOMEs the session on that realm."""
    router = dynamic_router()
    with_backend(router, Recorder({"role": "user", "realm": "other"}))
    client = router.connect(Client(["ticket"], "bob", ticket("tok")))
    assert client.welcome.realm == "other"


def test_authenticator_application_error_is_forwarded_as_the_abort():
    """ApplicationError('wamp.error.not_authorized', 'nope') -> ABORT with that URI and message."""
    router = dynamic_router()
    with_backend(router, Recorder(ApplicationError("wamp.error.not_authorized", "nope")))
    client = router.connect(Client(["ticket"], "mallory", ticket("tok")))
    assert client.welcome is None
    assert (client.left.reason, client.left.message) == ("wamp.error.not_authorized", "nope")


def test_invalid_principal_is_authentication_failed():
    """An answer without a role refuses the login, it does not crash the router."""
    router = dynamic_router()
    with_backend(router, Recorder({"authid": "x"}))
    client = router.connect(Client(["ticket"], "bob", ticket("tok")))
    assert client.left.reason == "wamp.error.authentication_failed"
    assert "no role" in client.left.message


def test_no_registered_authenticator_is_unavailable():
    """Nothing registered at the procedure: ABORT wampchat.error.unavailable (retryable)."""
    client = dynamic_router().connect(Client(["ticket"], "bob", ticket("tok")))
    assert client.left.reason == "wampchat.error.unavailable"
    assert "unavailable" in client.left.message


def test_missing_authenticator_realm_is_unavailable():
    """An authenticator realm the router does not have: unavailable, not a crash."""
    router = dynamic_router(authenticator_realm="nowhere")
    client = router.connect(Client(["ticket"], "bob", ticket("tok")))
    assert client.left.reason == "wampchat.error.unavailable"


def test_slow_authenticator_is_unavailable_after_the_timeout():
    """No answer within the timeout: ABORT unavailable, and the call is dropped in the dealer."""
    router = dynamic_router(timeout=3.0)
    with_backend(router, Recorder(Deferred))
    client = router.connect(Client(["ticket"], "bob", ticket("tok")))
    router.clock.advance(2.9)
    router.pump()
    assert client.left is None and router.realm.dealer.calls_in_flight == 1
    router.clock.advance(0.1)
    router.pump()
    assert client.left.reason == "wampchat.error.unavailable"
    assert router.realm.dealer.calls_in_flight == 0


def test_authenticator_leaving_mid_call_is_unavailable():
    """The backend leaving while a login waits on it: ABORT unavailable."""
    router = dynamic_router()
    backend = with_backend(router, Recorder(Deferred))
    client = router.connect(Client(["ticket"], "bob", ticket("tok")))
    backend.disconnect()
    router.pump()
    assert client.left.reason == "wampchat.error.unavailable"


# -- anonymous and wampcra ---------------------------------------------------------------

def test_dynamic_anonymous_is_decided_at_hello():
    """For anonymous the call happens at HELLO, with no challenge; no authid -> a random one."""
    router = dynamic_router("anonymous")
    endpoint = Recorder("guest")
    with_backend(router, endpoint)
    client = router.connect(Client(["anonymous"]))
    assert client.challenges == []
    assert client.welcome.authrole == "guest" and client.welcome.authid
    assert endpoint.calls[0][1] is None and "ticket" not in endpoint.calls[0][2]


def test_dynamic_wampcra_with_the_returned_secret():
    """The callee returns the secret; Autobahn's compute_wcs answer logs in, a wrong one not."""
    router = Router({"ticket": StaticTicketAuthenticator((BACKEND,))})
    realms = router.realms
    router.context.authenticators["wampcra"] = DynamicAuthenticator(
        "wampcra", PROCEDURE, lambda name: realms[name].dealer, router.clock)
    backend = router.connect(_TicketBackend())
    assert backend.registered
    good = router.connect(Client(["wampcra"], "carol", wampcra("s3cret")))
    bad = router.connect(Client(["wampcra"], "carol", wampcra("wrong")))
    assert (good.welcome.authid, good.welcome.authrole) == ("carol", "user")
    assert (good.welcome.authmethod, good.welcome.authprovider) == ("wampcra", "dynamic")
    assert bad.left.reason == "wamp.error.authentication_failed"


class _TicketBackend(Backend):
    """The backend logging in with a static ticket, so that wampcra can be the dynamic one."""

    def __init__(self) -> None:
        super().__init__(PROCEDURE, lambda realm, authid, details: {
            "role": "user", "secret": "s3cret"}, BACKEND.secret)

    def onConnect(self) -> None:
        self.join(REALM, authmethods=["ticket"], authid="backend")

    def onChallenge(self, challenge: Any) -> str:
        return BACKEND.secret


# -- Dealer.call_from_router --------------------------------------------------------------

def _router_call(router: Router, endpoint: Any, *args: Any, timeout: float | None = None,
                 **kwargs: Any) -> list:
    with_backend(router, endpoint)
    outcome: list = []
    d = router.realm.dealer.call_from_router(PROCEDURE, list(args), kwargs, timeout)
    d.addBoth(outcome.append)
    router.pump()
    return outcome


def _raise(error: Exception) -> Any:
    def endpoint() -> None:
        raise error
    return endpoint


def test_call_from_router_returns_a_single_result():
    """One positional result is returned as itself."""
    assert _router_call(Router({"wampcra": WampCraAuthenticator((BACKEND,))}),
                        lambda a, b: a + b, 2, 3) == [5]


def test_call_from_router_returns_callresult_for_kwargs():
    """Several results or kwargs come back as Autobahn's CallResult."""
    def endpoint(**kwargs: Any) -> CallResult:
        return CallResult(1, 2, seen=kwargs["x"])

    [result] = _router_call(Router({"wampcra": WampCraAuthenticator((BACKEND,))}), endpoint, x=7)
    assert (list(result.results), result.kwresults) == ([1, 2], {"seen": 7})


def test_call_from_router_errors_and_missing_procedure():
    """ERROR from the callee is an ApplicationError; no registration is no_such_procedure."""
    router = Router({"wampcra": WampCraAuthenticator((BACKEND,))})
    [failure] = _router_call(router, _raise(ApplicationError("com.example.oops", "bad")))
    assert (failure.value.error, failure.value.args) == ("com.example.oops", ("bad",))
    outcome: list = []
    router.realm.dealer.call_from_router("com.example.none", [], {}, None).addErrback(
        outcome.append)
    assert outcome[0].value.error == "wamp.error.no_such_procedure"


def test_call_from_router_times_out():
    """With a timeout the dealer answers wamp.error.timeout and forgets the call."""
    router = Router({"wampcra": WampCraAuthenticator((BACKEND,))})
    outcome = _router_call(router, lambda: Deferred(), timeout=2.0)
    assert outcome == []
    router.clock.advance(2.0)
    router.pump()
    assert outcome[0].value.error == "wamp.error.timeout"
    assert router.realm.dealer.calls_in_flight == 0
