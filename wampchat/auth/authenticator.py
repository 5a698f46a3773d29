"""The authenticator interface between the router session and the ways to log in.

An authenticator serves one authmethod on one transport. The session calls
``hello()`` when a HELLO lists that method (or, for authenticators that take a
transport token, when the upgrade request carried one), and ``authenticate()``
when the client answers a CHALLENGE. Both return values or raise an
``AuthFailure`` (wampchat.errors) that becomes one ABORT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class TransportInfo:
    """What the transport knows about a connection before HELLO."""

    kind: str                         # "websocket", "rawsocket" or "memory"
    peer: str                         # e.g. "tcp4:127.0.0.1:51234"
    bearer_token: str | None = None   # Authorization: Bearer, or ?token= where allowed
    http_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hello:
    """A HELLO as the authenticators see it."""

    realm: str
    authmethods: tuple[str, ...]
    authid: str | None
    authrole: str | None
    authextra: dict[str, Any]
    roles: dict[str, Any]             # client roles/features from HELLO.Details.roles
    session_id: int                   # the id the session gets once welcomed
    transport: TransportInfo


@dataclass(frozen=True)
class Challenge:
    """Ask the client to AUTHENTICATE: CHALLENGE(method, extra)."""

    method: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Accept:
    """A successful login: the identity the session is WELCOMEd with.

    ``expires_at`` (epoch seconds, leeway included) is when the router ends the
    session with ``wampchat.close.token_expired``; ``subject`` and ``sid`` tie the
    session to the identity provider's user and login session, for refresh and
    back-channel logout.
    """

    authid: str
    authrole: str
    authmethod: str
    authprovider: str
    authextra: dict[str, Any] = field(default_factory=dict)
    realm: str | None = None          # set when the authenticator moves the session to another realm
    expires_at: float | None = None
    credential_expires_at: float | None = None   # the token's own exp, reported by refresh
    subject: str | None = None
    sid: str | None = None


@runtime_checkable
class Authenticator(Protocol):
    """One authmethod on one transport."""

    authmethod: str                   # the HELLO authmethod this serves, e.g. "ticket"
    takes_transport_token: bool       # True: hello() uses TransportInfo.bearer_token

    async def hello(self, hello: Hello) -> Accept | Challenge:
        """Accept at once or challenge. Raises AuthFailure."""

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        """Check the AUTHENTICATE answer to our CHALLENGE. Raises AuthFailure."""


@runtime_checkable
class RefreshingAuthenticator(Authenticator, Protocol):
    """An authenticator whose credentials expire and can be renewed in-session."""

    async def refresh(self, current: Accept, token: str) -> Accept:
        """Validate a fresh token for the same subject; the new identity. Raises AuthFailure."""
