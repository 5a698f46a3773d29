"""Static ticket authentication: fixed authid -> (secret ticket, role) pairs for backend components.

The client says HELLO with its authid and ``authmethods: ["ticket"]``, the router
answers CHALLENGE ``ticket``, the client AUTHENTICATEs with the ticket as signature.
"""

from __future__ import annotations

import hmac
from typing import Any

from wampchat.auth.authenticator import Accept, Challenge, Hello
from wampchat.auth.cra import UnknownPrincipal
from wampchat.config_types import StaticPrincipal
from wampchat.errors import BadCredentials


class StaticTicketAuthenticator:
    """Ticket secrets from the config.

    ``hello``: CHALLENGE ``ticket`` for a known authid; no or unknown authid raises
    ``UnknownPrincipal`` (``wamp.error.authentication_failed``).
    ``authenticate``: the right ticket gives Accept(authid, role, "ticket", "static");
    a wrong one raises ``BadCredentials`` (``wamp.error.authentication_failed``).
    """

    authmethod = "ticket"
    takes_transport_token = False

    def __init__(self, principals: tuple[StaticPrincipal, ...]) -> None:
        self._principals: dict[str, StaticPrincipal] = {p.authid: p for p in principals}  # authid -> principal

    async def hello(self, hello: Hello) -> Challenge:
        self._principal(hello)
        return Challenge("ticket")

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        principal = self._principal(hello)
        given = signature.encode("utf8") if isinstance(signature, str) else b""
        if not hmac.compare_digest(principal.secret.encode("utf8"), given):
            raise BadCredentials(f"wrong ticket for authid {principal.authid!r}")
        return Accept(authid=principal.authid, authrole=principal.role, authmethod="ticket",
                      authprovider="static")

    def _principal(self, hello: Hello) -> StaticPrincipal:
        if not hello.authid:
            raise UnknownPrincipal("ticket authentication needs an authid in HELLO")
        principal = self._principals.get(hello.authid)
        if principal is None:
            raise UnknownPrincipal(f"no ticket principal with authid {hello.authid!r}")
        return principal
