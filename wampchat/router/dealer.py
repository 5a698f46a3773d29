"""Routed RPC: registrations by (procedure, match), CALL -> INVOCATION -> YIELD -> RESULT.

Shared registrations pick a callee by the registration's invocation policy.
Calls in flight are indexed both by (callee, invocation id) and (caller, call id),
so YIELD/ERROR/CANCEL and sessions leaving are O(1) per call. Router-provided
procedures (the meta API, session refresh) are plain functions in ``builtins``.
"""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from wampchat import errors
from wampchat.errors import RequestError
from wampchat.logs import Logger
from wampchat.router.ids import global_id
from wampchat.router.matching import UriMap
from wampchat.router.permissions import Permission, Permissions

if TYPE_CHECKING:
    from wampchat.router.meta import MetaEvents
    from wampchat.router.session import RouterSession

log = Logger()

INVOKE_POLICIES = ("single", "roundrobin", "random", "first", "last")
CANCEL_MODES = ("skip", "kill", "killnowait")

# (caller session, args, kwargs, call details) -> result, or an awaitable of it
Builtin = Callable[["RouterSession", list, dict], Any]


class Registration:
    """One (procedure, match), its invocation policy and callees in registration order."""

    __slots__ = ("id", "uri", "match", "invoke", "created", "callees", "_next")

    def __init__(self, uri: str, match: str, invoke: str, created: str) -> None:
        self.id = global_id()
        self.uri = uri
        self.match = match
        self.invoke = invoke
        self.created = created
        self.callees: list[RouterSession] = []
        self._next = 0                     # round-robin position

    def details(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "uri": self.uri,
                "match": self.match, "invoke": self.invoke}

    def choose(self, rng: random.Random) -> RouterSession:
        if self.invoke == "roundrobin":
            callee = self.callees[self._next % len(self.callees)]
            self._next = (self._next + 1) % len(self.callees)
            return callee
        if self.invoke == "random":
            return rng.choice(self.callees)
        if self.invoke == "last":
            return self.callees[-1]
        return self.callees[0]             # single, first


class CallInFlight:
    """A CALL forwarded as INVOCATION and not yet answered."""

    __slots__ = ("caller", "call_request", "callee", "invocation", "receive_progress", "timer",
                 "interrupted")

    def __init__(self, caller: RouterSession, call_request: int, callee: RouterSession,
                 invocation: int, receive_progress: bool) -> None:
        self.caller = caller
        self.call_request = call_request
        self.callee = callee
        self.invocation = invocation
        self.receive_progress = receive_progress
        self.timer: IDelayedCall | None = None
        self.interrupted = False           # INTERRUPT(kill) sent, waiting for the callee


class RouterCaller:
    """The caller of a call the router itself makes (``Dealer.call_from_router``).

    It stands in for a caller session in ``CallInFlight`` so that the YIELD, ERROR,
    timeout, cancel and callee-leaving paths stay exactly those of a session's CALL:
    they all end in ``send()``, which here settles a Deferred instead of writing frames.
    """

    id = 0                                 # no real session has id 0 (ids start at 1)
    authid = "router"
    authrole = "router"
    is_attached = True

    _requests = itertools.count(1)         # call ids of router calls, unique per process

    def __init__(self) -> None:
        self.request = next(self._requests)  # the call id under which the flight is indexed
        self.deferred: Deferred = Deferred(self._cancel)
        self.dealer: Dealer | None = None
        self._cancelled = False

    def send(self, msg: Any) -> None:
        if self.deferred.called or self._cancelled:
            return
        if isinstance(msg, message.Result):
            if not msg.progress:
                self.deferred.callback(_call_result(msg.args, msg.kwargs))
        elif isinstance(msg, message.Error):
            self.deferred.errback(ApplicationError(msg.error, *(msg.args or ()),
                                                   **(msg.kwargs or {})))

    def reply_error(self, request: Any, uri: str, text: str | None = None) -> None:
        self.send(message.Error(message.Call.MESSAGE_TYPE, self.request, uri,
                                args=[text] if text else None))

    def _cancel(self, _deferred: Deferred) -> None:
        # The Deferred was cancelled (e.g. its user timed out): drop the call in flight,
        # and let the Deferred fail with CancelledError rather than the dealer's answer.
        self._cancelled = True
        if self.dealer is not None:
            self.dealer.cancel(self, message.Cancel(self.request, mode="killnowait"))


def _call_result(args: list | None, kwargs: dict | None) -> Any:
    """A RESULT's payload as Autobahn's client returns it: one value, CallResult or None."""
    if kwargs:
        return CallResult(*(args or ()), **kwargs)
    if args:
        return args[0] if len(args) == 1 else CallResult(*args)
    return None


class Dealer:
    """The dealer of one realm."""

    def __init__(self, permissions: Permissions, clock: IReactorTime,
                 now_iso: Callable[[], str], rng: random.Random | None = None) -> None:
        self._permissions = permissions
        self._clock = clock
        self._now_iso = now_iso
        self._rng = rng or random.Random()
        self._registrations: UriMap[Registration] = UriMap()
        self._by_id: dict[int, Registration] = {}                 # registration id -> registration
        self._by_session: dict[int, set[int]] = {}                # session id -> registration ids
        self.max_per_session = 1000                               # registrations one session may hold
        self._by_invocation: dict[tuple[int, int], CallInFlight] = {}  # (callee id, invocation id) -> call
        self._by_call: dict[tuple[int, int], CallInFlight] = {}   # (caller id, call request id) -> call
        # session id -> its calls in flight as caller or callee (a dict as an ordered set),
        # so a session leaving touches its own calls only
        self._flights_of: dict[int, dict[CallInFlight, None]] = {}
        # Called with the reason whenever a call ends without its callee's answer
        # (callee_left, caller_left, timeout, canceled, shutdown): the node's metrics.
        self.on_call_interrupted: Callable[[str], None] = lambda reason: None
        self.builtins: dict[str, Builtin] = {}                    # procedure -> router function
        self.meta: MetaEvents | None = None

    # -- registrations --------------------------------------------------------------------

    def register(self, session: RouterSession, msg: message.Register) -> None:
        """REGISTER (already authorized): create or join the registration, reply REGISTERED."""
        match = msg.match or "exact"
        invoke = msg.invoke or "single"
        if msg.procedure in self.builtins:
            session.reply_error(msg, errors.PROCEDURE_ALREADY_EXISTS,
                                f"{msg.procedure} is provided by the router")
            return
        held = self._by_session.get(session.id)
        if held is not None and len(held) >= self.max_per_session:
            session.reply_error(msg, errors.LIMIT_EXCEEDED,
                                f"at most {self.max_per_session} registrations per session")
            return
        registration = self._registrations.get(msg.procedure, match)
        if registration is not None:
            # WAMP: a single registration, or one this session already holds, exists;
            # any other mismatch of policies (a new single included) is a conflict.
            if session in registration.callees or registration.invoke == "single":
                session.reply_error(msg, errors.PROCEDURE_ALREADY_EXISTS,
                                    f"{msg.procedure} ({match}) is already registered")
                return
            if registration.invoke != invoke:
                session.reply_error(msg, errors.PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT,
                                    f"{msg.procedure} is registered with invoke={registration.invoke}")
                return
            created = False
        else:
            registration = Registration(msg.procedure, match, invoke, self._now_iso())
            self._registrations.add(msg.procedure, match, registration)
            self._by_id[registration.id] = registration
            created = True
        registration.callees.append(session)
        self._by_session.setdefault(session.id, set()).add(registration.id)
        session.send(message.Registered(msg.request, registration.id))
        if self.meta is not None:
            if created:
                self.meta.registration_created(session.id, registration)
            self.meta.registered(session.id, registration)

    def unregister(self, session: RouterSession, msg: message.Unregister) -> None:
        """UNREGISTER: leave the registration (deleted when empty), reply UNREGISTERED."""
        registration = self._by_id.get(msg.registration)
        if registration is None or session not in registration.callees:
            session.reply_error(msg, errors.NO_SUCH_REGISTRATION,
                                f"no registration {msg.registration} for this session")
            return
        self._remove_callee(session, registration)
        session.send(message.Unregistered(msg.request))

    def _remove_callee(self, session: RouterSession, registration: Registration) -> None:
        registration.callees.remove(session)
        ids = self._by_session.get(session.id)
        if ids is not None:
            ids.discard(registration.id)
            if not ids:
                del self._by_session[session.id]
        deleted = not registration.callees
        if deleted:
            self._registrations.remove(registration.uri, registration.match)
            del self._by_id[registration.id]
        if self.meta is not None:
            self.meta.unregistered(session.id, registration)
            if deleted:
                self.meta.registration_deleted(session.id, registration)

    # -- calls ----------------------------------------------------------------------------

    def call(self, caller: RouterSession, msg: message.Call, permission: Permission) -> None:
        """CALL (already authorized): invoke a callee, or answer from a builtin, or ERROR."""
        builtin = self.builtins.get(msg.procedure)
        if builtin is not None:
            self._call_builtin(caller, msg, builtin)
            return
        registration = self._registrations.best(msg.procedure)
        if registration is None:
            caller.reply_error(msg, errors.NO_SUCH_PROCEDURE,
                               f"no callee registered for procedure {msg.procedure}")
            return
        callee = registration.choose(self._rng)
        invocation_id = callee.next_request_id()
        receive_progress = bool(msg.receive_progress)
        details: dict[str, Any] = {}
        if permission.disclose_caller:
            details = {"caller": caller.id, "caller_authid": caller.authid,
                       "caller_authrole": caller.authrole}
        flight = CallInFlight(caller, msg.request, callee, invocation_id, receive_progress)
        self._by_invocation[(callee.id, invocation_id)] = flight
        self._by_call[(caller.id, msg.request)] = flight
        self._flights_of.setdefault(caller.id, {})[flight] = None
        self._flights_of.setdefault(callee.id, {})[flight] = None
        if msg.timeout:
            flight.timer = self._clock.callLater(msg.timeout / 1000.0, self._timed_out, flight)
        callee.send(message.Invocation(
            invocation_id, registration.id, args=msg.args, kwargs=msg.kwargs,
            receive_progress=receive_progress or None,
            procedure=msg.procedure if registration.match != "exact" else None, **details))

    def yield_(self, callee: RouterSession, msg: message.Yield) -> None:
        """YIELD: RESULT to the caller; unknown or cancelled invocations are ignored."""
        flight = self._by_invocation.get((callee.id, msg.request))
        if flight is None:
            return
        if msg.progress:
            if flight.receive_progress and not flight.interrupted:
                flight.caller.send(message.Result(flight.call_request, args=msg.args,
                                                  kwargs=msg.kwargs, progress=True))
            return
        self._finish(flight)
        flight.caller.send(message.Result(flight.call_request, args=msg.args, kwargs=msg.kwargs))

    def invocation_error(self, callee: RouterSession, msg: message.Error) -> None:
        """ERROR for an INVOCATION: forwarded to the caller; unknown ones are ignored."""
        flight = self._by_invocation.get((callee.id, msg.request))
        if flight is None:
            return
        self._finish(flight)
        flight.caller.send(message.Error(message.Call.MESSAGE_TYPE, flight.call_request,
                                         msg.error, args=msg.args, kwargs=msg.kwargs))

    def cancel(self, caller: RouterSession, msg: message.Cancel) -> None:
        """CANCEL: skip, kill (the default) or killnowait, as the WAMP spec defines them."""
        flight = self._by_call.get((caller.id, msg.request))
        if flight is None or flight.interrupted:
            return
        mode = msg.mode or "kill"
        if mode != "skip" and not flight.callee.supports("callee", "call_canceling"):
            mode = "skip"      # the callee cannot be interrupted: answer the caller now
        self.on_call_interrupted("canceled")
        if mode == "kill":
            flight.interrupted = True
            flight.callee.send(message.Interrupt(flight.invocation, mode="kill",
                                                 reason=errors.CANCELED))
            return
        self._finish(flight)
        if mode == "killnowait":
            flight.callee.send(message.Interrupt(flight.invocation, mode="killnowait",
                                                 reason=errors.CANCELED))
        caller.send(message.Error(message.Call.MESSAGE_TYPE, flight.call_request,
                                  errors.CANCELED, args=["the call was canceled"]))

    def _timed_out(self, flight: CallInFlight) -> None:
        flight.timer = None
        if self._by_invocation.get((flight.callee.id, flight.invocation)) is not flight:
            return
        self._abandon(flight, "timeout", errors.TIMEOUT, "the call timed out")

    def _abandon(self, flight: CallInFlight, why: str, uri: str, text: str) -> None:
        """End a call without its callee's answer: INTERRUPT the callee (when it takes
        one), ERROR uri to the caller, counted under why."""
        self._finish(flight)
        self.on_call_interrupted(why)
        if flight.callee.supports("callee", "call_canceling"):
            flight.callee.send(message.Interrupt(flight.invocation, mode="killnowait", reason=uri))
        flight.caller.send(message.Error(message.Call.MESSAGE_TYPE, flight.call_request, uri,
                                         args=[text]))

    def _finish(self, flight: CallInFlight) -> None:
        self._by_invocation.pop((flight.callee.id, flight.invocation), None)
        self._by_call.pop((flight.caller.id, flight.call_request), None)
        for session_id in (flight.caller.id, flight.callee.id):
            flights = self._flights_of.get(session_id)
            if flights is not None:
                flights.pop(flight, None)
                if not flights:
                    del self._flights_of[session_id]
        if flight.timer is not None and flight.timer.active():
            flight.timer.cancel()
        flight.timer = None

    def call_from_router(self, procedure: str, args: list, kwargs: dict,
                         timeout: float | None = None) -> Deferred:
        """Call procedure as the router itself (no caller session), e.g. a dynamic authenticator.

        Fires with the result (args[0] for exactly one arg, else a CallResult); errbacks
        with ApplicationError: the callee's ERROR as sent, wamp.error.no_such_procedure,
        wamp.error.canceled when the callee leaves, wamp.error.timeout after timeout
        seconds. Cancelling the Deferred cancels the call (INTERRUPT where supported).
        """
        caller = RouterCaller()
        caller.dealer = self
        msg = message.Call(caller.request, procedure, args=list(args) or None,
                           kwargs=dict(kwargs) or None,
                           timeout=max(1, round(timeout * 1000)) if timeout else None)
        self.call(caller, msg, Permission(call=True))  # type: ignore[arg-type]
        return caller.deferred

    def _call_builtin(self, caller: RouterSession, msg: message.Call, builtin: Builtin) -> None:
        try:
            result = builtin(caller, list(msg.args or ()), dict(msg.kwargs or {}))
        except Exception as exc:
            self._builtin_failed(caller, msg, exc)
            return
        if isinstance(result, (Deferred, Awaitable)) or hasattr(result, "__await__"):
            d = ensureDeferred(result) if not isinstance(result, Deferred) else result
            d.addCallbacks(lambda value: self._builtin_done(caller, msg, value),
                           lambda failure: self._builtin_failed(caller, msg, failure.value))
        else:
            self._builtin_done(caller, msg, result)

    @staticmethod
    def _builtin_done(caller: RouterSession, msg: message.Call, value: Any) -> None:
        if caller.is_attached:
            caller.send(message.Result(msg.request, args=[value]))

    @staticmethod
    def _builtin_failed(caller: RouterSession, msg: message.Call, exc: BaseException) -> None:
        if not caller.is_attached:
            return
        if isinstance(exc, RequestError):
            caller.reply_error(msg, exc.uri, exc.text)
        elif isinstance(exc, ApplicationError):
            caller.send(message.Error(message.Call.MESSAGE_TYPE, msg.request, exc.error,
                                      args=list(exc.args) or None, kwargs=exc.kwargs or None))
        else:
            log.error("router procedure {procedure} failed: {error!r}", procedure=msg.procedure,
                      error=exc)
            caller.reply_error(msg, errors.RUNTIME_ERROR, "internal error in a router procedure")

    # -- session lifecycle --------------------------------------------------------------

    def remove_session(self, session: RouterSession) -> None:
        """The session left: unregister it; its callers get ERROR canceled, its callees INTERRUPT."""
        for registration_id in list(self._by_session.get(session.id, ())):
            registration = self._by_id.get(registration_id)
            if registration is not None:
                self._remove_callee(session, registration)
        self._by_session.pop(session.id, None)
        flights = list(self._flights_of.get(session.id, ()))
        if flights:
            log.info("session {session_id} left with {count} calls in flight: their callers "
                     "get ERROR canceled, their callees INTERRUPT", session_id=session.id,
                     count=len(flights))
        for flight in flights:
            self._finish(flight)
            self.on_call_interrupted("callee_left" if flight.callee is session else "caller_left")
            if flight.callee is session and flight.caller is not session:
                flight.caller.send(message.Error(
                    message.Call.MESSAGE_TYPE, flight.call_request, errors.CANCELED,
                    args=["the callee left before answering"]))
            elif flight.caller is session and flight.callee.supports("callee", "call_canceling"):
                flight.callee.send(message.Interrupt(flight.invocation, mode="killnowait",
                                                     reason=errors.CANCELED))

    def cancel_all(self, text: str) -> int:
        """Answer every call in flight with ERROR canceled (callees get INTERRUPT); the count."""
        flights = list(self._by_call.values())
        for flight in flights:
            self._abandon(flight, "shutdown", errors.CANCELED, text)
        return len(flights)

    def remove_forbidden(self, session: RouterSession) -> list[int]:
        """Drop registrations the session's (new) role may not hold; their ids."""
        removed = []
        for registration_id in list(self._by_session.get(session.id, ())):
            registration = self._by_id[registration_id]
            if self._permissions.check(session.authrole, registration.uri, "register") is None:
                self._remove_callee(session, registration)
                removed.append(registration_id)
        return removed

    # -- introspection (meta API) ---------------------------------------------------------

    def get(self, registration_id: int) -> Registration | None:
        return self._by_id.get(registration_id)

    def lookup(self, procedure: str, match: str) -> Registration | None:
        return self._registrations.get(procedure, match)

    def best(self, procedure: str) -> Registration | None:
        return self._registrations.best(procedure)

    def all(self) -> Iterable[Registration]:
        return self._by_id.values()

    @property
    def calls_in_flight(self) -> int:
        return len(self._by_invocation)
