"""WAMP ids: session ids unguessable, other global-scope ids random, request ids sequential."""

import random

MAX_ID = 2 ** 53

_secure = random.SystemRandom()
_fast = random.Random(_secure.getrandbits(64))


def secure_id() -> int:
    """An id nobody can predict (session ids): from the OS's randomness."""
    return _secure.randint(1, MAX_ID)


def global_id() -> int:
    """A global-scope id (publication, subscription, registration): random, cheap."""
    return _fast.randint(1, MAX_ID)


class RequestIds:
    """Session-scope request ids: 1, 2, ... wrapping at 2**53."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = self._last + 1 if self._last < MAX_ID else 1
        return self._last
