"""The router side of one WAMP session: handshake, authentication, dispatch, close.

A ``RouterSession`` is Autobahn's ``ITransportHandler`` for every transport
(WebSocket, RawSocket, memory). States: NEW -> (AUTHENTICATING <-> CHALLENGED) ->
WELCOMED -> CLOSING -> CLOSED. Protocol violations end this session only: ABORT
before WELCOME, GOODBYE after, then the transport is closed.
"""

from __future__ import annotations

import enum
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from autobahn.wamp import message
from autobahn.wamp.exception import ProtocolError
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from wampchat import errors
from wampchat.auth.authenticator import Accept, Authenticator, Challenge, Hello, TransportInfo
from wampchat.config_types import LimitsConfig
from wampchat.errors import AuthFailure, RequestError
from wampchat.logs import Logger
from wampchat.router import features
from wampchat.router.admission import Admission, TokenBucket, admission_for
from wampchat.router.ids import RequestIds
from wampchat.router.refusal_log import RefusalLog
from wampchat.transport.serializers import InvalidUriRequest

if TYPE_CHECKING:
    from wampchat.router.realm import Realm

log = Logger()

# After our GOODBYE, how long the peer gets to answer before the transport is closed.
GOODBYE_GRACE = 2.0

# Requests that spend a token of the session's rate limit. Answers (YIELD, ERROR) and
# releases (UNSUBSCRIBE, UNREGISTER) never do: limiting them would only hurt others.
RATED_REQUESTS = (message.Publish, message.Call, message.Subscribe, message.Register)


class State(enum.Enum):
    NEW = "new"
    AUTHENTICATING = "authenticating"      # an authenticator is working
    CHALLENGED = "challenged"              # CHALLENGE sent, waiting for AUTHENTICATE
    WELCOMED = "welcomed"
    CLOSING = "closing"                    # our GOODBYE sent, waiting for the peer's
    CLOSED = "closed"


class SessionObserver:
    """Hooks at the session edge (metrics); the default does nothing."""

    def message_received(self, msg: Any) -> None: ...
    def login(self, outcome: str, reason: str) -> None: ...
    def dropped(self, reason: str) -> None: ...
    def protocol_violation(self) -> None: ...


class RouterContext:
    """What every session of one transport shares: realms, authenticators, clock, limits.

    admission is node-wide (shared by all transports' contexts); by default each
    context gets its own, from limits.
    """

    def __init__(self, realms: dict[str, Realm], authenticators: dict[str, Authenticator],
                 clock: IReactorTime, limits: LimitsConfig | None = None,
                 observer: SessionObserver | None = None,
                 admission: Admission | None = None) -> None:
        self.realms = realms                        # realm name -> Realm
        self.authenticators = authenticators        # authmethod -> authenticator
        self.clock = clock
        self.limits = limits or LimitsConfig()
        self.observer = observer or SessionObserver()
        self.admission = admission or admission_for(self.limits, clock)
        self.refusals = RefusalLog(clock)

    def session(self, info: TransportInfo) -> RouterSession:
        """A new session for a connection described by info."""
        return RouterSession(self, info)


def _send_order(authmethods: list[str] | None) -> list[str]:
    return list(authmethods) if authmethods else ["anonymous"]


class RouterSession:
    """One client session on the router (Autobahn ITransportHandler)."""

    def __init__(self, context: RouterContext, info: TransportInfo) -> None:
        self._context = context
        self._clock = context.clock
        self.info = info
        self.state = State.NEW
        self._transport = None
        self._request_ids = RequestIds()
        # (role, feature) pairs the peer announced as true in HELLO: four role-feature
        # objects and a dict fewer per session for the collector to walk.
        self._features: frozenset[tuple[str, str]] = frozenset()
        self._hello: Hello | None = None
        self._authenticator: Authenticator | None = None
        self._accept: Accept | None = None
        self._timers: dict[str, IDelayedCall] = {}  # purpose -> pending timer
        self._rate: TokenBucket | None = None       # None: this session's role is not limited
        self.address = ""                           # the client's IP (set by socket transports)
        self.realm: Realm | None = None
        self.id = 0
        self.authid = ""
        self.authrole = ""
        self.authmethod = ""
        self.authprovider = ""
        self.authextra: dict[str, Any] = {}
        self.on_close: list[Callable[[RouterSession], None]] = []

    # -- ITransportHandler ------------------------------------------------------------

    @property
    def transport(self):
        return self._transport

    def onOpen(self, transport) -> None:
        self._transport = transport
        self._start_timer("hello", self._context.limits.hello_timeout)

    def onClose(self, wasClean: bool) -> None:
        self._leave()

    def onMessage(self, msg: Any) -> None:
        """One decoded message from the peer. Never raises."""
        self._context.observer.message_received(msg)
        try:
            self._on_message(msg)
        except ProtocolError as exc:
            self.protocol_violation(str(exc))
        except Exception:
            log.failure("unexpected error handling {kind} in session {session_id}",
                        kind=type(msg).__name__, session_id=self.id)
            self.close_by_router(errors.PROTOCOL_VIOLATION if self.state != State.WELCOMED
                                 else errors.CLOSE_SYSTEM_SHUTDOWN, "internal router error")

    # -- what the broker, dealer and meta API use ----------------------------------------

    @property
    def is_attached(self) -> bool:
        return self.state == State.WELCOMED

    def send(self, msg: Any) -> None:
        """Hand msg to the transport; silently nothing once the transport is gone."""
        transport = self._transport
        if transport is not None and transport.isOpen():
            transport.send(msg)

    def reply_error(self, request: Any, uri: str, text: str | None = None) -> None:
        """ERROR for request (SUBSCRIBE, PUBLISH, CALL, ...), with text as the only argument."""
        if isinstance(request, message.Publish) and not request.acknowledge:
            return
        self.send(message.Error(request.MESSAGE_TYPE, request.request, uri,
                                args=[text] if text else None))

    def next_request_id(self) -> int:
        return self._request_ids.next()

    def supports(self, role: str, feature: str) -> bool:
        """Whether the peer announced feature for role in its HELLO."""
        return (role, feature) in self._features

    def payload_size(self, msg: Any) -> int:
        """Approximate serialized size of a message's args and kwargs, in bytes."""
        try:
            return len(json.dumps([msg.args or [], msg.kwargs or {}], separators=(",", ":"),
                                  default=lambda value: "x" * len(value)
                                  if isinstance(value, bytes) else repr(value)))
        except (TypeError, ValueError):
            return 0

    def count_dropped(self, reason: str) -> None:
        self._context.observer.dropped(reason)

    def meta_details(self) -> dict[str, Any]:
        """The session as the meta API describes it (wamp.session.get / on_join)."""
        return {"session": self.id, "authid": self.authid, "authrole": self.authrole,
                "authmethod": self.authmethod, "authprovider": self.authprovider,
                "authextra": self.authextra, "transport": {"type": self.info.kind}}

    @property
    def credentials(self) -> Accept | None:
        return self._accept

    # -- closing ------------------------------------------------------------------------

    def close_by_router(self, reason: str, text: str | None = None) -> None:
        """End the session: ABORT before WELCOME, GOODBYE after (then wait for the reply)."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        if self.state != State.WELCOMED:
            self.send(message.Abort(reason, message=text))
            self._close_transport()
            return
        self.send(message.Goodbye(reason, message=text))
        self.state = State.CLOSING
        self._detach()
        self._start_timer("goodbye", GOODBYE_GRACE)

    def protocol_violation(self, text: str) -> None:
        """The peer broke the protocol: ABORT/GOODBYE protocol_violation, close at once."""
        self._context.observer.protocol_violation()
        log.warn("protocol violation in session {session_id} from {peer}: {text}",
                 session_id=self.id, peer=self.info.peer, text=text)
        if self.state in (State.CLOSING, State.CLOSED):
            self._close_transport()
            return
        kind = message.Goodbye if self.state == State.WELCOMED else message.Abort
        self.send(kind(errors.PROTOCOL_VIOLATION, message=text))
        self._close_transport()

    def _close_transport(self) -> None:
        transport = self._transport
        if transport is not None and transport.isOpen():
            transport.close()
        self._leave()

    def _leave(self) -> None:
        if self.state == State.CLOSED:
            return
        self._detach()
        self.state = State.CLOSED
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        for callback in self.on_close:
            callback(self)

    def _detach(self) -> None:
        if self.realm is not None and self.state in (State.WELCOMED, State.CLOSING):
            realm, self.realm = self.realm, None
            realm.detach(self)

    # -- timers -------------------------------------------------------------------------

    def _start_timer(self, purpose: str, delay: float) -> None:
        """Run the purpose's action (_TIMER_ACTIONS) after delay, once; a pending timer of
        the same purpose is moved instead of replaced: a handshake restarts its
        authenticate timer at every step."""
        timer = self._timers.get(purpose)
        if timer is not None and timer.active():
            timer.reset(max(0.0, delay))
            return
        # A method and a name, not a closure: fewer objects per session (the token timer
        # lives as long as the session).
        self._timers[purpose] = self._clock.callLater(max(0.0, delay), self._timer_fired,
                                                      purpose)

    def _timer_fired(self, purpose: str) -> None:
        self._timers.pop(purpose, None)
        getattr(self, _TIMER_ACTIONS[purpose])()

    def _cancel_timer(self, purpose: str) -> None:
        timer = self._timers.pop(purpose, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _handshake_timed_out(self) -> None:
        if self.state in (State.NEW, State.AUTHENTICATING, State.CHALLENGED):
            self.close_by_router(errors.CLOSE_TIMEOUT, "the opening handshake took too long")

    def _token_expired(self) -> None:
        if self.state == State.WELCOMED:
            log.info("session {session_id} ({authid}) ended: its token expired",
                     session_id=self.id, authid=self.authid)
            self.close_by_router(errors.CLOSE_TOKEN_EXPIRED, "the access token expired")

    # -- the state machine ----------------------------------------------------------------

    def _on_message(self, msg: Any) -> None:
        state = self.state
        if state == State.WELCOMED:
            if self.realm is not None and self.realm.handles(msg):
                if self._rate is not None and isinstance(msg, RATED_REQUESTS) \
                        and not self._rate.take():
                    self._rate_limited(msg)
                else:
                    self.realm.dispatch(self, msg)
            elif isinstance(msg, message.Goodbye):
                self.send(message.Goodbye(errors.GOODBYE_AND_OUT))
                self._detach()
                self.state = State.CLOSING
                self._close_transport()
            elif isinstance(msg, message.Abort):
                self._close_transport()
            elif isinstance(msg, InvalidUriRequest):    # rare: checked off the hot path
                self._invalid_uri(msg)
            else:
                raise ProtocolError(f"{type(msg).__name__} is not a message a router accepts")
        elif state == State.NEW and isinstance(msg, message.Hello):
            self._on_hello(msg)
        elif state == State.CHALLENGED and isinstance(msg, message.Authenticate):
            self._on_authenticate(msg)
        elif state == State.CLOSING:
            if isinstance(msg, (message.Goodbye, message.Abort)):
                self._close_transport()
            # Anything else crossing our GOODBYE is dropped, as WAMP allows.
        elif isinstance(msg, message.Abort) and state in (State.AUTHENTICATING, State.CHALLENGED):
            self._close_transport()
        elif isinstance(msg, InvalidUriRequest):
            self._invalid_uri(msg)
        else:
            raise ProtocolError(f"{type(msg).__name__} not allowed in state {state.value}")

    def _invalid_uri(self, msg: InvalidUriRequest) -> None:
        """A request whose URI did not parse: ERROR invalid_uri; before WELCOME, ABORT."""
        if self.state == State.WELCOMED and msg.request is not None:
            if msg.message_type != message.Publish.MESSAGE_TYPE or msg.acknowledge:
                self.send(message.Error(msg.message_type, msg.request, errors.INVALID_URI,
                                        args=[msg.reason]))
        elif self.state in (State.NEW, State.CHALLENGED, State.AUTHENTICATING):
            self._refuse(errors.INVALID_URI, msg.reason, "invalid_uri")
        elif self.state == State.WELCOMED:
            raise ProtocolError(msg.reason)

    def _on_hello(self, msg: message.Hello) -> None:
        if self.address and self._context.admission.blocked(self.address):
            # connected before its address was blocked: refused without authenticating
            self._context.observer.login("refused", "address_blocked")
            self.close_by_router(errors.AUTHENTICATION_FAILED,
                                 "address_blocked: too many failed logins from this address")
            return
        realm = self._context.realms.get(msg.realm)
        if realm is None:
            self._refuse(errors.NO_SUCH_REALM, f"no realm {msg.realm!r} on this router",
                         "no_such_realm")
            return
        client_roles = dict(msg.roles or {})
        self._features = _announced_features(client_roles)
        authenticator = self._choose_authenticator(msg.authmethods)
        if authenticator is None:
            self._refuse(errors.NO_AUTH_METHOD,
                         f"none of the authmethods {_send_order(msg.authmethods)} is offered here",
                         "no_auth_method")
            return
        self.realm = realm
        self._authenticator = authenticator
        self._hello = Hello(realm=msg.realm, authmethods=tuple(_send_order(msg.authmethods)),
                            authid=msg.authid, authrole=msg.authrole,
                            authextra=dict(msg.authextra or {}), roles=client_roles,
                            session_id=realm.new_session_id(), transport=self.info)
        self.state = State.AUTHENTICATING
        # The HELLO came in time; from now on the authenticate timeout bounds the handshake
        # (the authenticator's work and the client's answer to a CHALLENGE).
        self._cancel_timer("hello")
        self._start_timer("authenticate", self._context.limits.authenticate_timeout)
        self._await_auth(authenticator.hello(self._hello))

    def _choose_authenticator(self, authmethods: list[str] | None) -> Authenticator | None:
        available = self._context.authenticators
        if self.info.bearer_token:
            # A token on the upgrade request authenticates the HELLO directly (SPEC §3).
            for authenticator in available.values():
                if authenticator.takes_transport_token:
                    return authenticator
        for method in _send_order(authmethods):
            if method in available:
                return available[method]
        return None

    def _on_authenticate(self, msg: message.Authenticate) -> None:
        self._start_timer("authenticate", self._context.limits.authenticate_timeout)
        self.state = State.AUTHENTICATING
        assert self._authenticator is not None and self._hello is not None
        self._await_auth(self._authenticator.authenticate(self._hello, msg.signature,
                                                          dict(msg.extra or {})))

    def _await_auth(self, outcome) -> None:
        d = ensureDeferred(outcome)
        d.addCallbacks(self._auth_answered, self._auth_failed)

    def _auth_answered(self, answer: Accept | Challenge) -> None:
        if self.state != State.AUTHENTICATING:
            return                          # closed while the authenticator worked
        if isinstance(answer, Challenge):
            self.state = State.CHALLENGED
            self.send(message.Challenge(answer.method, extra=answer.extra))
            self._start_timer("authenticate", self._context.limits.authenticate_timeout)
            return
        self._welcome(answer)

    def _auth_failed(self, failure) -> None:
        if self.state != State.AUTHENTICATING:
            return
        exc = failure.value
        if isinstance(exc, AuthFailure):
            self._refuse(exc.uri, exc.message(), exc.reason, retryable=exc.retryable)
        else:
            log.failure("authenticator failed in session from {peer}", failure=failure,
                        peer=self.info.peer)
            self._refuse(errors.AUTHENTICATION_FAILED, "internal error while authenticating",
                         "internal_error")

    def _refuse(self, uri: str, text: str, reason: str, retryable: bool = False) -> None:
        self._context.observer.login("refused", reason)
        self._context.refusals.refused(self.info.peer, reason, retryable)
        # A refusal that is the client's doing counts against its address (not ours:
        # a database outage must not get anyone blocked).
        if not retryable and self.address and self._context.admission.login_failed(self.address):
            self._context.observer.login("refused", "address_blocked")
            log.warn("{address} had too many failed logins: its connections are refused for "
                     "{seconds} s", address=self.address,
                     seconds=self._context.admission.block_seconds)
        self.realm = None
        self.close_by_router(uri, text)

    def _welcome(self, accept: Accept) -> None:
        assert self._hello is not None
        realm = self._context.realms.get(accept.realm) if accept.realm else self.realm
        if realm is None:
            self._refuse(errors.NO_SUCH_REALM, f"no realm {accept.realm!r} on this router",
                         "no_such_realm")
            return
        if not realm.has_role(accept.authrole):
            self._refuse(errors.NOT_AUTHORIZED,
                         f"role {accept.authrole!r} is not allowed on realm {realm.name!r}",
                         "role_not_allowed")
            return
        self._cancel_timer("authenticate")
        self.realm = realm
        self.id = self._hello.session_id if self._hello.session_id not in realm.sessions \
            else realm.new_session_id()
        self._hello = None               # read only during the handshake
        self._adopt(accept)
        self.state = State.WELCOMED
        self.send(features.RouterWelcome(self.id, realm=realm.name, authid=self.authid,
                                         authrole=self.authrole, authmethod=self.authmethod,
                                         authprovider=self.authprovider,
                                         authextra=self.authextra))
        realm.attach(self)
        self._context.observer.login("accepted", accept.authmethod)
        log.info("session {session_id} joined {realm} as {authid} ({authrole})",
                 session_id=self.id, realm=realm.name, authid=self.authid, authrole=self.authrole)

    def _rate_limited(self, msg: Any) -> None:
        """Over the message rate: ERROR for a request that expects an answer, else dropped."""
        self.count_dropped("rate_limited")
        self.reply_error(msg, errors.RATE_LIMITED,
                         f"over the limit of {self._context.limits.message_rate:g} requests "
                         "per second for this session")

    def _adopt(self, accept: Accept) -> None:
        self._accept = accept
        limits = self._context.limits
        if limits.message_rate > 0 and accept.authrole not in limits.rate_exempt_roles:
            if self._rate is None or accept.authrole != self.authrole:
                self._rate = TokenBucket(self._clock, limits.message_rate, limits.message_burst)
        else:
            self._rate = None
        self.authid = accept.authid
        self.authrole = accept.authrole
        self.authmethod = accept.authmethod
        self.authprovider = accept.authprovider
        self.authextra = dict(accept.authextra)
        if accept.expires_at is not None:
            self._start_timer("token", accept.expires_at - self._clock.seconds())
        else:
            self._cancel_timer("token")

    # -- credentials refresh (wampchat.session.refresh) ------------------------------------

    async def refresh(self, token: Any) -> dict[str, Any]:
        """Renew this session's credentials with a fresh token for the same subject.

        Returns {"status": "ok", "expires_at": exp}. Errors: ERROR with the failure's URI
        (authentication_failed, unavailable, ...) and nothing changes.
        """
        refresher = getattr(self._authenticator, "refresh", None)
        if refresher is None or self._accept is None:
            raise RequestError(errors.NOT_AUTHORIZED,
                               "this session's credentials cannot be refreshed")
        if not isinstance(token, str) or not token:
            raise RequestError(errors.INVALID_ARGUMENT, "token must be a non-empty string")
        try:
            accept = await refresher(self._accept, token)
        except AuthFailure as failure:
            raise RequestError(failure.uri, failure.message()) from None
        if self.state != State.WELCOMED or self.realm is None:
            raise RequestError(errors.CANCELED, "the session closed during the refresh")
        if not self.realm.has_role(accept.authrole):
            raise RequestError(errors.NOT_AUTHORIZED,
                               f"role {accept.authrole!r} is not allowed on this realm")
        role_changed = accept.authrole != self.authrole
        self._adopt(replace(accept, realm=None))
        if role_changed:
            self.realm.broker.remove_forbidden(self)
            self.realm.dealer.remove_forbidden(self)
        return {"status": "ok", "expires_at": accept.credential_expires_at}


# What each session timer does when it fires (purpose -> RouterSession method).
_TIMER_ACTIONS = {"hello": "_handshake_timed_out", "authenticate": "_handshake_timed_out",
                  "goodbye": "_close_transport", "token": "_token_expired"}


# Clients of one library announce the same features: sessions share one set of each kind
# (a few kinds; bounded, so that made-up HELLOs cannot grow it).
_SHARED_FEATURES: dict[frozenset[tuple[str, str]], frozenset[tuple[str, str]]] = {}
_SHARED_FEATURES_MAX = 64


def _announced_features(roles: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """The (role, feature) pairs a HELLO's role-feature objects announce as true."""
    features = frozenset((role, feature) for role, announced in roles.items()
                         for feature, value in getattr(announced, "__dict__", {}).items()
                         if value)
    shared = _SHARED_FEATURES.get(features)
    if shared is not None:
        return shared
    if len(_SHARED_FEATURES) < _SHARED_FEATURES_MAX:
        _SHARED_FEATURES[features] = features
    return features


def install_refresh(realm: Realm) -> None:
    """Provide wampchat.session.refresh(token) on realm (permissions decide who may call)."""
    realm.add_procedure("wampchat.session.refresh",
                        lambda caller, args, kwargs: caller.refresh(
                            args[0] if args else kwargs.get("token")))
