"""A router over the memory transport with a Clock, and fake clients that record what they get.

``RouterHarness`` builds one realm from a ``RealmConfig`` (the SPEC §6 roles by
default), a ``RouterContext`` with a test-only ticket authenticator, and a
``StepClock``. ``FakeClient`` is an Autobahn ``ITransportHandler`` that says
HELLO, answers the CHALLENGE with its ticket, answers a router GOODBYE as
Autobahn does, and records every message it receives.

Tickets are ``role:<authrole>:<authid>[:<exp>]``; the authenticator accepts any such
ticket, so a test chooses the identity it needs. Like a token, a ticket with ``exp``
gives a session that ends at ``exp + LEEWAY``.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

import wampchat  # noqa: F401  (selects txaio's Twisted framework before Autobahn)
from autobahn.wamp import message, role
from twisted.internet.task import Clock

from wampchat import errors
from wampchat.auth.authenticator import Accept, Challenge, Hello
from wampchat.config_types import LimitsConfig, PermissionConfig, RealmConfig, RoleConfig
from wampchat.errors import BadCredentials
from wampchat.router.realm import Realm
from wampchat.router.session import RouterContext, RouterSession, install_refresh
from wampchat.transport.memory import MEMORY_INFO, connect_pair

REALM = "wampchat"
LEEWAY = 30.0                      # seconds a session outlives its ticket's exp
P = PermissionConfig

USER_ROWS = (
    P("chat.", "prefix", subscribe=True),
    P("chat.main", subscribe=True, publish=True, disclose_publisher=True),
    P("chat.admin"),                                   # explicitly nothing for users
    P("activity.on_status", subscribe=True),
    P("news.", "prefix", subscribe=True, publish=True),  # publisher not disclosed
    P("news.limited", subscribe=True, publish=True, max_payload=64),
    P("rpc.", "prefix", call=True, disclose_caller=True),
    P("chat.history", call=True, disclose_caller=True),
    P("wampchat.session.refresh", call=True, disclose_caller=True),
)

DEFAULT_REALM = RealmConfig(REALM, roles=(
    RoleConfig("user", USER_ROWS),
    RoleConfig("admin", USER_ROWS + (
        P("chat.admin", subscribe=True, publish=True, disclose_publisher=True),)),
    RoleConfig("backend", (
        P("", "prefix", call=True, register=True, publish=True, subscribe=True),
        P("chat.", "prefix", call=True, register=True, publish=True, subscribe=True,
          disclose_publisher=True, disclose_caller=True),
    )),
))

DEFAULT_ROLES = {
    "subscriber": role.RoleSubscriberFeatures(pattern_based_subscription=True),
    "publisher": role.RolePublisherFeatures(publisher_exclusion=True),
    "caller": role.RoleCallerFeatures(progressive_call_results=True, call_canceling=True),
    "callee": role.RoleCalleeFeatures(progressive_call_results=True),
}

CANCELING_ROLES = {**DEFAULT_ROLES, "callee": role.RoleCalleeFeatures(
    progressive_call_results=True, call_canceling=True)}


def ticket_for(authrole: str, authid: str, exp: float | None = None) -> str:
    """The test ticket that logs in as authid with authrole (valid until exp, if given)."""
    ticket = f"role:{authrole}:{authid}"
    return ticket if exp is None else f"{ticket}:{exp}"


class TicketTestAuthenticator:
    """Test-only `ticket` authenticator: challenges, then accepts any well-formed ticket.

    ``refresh`` accepts a ticket for the same authid and counts its calls.
    """

    authmethod = "ticket"
    takes_transport_token = False

    def __init__(self) -> None:
        self.refreshes = 0

    async def hello(self, hello: Hello) -> Challenge:
        return Challenge("ticket")

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        return self._accept(signature)

    async def refresh(self, current: Accept, token: str) -> Accept:
        self.refreshes += 1
        accept = self._accept(token)
        if accept.authid != current.authid:
            raise BadCredentials("a refresh token must be for the same subject")
        return accept

    @staticmethod
    def _accept(ticket: str) -> Accept:
        parts = ticket.split(":") if isinstance(ticket, str) else []
        if len(parts) not in (3, 4) or parts[0] != "role":
            raise BadCredentials("not a test ticket")
        exp = float(parts[3]) if len(parts) == 4 else None
        return Accept(authid=parts[2], authrole=parts[1], authmethod="ticket",
                      authprovider="test", authextra={"ticket": ticket},
                      expires_at=None if exp is None else exp + LEEWAY,
                      credential_expires_at=exp, subject=parts[2])


class StepClock(Clock):
    """A Clock whose due calls can be run with a bound, so a loop of callLater(0) fails fast."""

    def run_due(self, limit: int = 10000) -> None:
        """Run calls due now (including ones they schedule for now), at most limit of them."""
        for _ in range(limit):
            self._sortCalls()
            if not self.calls or self.calls[0].getTime() > self.seconds():
                return
            call = self.calls.pop(0)
            call.called = 1
            call.func(*call.args, **call.kw)
        raise AssertionError(f"the router did not go quiet after {limit} calls")


class FakeClient:
    """A WAMP client end (ITransportHandler) that records what the router sends it."""

    def __init__(self, harness: RouterHarness, ticket: str | None, realm: str = REALM,
                 authmethods: list[str] | None = None, roles: dict | None = None,
                 say_hello: bool = True, answer_goodbye: bool = True) -> None:
        self.harness = harness
        self.ticket = ticket
        self.realm = realm
        self.authmethods = ["ticket"] if authmethods is None else authmethods
        self.roles = roles or DEFAULT_ROLES
        self.say_hello = say_hello
        self.answer_goodbye = answer_goodbye
        self.messages: list[Any] = []
        self.transport = None
        self.closed = False
        self._goodbye_sent = False
        self._requests = 0

    # ITransportHandler ----------------------------------------------------------------

    def onOpen(self, transport) -> None:
        self.transport = transport
        if self.say_hello:
            self.send(message.Hello(self.realm, self.roles, authmethods=self.authmethods or None))

    def onMessage(self, msg: Any) -> None:
        self.messages.append(msg)
        if isinstance(msg, message.Challenge) and self.ticket is not None:
            self.send(message.Authenticate(self.ticket))
        elif (isinstance(msg, message.Goodbye) and self.answer_goodbye and self.is_open
              and not self._goodbye_sent):
            self.send(message.Goodbye(errors.GOODBYE_AND_OUT))

    def onClose(self, wasClean: bool) -> None:
        self.closed = True

    # what tests use --------------------------------------------------------------------

    def send(self, msg: Any) -> None:
        """Send msg to the router (delivered when the harness pumps)."""
        if isinstance(msg, message.Goodbye):
            self._goodbye_sent = True
        self.transport.send(msg)

    def request(self) -> int:
        """A fresh request id of this client."""
        self._requests += 1
        return self._requests

    def received(self, kind: type | None = None) -> list[Any]:
        """Messages received so far, only those of kind when given."""
        return [m for m in self.messages if kind is None or isinstance(m, kind)]

    def clear(self) -> None:
        """Forget what was received so far."""
        self.messages.clear()

    @property
    def last(self) -> Any:
        return self.messages[-1] if self.messages else None

    @property
    def is_open(self) -> bool:
        return self.transport is not None and self.transport.isOpen()

    @property
    def welcome(self) -> message.Welcome | None:
        found = self.received(message.Welcome)
        return found[0] if found else None

    @property
    def session_id(self) -> int:
        assert self.welcome is not None, f"not welcomed: {self.messages}"
        return self.welcome.session

    def subscribe(self, topic: str, match: str | None = None) -> int:
        """SUBSCRIBE, pump, and return the subscription id of the SUBSCRIBED."""
        reply = self._ask(message.Subscribe(self.request(), topic, match=match))
        assert isinstance(reply, message.Subscribed), reply
        return reply.subscription

    def register(self, procedure: str, match: str | None = None, invoke: str | None = None) -> int:
        """REGISTER, pump, and return the registration id of the REGISTERED."""
        reply = self._ask(message.Register(self.request(), procedure, match=match, invoke=invoke))
        assert isinstance(reply, message.Registered), reply
        return reply.registration

    def call(self, procedure: str, *args: Any, **kwargs: Any) -> Any:
        """CALL, pump, and return the reply (RESULT or ERROR)."""
        return self._ask(message.Call(self.request(), procedure, args=list(args) or None,
                                      kwargs=kwargs or None))

    def _ask(self, msg: Any) -> Any:
        before = len(self.messages)
        self.send(msg)
        self.harness.pump()
        replies = [m for m in self.messages[before:]
                   if getattr(m, "request", None) == msg.request
                   and not isinstance(m, (message.Event, message.Invocation))]
        assert replies, f"no reply to {msg}: {self.messages[before:]}"
        return replies[-1]


class RouterHarness:
    """One realm behind a RouterContext, on a StepClock, reached by FakeClients."""

    def __init__(self, config: RealmConfig = DEFAULT_REALM, limits: LimitsConfig | None = None,
                 seed: int = 0) -> None:
        self.clock = StepClock()
        self.authenticator = TicketTestAuthenticator()
        limits = limits or LimitsConfig()
        self.realm = Realm(config, self.clock, rng=random.Random(seed), now_iso=self._now_iso,
                           limits=limits)
        install_refresh(self.realm)
        self.context = RouterContext({config.name: self.realm}, {"ticket": self.authenticator},
                                     self.clock, limits)
        self.sessions: list[RouterSession] = []

    def _now_iso(self) -> str:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc).isoformat()

    def pump(self) -> None:
        """Deliver everything in flight until the router and clients are quiet."""
        self.clock.run_due()

    def connect(self, ticket: str | None = None, **options: Any) -> FakeClient:
        """A client connected (and pumped); it says HELLO unless say_hello=False."""
        client = FakeClient(self, ticket, **options)
        session = self.context.session(MEMORY_INFO)
        self.sessions.append(session)
        connect_pair(self.clock, session, client)
        self.pump()
        return client

    def join(self, authrole: str = "user", authid: str | None = None,
             roles: dict | None = None, exp: float | None = None) -> FakeClient:
        """A client welcomed as authid (default: a fresh name) with authrole, until exp + LEEWAY."""
        authid = authid or f"{authrole}-{len(self.sessions) + 1}"
        client = self.connect(ticket_for(authrole, authid, exp), roles=roles)
        assert client.welcome is not None, f"{authid} was not welcomed: {client.messages}"
        return client
