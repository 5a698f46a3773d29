"""A realm: its sessions, its broker and dealer, and the authorization gate in front of them.

``Realm.dispatch`` is the one place where a welcomed session's request is checked
against the permissions and handed to the broker or the dealer. The routing path
is synchronous: no Deferred per PUBLISH or CALL.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from autobahn.wamp import message
from twisted.internet.interfaces import IReactorTime

from wampchat import errors
from wampchat.config_types import LimitsConfig, RealmConfig
from wampchat.logs import Logger
from wampchat.router import meta
from wampchat.router.broker import Broker
from wampchat.router.dealer import Builtin, Dealer
from wampchat.router.ids import secure_id
from wampchat.router.permissions import Permission, Permissions
from wampchat.router.uris import invalid_uri_reason

if TYPE_CHECKING:
    from wampchat.router.session import RouterSession

log = Logger()


def utc_now_iso() -> str:
    """The current time as ISO 8601 in UTC, as the meta API reports creation times."""
    return datetime.now(timezone.utc).isoformat()


class Realm:
    """One routing realm: sessions indexed by id, a broker, a dealer and the meta API."""

    def __init__(self, config: RealmConfig, clock: IReactorTime,
                 rng: random.Random | None = None,
                 now_iso: Callable[[], str] = utc_now_iso,
                 limits: LimitsConfig | None = None) -> None:
        limits = limits or LimitsConfig()
        self.name = config.name
        self.permissions = Permissions(config.roles)
        self.clock = clock
        self.max_uri_length = limits.max_uri_length
        self.broker = Broker(self.permissions, clock, now_iso)
        self.broker.max_per_session = limits.max_subscriptions_per_session
        self.dealer = Dealer(self.permissions, clock, now_iso, rng=rng)
        self.dealer.max_per_session = limits.max_registrations_per_session
        self.meta_events = meta.MetaEvents(self.broker)
        self.broker.meta = self.meta_events
        self.dealer.meta = self.meta_events
        self.sessions: dict[int, RouterSession] = {}      # session id -> welcomed session
        self.on_attach: list[Callable[[RouterSession], None]] = []   # observers (metrics, services)
        self.on_detach: list[Callable[[RouterSession], None]] = []
        meta.install(self)
        self._handlers: dict[type, Callable[[RouterSession, Any], None]] = {
            message.Subscribe: self._subscribe,
            message.Unsubscribe: self.broker.unsubscribe,
            message.Publish: self._publish,
            message.Register: self._register,
            message.Unregister: self.dealer.unregister,
            message.Call: self._call,
            message.Yield: self.dealer.yield_,
            message.Cancel: self.dealer.cancel,
            message.Error: self._error,
        }

    # -- membership -------------------------------------------------------------------

    def new_session_id(self) -> int:
        """A fresh, unguessable session id not in use on this realm."""
        while True:
            session_id = secure_id()
            if session_id not in self.sessions:
                return session_id

    def has_role(self, authrole: str) -> bool:
        return self.permissions.has_role(authrole)

    def attach(self, session: RouterSession) -> None:
        """A session was welcomed: index it and announce it (wamp.session.on_join)."""
        self.sessions[session.id] = session
        self.meta_events.session_joined(session.meta_details())
        for observer in self.on_attach:
            observer(session)

    def detach(self, session: RouterSession) -> None:
        """The session left: drop everything it held, answer its calls, announce it."""
        if self.sessions.pop(session.id, None) is None:
            return
        self.broker.remove_session(session.id)
        self.dealer.remove_session(session)
        self.meta_events.session_left(session.id, session.authid, session.authrole)
        for observer in self.on_detach:
            observer(session)

    def reload_permissions(self, config: RealmConfig) -> dict[str, int]:
        """Adopt config's roles and permissions; sessions stay, what they may no longer hold goes.

        A session whose role no longer exists is ended (GOODBYE wamp.close.killed).
        """
        permissions = Permissions(config.roles)
        self.permissions = self.broker._permissions = self.dealer._permissions = permissions
        report = {"roles": len(config.roles), "subscriptions": 0, "registrations": 0, "ended": 0}
        for session in list(self.sessions.values()):
            if not permissions.has_role(session.authrole):
                session.close_by_router(errors.CLOSE_KILLED,
                                        f"role {session.authrole!r} was removed from this realm")
                report["ended"] += 1
                continue
            report["subscriptions"] += len(self.broker.remove_forbidden(session))
            report["registrations"] += len(self.dealer.remove_forbidden(session))
        return report

    def add_procedure(self, uri: str, procedure: Builtin) -> None:
        """Provide a router procedure (e.g. wampchat.session.refresh) on this realm."""
        self.dealer.builtins[uri] = procedure

    # -- requests from welcomed sessions ----------------------------------------------

    def handles(self, msg: Any) -> bool:
        return type(msg) in self._handlers

    def dispatch(self, session: RouterSession, msg: Any) -> None:
        """Route one request of a welcomed session (the caller checked `handles`)."""
        self._handlers[type(msg)](session, msg)

    def _authorized(self, session: RouterSession, msg: Any, uri: str, action: str,
                    pattern: bool = False) -> Permission | None:
        reason = invalid_uri_reason(uri, pattern, self.max_uri_length)
        if reason is not None:
            session.reply_error(msg, errors.INVALID_URI, reason)
            return None
        permission = self.permissions.check(session.authrole, uri, action)  # type: ignore[arg-type]
        if permission is None:
            session.reply_error(msg, errors.NOT_AUTHORIZED,
                                f"session is not authorized to {action} {uri!r}")
        return permission

    def _subscribe(self, session: RouterSession, msg: message.Subscribe) -> None:
        pattern = (msg.match or "exact") != "exact"
        if self._authorized(session, msg, msg.topic, "subscribe", pattern) is not None:
            self.broker.subscribe(session, msg)

    def _publish(self, session: RouterSession, msg: message.Publish) -> None:
        permission = self._authorized(session, msg, msg.topic, "publish")
        if permission is None:
            return
        if permission.max_payload is not None and session.payload_size(msg) > permission.max_payload:
            if msg.acknowledge:
                session.reply_error(msg, errors.PAYLOAD_TOO_LARGE,
                                    f"payload over {permission.max_payload} bytes for {msg.topic}")
            session.count_dropped("payload_too_large")
            return
        self.broker.publish(session, msg, permission)

    def _register(self, session: RouterSession, msg: message.Register) -> None:
        pattern = (msg.match or "exact") != "exact"
        if self._authorized(session, msg, msg.procedure, "register", pattern) is not None:
            self.dealer.register(session, msg)

    def _call(self, session: RouterSession, msg: message.Call) -> None:
        permission = self._authorized(session, msg, msg.procedure, "call")
        if permission is not None:
            self.dealer.call(session, msg, permission)

    def _error(self, session: RouterSession, msg: message.Error) -> None:
        if msg.request_type == message.Invocation.MESSAGE_TYPE:
            self.dealer.invocation_error(session, msg)
        # ERROR for anything else is meaningless to a router: ignored, as for unknown invocations.
