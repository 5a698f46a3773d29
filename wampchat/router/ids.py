"""WAMP ids: session ids unguessable, other global-scope ids random, request ids sequential."""

import random

MAX_ID = 2 ** 53

_secure = random.SystemRandom()
_fast = random.Random(_secure.getrandbits(64))


# Uniform over [1, 2**53] as WAMP asks: 53 random bits plus one (randint's general
# range arithmetic cost several times as much).
def secure_id() -> int:
    """An id nobody can predict (session ids): from the OS's randomness."""
    return _secure.getrandbits(53) + 1


def global_id() -> int:
    """A global-scope id (publication, subscription, registration): random, cheap."""
    return _fast.getrandbits(53) + 1


class RequestIds:
    """Session-scope request ids: 1, 2, ... wrapping at 2**53."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = self._last + 1 if self._last < MAX_ID else 1
        return self._last
