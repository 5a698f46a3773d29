"""Publish & subscribe: subscriptions by (topic, match), PUBLISH -> EVENT fan-out.

One subscription id per (topic, match), shared by all its subscribers (as WAMP
requires), so one ``message.Event`` object serves every subscriber of a
subscription and Autobahn's per-message cache serializes it once per serializer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from autobahn.wamp import message
from twisted.internet.interfaces import IReactorTime

from wampchat import errors
from wampchat.router.ids import global_id
from wampchat.router.matching import UriMap
from wampchat.router.permissions import Permission, Permissions
from wampchat.router.publish_filter import PublishFilter

if TYPE_CHECKING:
    from wampchat.router.meta import MetaEvents
    from wampchat.router.session import RouterSession


class Subscription:
    """One (topic, match) and the sessions subscribed to it."""

    __slots__ = ("id", "uri", "match", "created", "subscribers")

    def __init__(self, uri: str, match: str, created: str) -> None:
        self.id = global_id()
        self.uri = uri
        self.match = match
        self.created = created
        self.subscribers: dict[int, RouterSession] = {}   # session id -> session

    def details(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "uri": self.uri, "match": self.match}


class Broker:
    """The broker of one realm."""

    def __init__(self, permissions: Permissions, clock: IReactorTime,
                 now_iso: Callable[[], str]) -> None:
        self._permissions = permissions
        self._clock = clock
        self._now_iso = now_iso
        self._subscriptions: UriMap[Subscription] = UriMap()
        self._by_id: dict[int, Subscription] = {}                 # subscription id -> subscription
        self._by_session: dict[int, set[int]] = {}                # session id -> subscription ids
        self.max_per_session = 1000                               # subscriptions one session may hold
        self.meta: MetaEvents | None = None

    # -- requests ---------------------------------------------------------------------

    def subscribe(self, session: RouterSession, msg: message.Subscribe) -> None:
        """SUBSCRIBE (already authorized): join or create the subscription, reply SUBSCRIBED."""
        match = msg.match or "exact"
        subscription = self._subscriptions.get(msg.topic, match)
        held = self._by_session.get(session.id)
        if held is not None and len(held) >= self.max_per_session and (
                subscription is None or session.id not in subscription.subscribers):
            session.reply_error(msg, errors.LIMIT_EXCEEDED,
                                f"at most {self.max_per_session} subscriptions per session")
            return
        created = subscription is None
        if created:
            subscription = Subscription(msg.topic, match, self._now_iso())
            self._subscriptions.add(msg.topic, match, subscription)
            self._by_id[subscription.id] = subscription
        is_new_subscriber = session.id not in subscription.subscribers
        subscription.subscribers[session.id] = session
        self._by_session.setdefault(session.id, set()).add(subscription.id)
        session.send(message.Subscribed(msg.request, subscription.id))
        if self.meta is not None:
            if created:
                self.meta.subscription_created(session.id, subscription)
            if is_new_subscriber:
                self.meta.subscribed(session.id, subscription)

    def unsubscribe(self, session: RouterSession, msg: message.Unsubscribe) -> None:
        """UNSUBSCRIBE: leave the subscription (deleted when empty), reply UNSUBSCRIBED."""
        subscription = self._by_id.get(msg.subscription)
        if subscription is None or session.id not in subscription.subscribers:
            session.reply_error(msg, errors.NO_SUCH_SUBSCRIPTION,
                                f"no subscription {msg.subscription} for this session")
            return
        self._remove_subscriber(session.id, subscription)
        session.send(message.Unsubscribed(msg.request))

    def publish(self, session: RouterSession, msg: message.Publish, permission: Permission) -> None:
        """PUBLISH (already authorized): EVENT to every eligible subscriber."""
        publication = global_id()
        subscriptions = self._subscriptions.matches(msg.topic)
        if subscriptions:
            disclose = permission.disclose_publisher
            publish_filter = PublishFilter.from_publish(msg, session.id)
            event_details: dict[str, Any] = {}
            if disclose:
                event_details = {"publisher": session.id, "publisher_authid": session.authid,
                                 "publisher_authrole": session.authrole}
            self._fan_out(subscriptions, msg.topic, publication, msg.args, msg.kwargs,
                          event_details, publish_filter)
        if msg.acknowledge:
            session.send(message.Published(msg.request, publication))

    def publish_internal(self, topic: str, args: list | None = None,
                         kwargs: dict | None = None) -> None:
        """An event from the router itself (meta events): no publisher, no filter."""
        subscriptions = self._subscriptions.matches(topic)
        if subscriptions:
            self._fan_out(subscriptions, topic, global_id(), args, kwargs, {}, None)

    def _fan_out(self, subscriptions: list[Subscription], topic: str, publication: int,
                 args, kwargs, details: dict[str, Any],
                 publish_filter: PublishFilter | None) -> None:
        may_see: dict[str, bool] = {}     # authrole -> may subscribe to this very topic
        check = self._permissions.check
        for subscription in subscriptions:
            pattern = subscription.match != "exact"
            event = message.Event(subscription.id, publication, args=args, kwargs=kwargs,
                                  topic=topic if pattern else None, **details)
            for subscriber in subscription.subscribers.values():
                if publish_filter is not None and not publish_filter.admits(subscriber):
                    continue
                if pattern:
                    # A pattern must never leak a topic the role may not subscribe to.
                    role = subscriber.authrole
                    allowed = may_see.get(role)
                    if allowed is None:
                        allowed = may_see[role] = check(role, topic, "subscribe") is not None
                    if not allowed:
                        continue
                subscriber.send(event)

    # -- session lifecycle --------------------------------------------------------------

    def remove_session(self, session_id: int) -> None:
        """The session left: drop it from every subscription (meta events as for UNSUBSCRIBE)."""
        held = [self._by_id[i] for i in self._by_session.pop(session_id, ()) if i in self._by_id]
        # Out of all of them before any meta event: the leaving session has already sent or
        # been sent GOODBYE, so not one more EVENT (e.g. its own on_unsubscribe) may reach it.
        for subscription in held:
            subscription.subscribers.pop(session_id, None)
        for subscription in held:
            self._remove_subscriber(session_id, subscription)

    def remove_forbidden(self, session: RouterSession) -> list[int]:
        """Drop subscriptions the session's (new) role may not hold; their ids."""
        removed = []
        for subscription_id in list(self._by_session.get(session.id, ())):
            subscription = self._by_id[subscription_id]
            if self._permissions.check(session.authrole, subscription.uri, "subscribe") is None:
                self._remove_subscriber(session.id, subscription)
                removed.append(subscription_id)
        return removed

    def _remove_subscriber(self, session_id: int, subscription: Subscription) -> None:
        subscription.subscribers.pop(session_id, None)
        ids = self._by_session.get(session_id)
        if ids is not None:
            ids.discard(subscription.id)
            if not ids:
                del self._by_session[session_id]
        deleted = not subscription.subscribers
        if deleted:
            self._subscriptions.remove(subscription.uri, subscription.match)
            del self._by_id[subscription.id]
        if self.meta is not None:
            self.meta.unsubscribed(session_id, subscription)
            if deleted:
                self.meta.subscription_deleted(session_id, subscription)

    # -- introspection (meta API) ---------------------------------------------------------

    def get(self, subscription_id: int) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def lookup(self, topic: str, match: str) -> Subscription | None:
        return self._subscriptions.get(topic, match)

    def matching(self, topic: str) -> list[Subscription]:
        return self._subscriptions.matches(topic)

    def all(self) -> Iterable[Subscription]:
        return self._by_id.values()

    def of_session(self, session_id: int) -> list[Subscription]:
        return [self._by_id[i] for i in self._by_session.get(session_id, ())]
