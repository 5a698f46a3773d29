"""In-process authenticators: a Python callable named in the config decides (``type: function``).

The callable is ``authenticate(realm, authid, details)``, plain or ``async`` (or
returning a Deferred), with exactly the contract of a dynamic authenticator
(``wampchat.auth.dynamic``): same ``details``, same answers (a role string or a
principal dict), same refusals (raise ``ApplicationError``), same WAMP-CRA flow.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from wampchat.auth.authenticator import Hello
from wampchat.auth.dynamic import DEFAULT_TIMEOUT, CallbackAuthenticator


def import_callable(dotted_name: str) -> Callable[..., Any]:
    """The callable at ``package.module.name``. Raises ValueError naming dotted_name."""
    module_name, _, attribute = dotted_name.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"authenticator {dotted_name!r} is not a dotted name (module.function)")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"authenticator {dotted_name!r} cannot be imported: {exc}") from None
    if not callable(target):
        raise ValueError(f"authenticator {dotted_name!r} is not callable")
    return target


class FunctionAuthenticator(CallbackAuthenticator):
    """An imported ``authenticate(realm, authid, details)`` decides; authprovider ``function``.

    The callable is imported once, here: a bad dotted name fails at start, not at login.
    ``clock``/``timeout`` bound how long an asynchronous answer may take (Unavailable).
    """

    authprovider = "function"

    def __init__(self, dotted_name: str, authmethod: str, clock: IReactorTime | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        super().__init__(authmethod, clock, timeout if clock is not None else None)  # type: ignore[arg-type]
        self.dotted_name = dotted_name
        self._function = import_callable(dotted_name)

    def _invoke(self, hello: Hello, details: dict[str, Any]) -> Deferred:
        try:
            result = self._function(hello.realm, hello.authid, details)
        except Exception:
            return fail()
        if isinstance(result, Deferred):
            return result
        if inspect.isawaitable(result):
            return Deferred.fromCoroutine(result)  # type: ignore[arg-type]
        return succeed(result)
