"""Which subscribers a PUBLISH may reach: exclude_me, exclude*, eligible*, as one value.

Exclusions win over eligibility; each eligible list given narrows the audience
(a subscriber must satisfy every eligible list present).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from autobahn.wamp import message

if TYPE_CHECKING:
    from wampchat.router.session import RouterSession


@dataclass(frozen=True, slots=True)
class PublishFilter:
    exclude: frozenset[int]                 # session ids (the publisher's, unless exclude_me=False)
    exclude_authid: frozenset[str]
    exclude_authrole: frozenset[str]
    eligible: frozenset[int] | None
    eligible_authid: frozenset[str] | None
    eligible_authrole: frozenset[str] | None
    narrows: bool = True                    # any list besides `exclude` (most publishes: none)

    @classmethod
    def from_publish(cls, msg: message.Publish, publisher_id: int) -> PublishFilter:
        exclude = set(msg.exclude or ())
        if msg.exclude_me is not False:
            exclude.add(publisher_id)
        return cls(
            exclude=frozenset(exclude),
            exclude_authid=frozenset(msg.exclude_authid or ()),
            exclude_authrole=frozenset(msg.exclude_authrole or ()),
            eligible=frozenset(msg.eligible) if msg.eligible is not None else None,
            eligible_authid=frozenset(msg.eligible_authid) if msg.eligible_authid is not None else None,
            eligible_authrole=frozenset(msg.eligible_authrole) if msg.eligible_authrole is not None else None,
            narrows=bool(msg.exclude_authid or msg.exclude_authrole) or msg.eligible is not None
            or msg.eligible_authid is not None or msg.eligible_authrole is not None,
        )

    def admits(self, session: RouterSession) -> bool:
        if session.id in self.exclude:
            return False
        if not self.narrows:                # checked once per subscriber: keep it short
            return True
        if self.exclude_authid and session.authid in self.exclude_authid:
            return False
        if self.exclude_authrole and session.authrole in self.exclude_authrole:
            return False
        if self.eligible is not None and session.id not in self.eligible:
            return False
        if self.eligible_authid is not None and session.authid not in self.eligible_authid:
            return False
        if self.eligible_authrole is not None and session.authrole not in self.eligible_authrole:
            return False
        return True
