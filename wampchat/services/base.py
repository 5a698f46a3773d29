"""What both services share: the clock, system messages, sessions present at start."""

from __future__ import annotations

from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.types import PublishOptions

SYSTEM = "System"
CHAT_MAIN = "chat.main"


def system(text: str) -> dict[str, str]:
    """kwargs of a system message."""
    return {"from": SYSTEM, "message": text}


class ServiceSession(ApplicationSession):
    """An ApplicationSession with a clock: config.extra["clock"] (tests) or the reactor."""

    def __init__(self, config=None) -> None:
        super().__init__(config)
        extra = dict(getattr(config, "extra", None) or {})
        clock = extra.pop("clock", None)
        if clock is None:
            from twisted.internet import reactor as clock   # the running reactor of this process
        self.clock = clock
        self.settings: dict[str, Any] = extra

    def publish_system(self, topic: str, text: str, **options: Any) -> None:
        """Publish a system message; options are PublishOptions (eligible, exclude)."""
        self.publish(topic, options=PublishOptions(**options), **system(text))
