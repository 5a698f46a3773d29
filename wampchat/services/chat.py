"""ChatService: welcome / joined / left on chat.main, and chat.history.

Presence comes from the meta API: wamp.subscription.on_subscribe / on_unsubscribe and
wamp.session.on_leave, with wamp.subscription.lookup and wamp.session.get to learn
which session subscribed to chat.main and its authid. Join and leave are per user
(authid): a user's first session announces "joined"; the last one gone, and not back
within leave_grace seconds, announces "left". Subscribers already present when the
service joins (wamp.subscription.list_subscribers) are counted without announcements.

History: user and admin publications on the chat topics are stored in PostgreSQL
(table chat_messages) when config.extra["dsn"] names a database (an in-process
component gets the node's), written in batches off the hot path by a HistoryWriter
on a small pool of the service's own; the sender's user id comes from the publisher
session's authextra (wamp.session.get, cached per session). The last `history_size`
publications per topic are also kept in memory: `chat.history` answers from there
when there is no database or it is unavailable.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallDetails, RegisterOptions, SubscribeOptions
from psycopg2 import Error as DriverError
from twisted.internet.defer import Deferred

from wampchat.errors import Unavailable
from wampchat.logs import Logger
from wampchat.services.base import CHAT_MAIN, ServiceSession
from wampchat.services.history import DEFAULT_MAX_BUFFERED, HistoryWriter, read_page

log = Logger()

CHAT_ADMIN = "chat.admin"
READABLE = {"user": (CHAT_MAIN,), "admin": (CHAT_MAIN, CHAT_ADMIN),
            "backend": (CHAT_MAIN, CHAT_ADMIN)}
DEFAULT_LEAVE_GRACE = 3.0
DEFAULT_HISTORY_SIZE = 500
HISTORY_POOL_SIZE = 2
MAX_HISTORY_PAGE = 500


class ChatService(ServiceSession):
    """Presence announcements and history for the chat topics."""

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.leave_grace = float(self.settings.get("leave_grace", DEFAULT_LEAVE_GRACE))
        size = int(self.settings.get("history_size", DEFAULT_HISTORY_SIZE))
        self.history: dict[str, deque] = {topic: deque(maxlen=size) for topic in READABLE["admin"]}
        self._next_id = 1
        self._main_subscription: int | None = None
        self._authid_of: dict[int, str] = {}            # chat.main subscriber session -> authid
        self._sessions_of: dict[str, set[int]] = {}     # authid -> its chat.main sessions
        self._leaving: dict[str, Any] = {}              # authid -> IDelayedCall announcing "left"
        self._pending: set[int] = set()                 # on_subscribe seen, session.get in flight
        self._adopting: set[int] = set()                # present at join, session.get in flight
        self._user_ids: dict[int, int | None] = {}     # publisher session -> authextra user_id
        self._lookups: dict[int, list[tuple]] = {}      # publisher session -> rows awaiting it
        self._lookups_running: dict[int, Deferred] = {}
        self._pool = None
        self._writer: HistoryWriter | None = None

    def _open_database(self) -> None:
        dsn = self.settings.get("dsn")
        if not dsn or self._pool is not None:
            return
        from twisted.internet import reactor

        from wampchat.users.postgres import make_pool

        self._pool = make_pool(reactor, dsn, size=int(self.settings.get("history_pool_size",
                                                                        HISTORY_POOL_SIZE)))
        self._pool.start()
        self._writer = HistoryWriter(
            self._pool, self.clock,
            interval=float(self.settings.get("history_flush_interval", 0.5)),
            batch_size=int(self.settings.get("history_batch_size", 100)),
            max_buffered=int(self.settings.get("history_max_buffered", DEFAULT_MAX_BUFFERED)))

    def _close_database(self) -> None:
        pool, writer, self._pool, self._writer = self._pool, self._writer, None, None
        if pool is None:
            return
        # The last buffered messages are written before the pool closes.
        Deferred.fromCoroutine(writer.close()).addBoth(lambda _: pool.close())

    async def onJoin(self, details) -> None:
        self._open_database()
        await self.subscribe(self._on_subscribe, "wamp.subscription.on_subscribe")
        await self.subscribe(self._on_unsubscribe, "wamp.subscription.on_unsubscribe")
        await self.subscribe(self._on_session_leave, "wamp.session.on_leave")
        for topic in READABLE["admin"]:
            await self.subscribe(self._recorder(topic), topic,
                                 options=SubscribeOptions(details_arg="details"))
        self._main_subscription = await self.call("wamp.subscription.lookup", CHAT_MAIN)
        await self._adopt_present()
        await self.register(self.chat_history, "chat.history",
                            options=RegisterOptions(details_arg="details"))
        log.info("chat service ready (leave_grace {grace}s)", grace=self.leave_grace)

    def onLeave(self, details) -> None:
        for call in self._leaving.values():
            if call.active():
                call.cancel()
        self._leaving.clear()
        self._close_database()
        super().onLeave(details)

    # -- presence -------------------------------------------------------------------------

    async def _on_subscribe(self, session_id: int, subscription_id: int) -> None:
        if subscription_id != self._main_subscription or session_id == self._session_id:
            return
        self._pending.add(session_id)
        try:
            info = await self.call("wamp.session.get", session_id)
        except ApplicationError:
            self._pending.discard(session_id)
            return          # already gone
        if session_id not in self._pending:
            return          # left while we asked
        self._pending.discard(session_id)
        if info.get("authrole") == "backend" or session_id in self._authid_of:
            return
        self._arrived(session_id, info["authid"])

    async def _adopt_present(self) -> None:
        """Count the users already subscribed when this service (re)joins, announcing nothing.

        After a service or router restart, users may resubscribe before the service is
        back; without this their leaving would never be announced and their next tab
        would be announced as a join.
        """
        try:
            present = await self.call("wamp.subscription.list_subscribers", self._main_subscription)
        except ApplicationError:
            return          # no subscription (cannot happen while we hold one): nobody present
        self._adopting = {s for s in present if s != self._session_id}
        for session_id in sorted(self._adopting):
            if session_id in self._authid_of:
                continue
            try:
                info = await self.call("wamp.session.get", session_id)
            except ApplicationError:
                continue    # left meanwhile
            if (session_id not in self._adopting or info.get("authrole") == "backend"
                    or session_id in self._authid_of):
                continue    # left while we asked, a service, or welcomed meanwhile
            self._authid_of[session_id] = info["authid"]
            self._sessions_of.setdefault(info["authid"], set()).add(session_id)
        self._adopting.clear()

    def _on_unsubscribe(self, session_id: int, subscription_id: int) -> None:
        if subscription_id == self._main_subscription:
            self._gone(session_id)

    def _on_session_leave(self, session_id: int, *rest: Any) -> None:
        self._user_ids.pop(session_id, None)
        self._gone(session_id)

    def _arrived(self, session_id: int, authid: str) -> None:
        self._authid_of[session_id] = authid
        sessions = self._sessions_of.setdefault(authid, set())
        first = not sessions and authid not in self._leaving
        returning = self._leaving.pop(authid, None)
        if returning is not None and returning.active():
            returning.cancel()
        sessions.add(session_id)
        self.publish_system(CHAT_MAIN, f"Welcome {authid}", eligible=[session_id])
        if first:
            self.publish_system(CHAT_MAIN, f"{authid} has joined the chat.",
                                exclude=sorted(sessions))

    def _gone(self, session_id: int) -> None:
        self._pending.discard(session_id)
        self._adopting.discard(session_id)
        authid = self._authid_of.pop(session_id, None)
        if authid is None:
            return
        sessions = self._sessions_of.get(authid, set())
        sessions.discard(session_id)
        if not sessions and authid not in self._leaving:
            self._leaving[authid] = self.clock.callLater(self.leave_grace, self._left, authid)

    def _left(self, authid: str) -> None:
        self._leaving.pop(authid, None)
        if self._sessions_of.get(authid):
            return
        self._sessions_of.pop(authid, None)
        if self.is_attached():
            self.publish_system(CHAT_MAIN, f"{authid} has left the chat.")

    # -- history --------------------------------------------------------------------------

    def _recorder(self, topic: str):
        def record(*args: Any, details=None, **kwargs: Any) -> None:
            if details is None or details.publisher_authrole == "backend":
                return
            message = kwargs.get("message")
            if not isinstance(message, str):
                return
            self.history[topic].append({
                "id": self._next_id, "topic": topic, "from": details.publisher_authid,
                "user_id": self._user_ids.get(details.publisher), "message": message,
                "time": self.clock.seconds()})
            self._next_id += 1
            if self._writer is not None:
                self._store(details.publisher, (topic, details.publisher_authid, message))
        return record

    def _store(self, session_id: int | None, row: tuple) -> None:
        """Queue (topic, authid, message) with the sender's user id, in publication order."""
        topic, authid, message = row
        if session_id is None or session_id in self._user_ids:
            self._writer.add(topic, authid, self._user_ids.get(session_id), message)
        elif session_id in self._lookups:
            self._lookups[session_id].append(row)
        else:
            self._lookups[session_id] = [row]
            lookup = Deferred.fromCoroutine(self._look_up_user(session_id))
            if session_id in self._lookups:
                self._lookups_running[session_id] = lookup

    async def _look_up_user(self, session_id: int) -> None:
        user_id = None
        try:
            info = await self.call("wamp.session.get", session_id)
            user_id = (info.get("authextra") or {}).get("user_id")
            if not isinstance(user_id, int) or isinstance(user_id, bool):
                user_id = None
            self._user_ids[session_id] = user_id
        except Exception:
            pass            # gone already, or we left: stored without a user id
        rows = self._lookups.pop(session_id, [])
        self._lookups_running.pop(session_id, None)
        if self._writer is not None:
            for topic, authid, message in rows:
                self._writer.add(topic, authid, user_id, message)

    async def chat_history(self, topic: str, limit: int = 50, before: int | None = None,
                           details: CallDetails | None = None) -> list[dict[str, Any]]:
        """The latest `limit` messages of topic (older than message id `before`), oldest first."""
        role = getattr(details, "caller_authrole", None)
        if topic not in READABLE.get(role, ()):
            raise ApplicationError(ApplicationError.NOT_AUTHORIZED,
                                   f"role {role} may not read {topic}")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ApplicationError(ApplicationError.INVALID_ARGUMENT, "limit must be a positive integer")
        if before is not None and (not isinstance(before, int) or isinstance(before, bool)):
            raise ApplicationError(ApplicationError.INVALID_ARGUMENT, "before must be a message id")
        limit = min(limit, MAX_HISTORY_PAGE)
        if self._pool is not None:
            # Read your writes: what was published before this call is in the page.
            for lookup in list(self._lookups_running.values()):
                await lookup
            if self._writer is not None and self._writer.pending(topic):
                await self._writer.flush()
            try:
                return await read_page(self._pool, topic, limit, before)
            except (Unavailable, DriverError) as error:
                log.warn("chat history from memory: {error}", error=error)
        messages = [m for m in self.history[topic] if before is None or m["id"] < before]
        return [dict(m) for m in messages[-limit:]]
