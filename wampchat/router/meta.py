"""The WAMP meta API of a realm: wamp.session.*, wamp.subscription.*, wamp.registration.*.

Events are published by the router itself through the realm's broker; procedures
are router builtins on the realm's dealer, subject to the same permissions as any
other CALL (only `backend` holds them in the shipped config).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wampchat import errors
from wampchat.errors import RequestError

if TYPE_CHECKING:
    from wampchat.router.broker import Broker, Subscription
    from wampchat.router.dealer import Dealer, Registration
    from wampchat.router.realm import Realm
    from wampchat.router.session import RouterSession


class MetaEvents:
    """Publishes the meta events; cheap when nobody listens.

    As in Crossbar, subscriptions and registrations on ``wamp.*`` URIs (the meta API
    itself) cause no meta events.
    """

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def _emit(self, topic: str, *args: Any) -> None:
        # publish_internal looks the subscribers up once and does nothing without any
        self._broker.publish_internal(topic, list(args))

    def _emit_about(self, uri: str, topic: str, *args: Any) -> None:
        if not uri.startswith("wamp."):
            self._emit(topic, *args)

    def session_joined(self, details: dict[str, Any]) -> None:
        self._emit("wamp.session.on_join", details)

    def session_left(self, session_id: int, authid: str, authrole: str) -> None:
        self._emit("wamp.session.on_leave", session_id, authid, authrole)

    def subscription_created(self, session_id: int, subscription: Subscription) -> None:
        self._emit_about(subscription.uri, "wamp.subscription.on_create",
                         session_id, subscription.details())

    def subscribed(self, session_id: int, subscription: Subscription) -> None:
        self._emit_about(subscription.uri, "wamp.subscription.on_subscribe",
                         session_id, subscription.id)

    def unsubscribed(self, session_id: int, subscription: Subscription) -> None:
        self._emit_about(subscription.uri, "wamp.subscription.on_unsubscribe",
                         session_id, subscription.id)

    def subscription_deleted(self, session_id: int, subscription: Subscription) -> None:
        self._emit_about(subscription.uri, "wamp.subscription.on_delete",
                         session_id, subscription.id)

    def registration_created(self, session_id: int, registration: Registration) -> None:
        self._emit_about(registration.uri, "wamp.registration.on_create",
                         session_id, registration.details())

    def registered(self, session_id: int, registration: Registration) -> None:
        self._emit_about(registration.uri, "wamp.registration.on_register",
                         session_id, registration.id)

    def unregistered(self, session_id: int, registration: Registration) -> None:
        self._emit_about(registration.uri, "wamp.registration.on_unregister",
                         session_id, registration.id)

    def registration_deleted(self, session_id: int, registration: Registration) -> None:
        self._emit_about(registration.uri, "wamp.registration.on_delete",
                         session_id, registration.id)


def _int_arg(args: list, index: int, name: str) -> int:
    if len(args) <= index or type(args[index]) is not int:
        raise RequestError(errors.INVALID_ARGUMENT, f"{name} must be an integer")
    return args[index]


def _str_arg(args: list, index: int, name: str) -> str:
    if len(args) <= index or not isinstance(args[index], str):
        raise RequestError(errors.INVALID_ARGUMENT, f"{name} must be a string")
    return args[index]


def _roles_filter(args: list) -> set[str] | None:
    if not args or args[0] is None:
        return None
    if not isinstance(args[0], list) or not all(isinstance(r, str) for r in args[0]):
        raise RequestError(errors.INVALID_ARGUMENT, "filter_authroles must be a list of strings")
    return set(args[0])


def _match_option(kwargs: dict) -> str:
    match = kwargs.get("match", "exact")
    if match not in ("exact", "prefix", "wildcard"):
        raise RequestError(errors.INVALID_ARGUMENT, "match must be exact, prefix or wildcard")
    return match


def install(realm: Realm) -> None:
    """Register the meta procedures of realm on its dealer."""
    broker, dealer = realm.broker, realm.dealer
    procedures = {
        **_session_procedures(realm),
        **_subscription_procedures(broker),
        **_registration_procedures(dealer),
    }
    dealer.builtins.update(procedures)


def _session_procedures(realm: Realm) -> dict:
    def sessions(args: list) -> list[RouterSession]:
        roles = _roles_filter(args)
        return [s for s in realm.sessions.values() if roles is None or s.authrole in roles]

    def get(caller, args, kwargs):
        session = realm.sessions.get(_int_arg(args, 0, "session id"))
        if session is None:
            raise RequestError(errors.NO_SUCH_SESSION, "no session with that id on this realm")
        return session.meta_details()

    def kill_args(kwargs: dict) -> tuple[str, str | None]:
        reason = kwargs.get("reason") or errors.CLOSE_KILLED
        message_text = kwargs.get("message")
        if not isinstance(reason, str) or (message_text is not None and not isinstance(message_text, str)):
            raise RequestError(errors.INVALID_ARGUMENT, "reason and message must be strings")
        return reason, message_text

    def kill(caller, args, kwargs):
        session_id = _int_arg(args, 0, "session id")
        session = realm.sessions.get(session_id)
        if session is None:
            raise RequestError(errors.NO_SUCH_SESSION, "no session with that id on this realm")
        if session is caller:
            raise RequestError(errors.NO_SUCH_SESSION, "a session cannot kill itself")
        session.close_by_router(*kill_args(kwargs))
        return None

    def kill_where(caller, predicate, kwargs) -> int:
        reason, text = kill_args(kwargs)
        victims = [s for s in realm.sessions.values() if s is not caller and predicate(s)]
        for victim in victims:
            victim.close_by_router(reason, text)
        return len(victims)

    def kill_by_authid(caller, args, kwargs):
        authid = _str_arg(args, 0, "authid")
        return kill_where(caller, lambda s: s.authid == authid, kwargs)

    def kill_by_authrole(caller, args, kwargs):
        authrole = _str_arg(args, 0, "authrole")
        return kill_where(caller, lambda s: s.authrole == authrole, kwargs)

    return {
        "wamp.session.count": lambda caller, args, kwargs: len(sessions(args)),
        "wamp.session.list": lambda caller, args, kwargs: [s.id for s in sessions(args)],
        "wamp.session.get": get,
        "wamp.session.kill": kill,
        "wamp.session.kill_by_authid": kill_by_authid,
        "wamp.session.kill_by_authrole": kill_by_authrole,
    }


def _subscription_procedures(broker: Broker) -> dict:
    def existing(args: list) -> Subscription:
        subscription = broker.get(_int_arg(args, 0, "subscription id"))
        if subscription is None:
            raise RequestError(errors.NO_SUCH_SUBSCRIPTION, "no subscription with that id")
        return subscription

    def listing(caller, args, kwargs):
        found: dict[str, list[int]] = {"exact": [], "prefix": [], "wildcard": []}
        for subscription in broker.all():
            found[subscription.match].append(subscription.id)
        return found

    def lookup(caller, args, kwargs):
        options = args[1] if len(args) > 1 and isinstance(args[1], dict) else kwargs
        subscription = broker.lookup(_str_arg(args, 0, "topic"), _match_option(options))
        return subscription.id if subscription else None

    def match(caller, args, kwargs):
        found = broker.matching(_str_arg(args, 0, "topic"))
        return [s.id for s in found] or None

    return {
        "wamp.subscription.list": listing,
        "wamp.subscription.lookup": lookup,
        "wamp.subscription.match": match,
        "wamp.subscription.get": lambda caller, args, kwargs: existing(args).details(),
        "wamp.subscription.list_subscribers":
            lambda caller, args, kwargs: list(existing(args).subscribers),
        "wamp.subscription.count_subscribers":
            lambda caller, args, kwargs: len(existing(args).subscribers),
    }


def _registration_procedures(dealer: Dealer) -> dict:
    def existing(args: list) -> Registration:
        registration = dealer.get(_int_arg(args, 0, "registration id"))
        if registration is None:
            raise RequestError(errors.NO_SUCH_REGISTRATION, "no registration with that id")
        return registration

    def listing(caller, args, kwargs):
        found: dict[str, list[int]] = {"exact": [], "prefix": [], "wildcard": []}
        for registration in dealer.all():
            found[registration.match].append(registration.id)
        return found

    def lookup(caller, args, kwargs):
        options = args[1] if len(args) > 1 and isinstance(args[1], dict) else kwargs
        registration = dealer.lookup(_str_arg(args, 0, "procedure"), _match_option(options))
        return registration.id if registration else None

    def match(caller, args, kwargs):
        registration = dealer.best(_str_arg(args, 0, "procedure"))
        return registration.id if registration else None

    return {
        "wamp.registration.list": listing,
        "wamp.registration.lookup": lookup,
        "wamp.registration.match": match,
        "wamp.registration.get": lambda caller, args, kwargs: existing(args).details(),
        "wamp.registration.list_callees":
            lambda caller, args, kwargs: [s.id for s in existing(args).callees],
        "wamp.registration.count_callees":
            lambda caller, args, kwargs: len(existing(args).callees),
    }
