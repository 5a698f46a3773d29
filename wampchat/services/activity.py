"""ActivityService: rpc.activity.set_status and rpc.activity.list.

Presence comes from wamp.session.on_join / on_leave (non-backend sessions), seeded
from wamp.session.list at start. A status belongs to a user (authid), not a session;
the caller is known from caller disclosure, never from an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallDetails, RegisterOptions

from wampchat.logs import Logger
from wampchat.services.base import CHAT_MAIN, ServiceSession

log = Logger()

STATUSES = ("online", "away", "busy")
ON_STATUS = "activity.on_status"
INVALID_STATUS = "wampchat.error.invalid_status"


@dataclass
class Presence:
    status: str = "online"
    sessions: set[int] = field(default_factory=set)


class ActivityService(ServiceSession):
    """Per-user status, broadcast on chat.main and activity.on_status."""

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.users: dict[str, Presence] = {}
        self._authid_of: dict[int, str] = {}

    async def onJoin(self, details) -> None:
        await self.subscribe(self._on_join, "wamp.session.on_join")
        await self.subscribe(self._on_leave, "wamp.session.on_leave")
        await self.register(self.set_status, "rpc.activity.set_status",
                            options=RegisterOptions(details_arg="details"))
        await self.register(self.list, "rpc.activity.list")
        for session_id in await self.call("wamp.session.list"):
            try:
                self._on_join(await self.call("wamp.session.get", session_id))
            except ApplicationError:
                pass        # left meanwhile
        log.info("activity service ready")

    def _on_join(self, info: dict[str, Any]) -> None:
        if info.get("authrole") == "backend" or info.get("session") in self._authid_of:
            return
        self._add(info["session"], info["authid"], (info.get("authextra") or {}).get("activity_status"))

    def _add(self, session_id: int, authid: str, status: str | None = None) -> Presence:
        self._authid_of[session_id] = authid
        presence = self.users.get(authid)
        if presence is None:
            presence = self.users[authid] = Presence(status if status in STATUSES else "online")
        presence.sessions.add(session_id)
        return presence

    def _on_leave(self, session_id: int, *rest: Any) -> None:
        authid = self._authid_of.pop(session_id, None)
        if authid is None:
            return
        presence = self.users.get(authid)
        if presence is None:
            return
        presence.sessions.discard(session_id)
        if not presence.sessions:
            del self.users[authid]
            self.publish(ON_STATUS, authid=authid, session=session_id, status="offline")

    def set_status(self, status: Any = None, details: CallDetails | None = None) -> dict[str, str]:
        if status not in STATUSES:
            raise ApplicationError(INVALID_STATUS, "status must be online, away or busy")
        session_id = getattr(details, "caller", None)
        authid = getattr(details, "caller_authid", None)
        if session_id is None or authid is None:
            raise ApplicationError(ApplicationError.NOT_AUTHORIZED, "caller is not disclosed")
        presence = self.users.get(authid)
        if presence is None or session_id not in presence.sessions:
            presence = self._add(session_id, authid)     # its on_join is still on the way
        presence.status = status
        self.publish_system(CHAT_MAIN, f"{authid} is now {status}")
        self.publish(ON_STATUS, authid=authid, session=session_id, status=status)
        return {"status": "ok", "new_status": status}

    def list(self) -> list[dict[str, Any]]:
        return [{"authid": authid, "status": p.status, "sessions": len(p.sessions)}
                for authid, p in sorted(self.users.items())]
