"""Role-based authorization: which role may do what on which URI.

Each role of a realm has a ``UriMap`` of ``Permission`` rows; the most specific row
matching a URI (``UriMap.best``: exact, longest prefix, wildcard) decides. A URI no
row matches is denied. Results are cached per (role, uri), bounded, because the
broker asks on every pattern-based delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

from wampchat.config_types import RoleConfig
from wampchat.router.matching import UriMap

Action = Literal["call", "register", "publish", "subscribe"]


@dataclass(frozen=True)
class Permission:
    """What one permission row allows; DENY is the row of a URI nothing matches."""

    call: bool = False
    register: bool = False
    publish: bool = False
    subscribe: bool = False
    disclose_caller: bool = False
    disclose_publisher: bool = False
    max_payload: int | None = None

    def allows(self, action: Action) -> bool:
        return getattr(self, action)


DENY = Permission()
_CACHE_LIMIT = 65536


class Permissions:
    """The authorization table of one realm."""

    def __init__(self, roles: Iterable[RoleConfig]) -> None:
        self._by_role: dict[str, UriMap[Permission]] = {}   # authrole -> its rows
        self._cache: dict[tuple[str, str], Permission] = {}  # (authrole, uri) -> decision
        for role in roles:
            rows: UriMap[Permission] = UriMap()
            for row in role.permissions:
                rows.add(row.uri, row.match, Permission(
                    call=row.call, register=row.register, publish=row.publish,
                    subscribe=row.subscribe, disclose_caller=row.disclose_caller,
                    disclose_publisher=row.disclose_publisher, max_payload=row.max_payload))
            self._by_role[role.name] = rows

    def has_role(self, authrole: str) -> bool:
        return authrole in self._by_role

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self._by_role)

    def lookup(self, authrole: str, uri: str) -> Permission:
        """The permission row deciding for authrole on uri (DENY when none)."""
        key = (authrole, uri)
        found = self._cache.get(key)
        if found is None:
            rows = self._by_role.get(authrole)
            found = (rows.best(uri) if rows is not None else None) or DENY
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found

    def check(self, authrole: str, uri: str, action: Action) -> Permission | None:
        """The deciding row if it allows action, else None."""
        permission = self.lookup(authrole, uri)
        return permission if permission.allows(action) else None
