"""In-process components: Autobahn ApplicationSessions attached to a realm over memory.

A component says HELLO like any client; its transport's only authenticator is
`ComponentAuthenticator`, which admits it with the role from the configuration.
No socket, no special handshake: the router sees an ordinary session.
"""

from __future__ import annotations

from typing import Any

from autobahn.wamp.types import ComponentConfig
from twisted.internet.interfaces import IReactorTime
from twisted.python.reflect import namedAny

from wampchat.auth.authenticator import Accept, Hello
from wampchat.config_types import ComponentConfig as ComponentSettings
from wampchat.router.realm import Realm
from wampchat.router.session import RouterContext, SessionObserver
from wampchat.transport.memory import MEMORY_INFO, connect_pair


class ComponentAuthenticator:
    """Admits the in-process component it was made for, with its configured role."""

    authmethod = "anonymous"
    takes_transport_token = False

    def __init__(self, authid: str, authrole: str) -> None:
        self._authid = authid
        self._authrole = authrole

    async def hello(self, hello: Hello) -> Accept:
        return Accept(authid=self._authid, authrole=self._authrole, authmethod="anonymous",
                      authprovider="component")

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        return await self.hello(hello)


def load_component_class(classname: str) -> type:
    """The ApplicationSession subclass named by a dotted path (ValueError if not one)."""
    try:
        cls = namedAny(classname)
    except (AttributeError, ImportError, ValueError) as exc:
        raise ValueError(f"cannot import component class {classname!r}: {exc}") from None
    if not isinstance(cls, type):
        raise ValueError(f"{classname!r} is not a class")
    return cls


def attach_component(settings: ComponentSettings, realms: dict[str, Realm], clock: IReactorTime,
                     observer: SessionObserver | None = None) -> Any:
    """Create the component session and connect it; it joins on a later reactor turn."""
    cls = load_component_class(settings.classname)
    session = cls(ComponentConfig(realm=settings.realm, extra=dict(settings.extra)))
    authid = settings.classname.rsplit(".", 1)[-1]
    context = RouterContext(realms, {"anonymous": ComponentAuthenticator(authid, settings.role)},
                            clock, observer=observer)
    connect_pair(clock, context.session(MEMORY_INFO), session)
    return session
