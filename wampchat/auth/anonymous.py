"""Anonymous authentication: every HELLO is welcomed with one configured role, no challenge."""

from __future__ import annotations

import secrets
from typing import Any

from wampchat.auth.authenticator import Accept, Hello
from wampchat.errors import NoAuthMethod

# Crockford-style base32 without look-alikes, as Crossbar's serial-number authids.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def random_authid(groups: int = 6) -> str:
    """A random authid like ``X7QK-3M9P-...``: unguessable, readable in logs."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(groups))


class AnonymousAuthenticator:
    """Accept(authid=<random>, authrole=role, authmethod "anonymous", authprovider "static").

    The HELLO's authid is ignored: an anonymous client cannot pick someone's name.
    """

    authmethod = "anonymous"
    takes_transport_token = False

    def __init__(self, role: str) -> None:
        self._role = role

    async def hello(self, hello: Hello) -> Accept:
        return Accept(authid=random_authid(), authrole=self._role, authmethod="anonymous",
                      authprovider="static")

    async def authenticate(self, hello: Hello, signature: str, extra: dict[str, Any]) -> Accept:
        # We never challenge, so an AUTHENTICATE cannot be an answer to us.
        raise NoAuthMethod("anonymous authentication has no challenge to answer")
