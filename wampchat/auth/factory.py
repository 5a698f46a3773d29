"""Authenticators from configuration: one instance per authmethod of a transport."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.interfaces import IReactorTime

from wampchat.auth.anonymous import AnonymousAuthenticator
from wampchat.auth.authenticator import Authenticator
from wampchat.auth.cra import WampCraAuthenticator
from wampchat.auth.dynamic import DynamicAuthenticator
from wampchat.auth.function import FunctionAuthenticator
from wampchat.auth.ticket import StaticTicketAuthenticator
from wampchat.config_types import AuthMethodConfig, KeycloakAuthConfig

if TYPE_CHECKING:
    from wampchat.router.dealer import Dealer
    from wampchat.router.realm import Realm

KeycloakFactory = Callable[[KeycloakAuthConfig], Authenticator]


def build_authenticators(auth_configs: tuple[AuthMethodConfig, ...], realms: dict[str, Realm],
                         clock: IReactorTime,
                         keycloak_factory: KeycloakFactory | None = None,
                         dynamic_timeout: float = 10.0) -> dict[str, Authenticator]:
    """authmethod -> authenticator for one transport's ``auth`` section.

    Raises ValueError naming the method for a configuration that cannot be served:
    a duplicate method, ``keycloak`` without a keycloak_factory or settings,
    ``dynamic``/``function`` without an authenticator, static ``anonymous`` without a role,
    an unimportable function.
    """
    authenticators: dict[str, Authenticator] = {}
    for config in auth_configs:
        if config.method in authenticators:
            raise ValueError(f"auth method {config.method!r} is configured twice")
        authenticators[config.method] = _build(config, realms, clock, keycloak_factory,
                                               dynamic_timeout)
    return authenticators


def _build(config: AuthMethodConfig, realms: dict[str, Realm], clock: IReactorTime,
           keycloak_factory: KeycloakFactory | None, dynamic_timeout: float) -> Any:
    method, kind = config.method, config.type
    if kind == "keycloak":
        if keycloak_factory is None or config.keycloak is None:
            raise ValueError(f"auth method {method!r}: type keycloak needs keycloak settings "
                             "and a keycloak authenticator factory")
        return keycloak_factory(config.keycloak)
    if kind == "static":
        if method == "ticket":
            return StaticTicketAuthenticator(config.principals)
        if method == "wampcra":
            return WampCraAuthenticator(config.principals, clock)
        if method == "anonymous":
            if not config.role:
                raise ValueError("auth method 'anonymous': type static needs a role")
            return AnonymousAuthenticator(config.role)
    if kind in ("dynamic", "function") and not config.authenticator:
        raise ValueError(f"auth method {method!r}: type {kind} needs an authenticator")
    if kind == "dynamic":
        def dealer_for_realm(name: str) -> Dealer | None:
            realm = realms.get(name)
            return realm.dealer if realm is not None else None

        return DynamicAuthenticator(method, config.authenticator, dealer_for_realm, clock,
                                    timeout=dynamic_timeout,
                                    authenticator_realm=config.authenticator_realm)
    if kind == "function":
        return FunctionAuthenticator(config.authenticator, method, clock, timeout=dynamic_timeout)
    raise ValueError(f"auth method {method!r}: type {kind!r} is not supported for it")
