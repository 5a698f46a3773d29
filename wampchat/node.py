"""build_node(config, reactor): the one place that creates a node's real I/O objects.

A node is a Twisted MultiService: one service per listening transport, plus the
in-process components. Stopping it (SIGTERM, Ctrl-C, twistd shutdown) says GOODBYE
`wamp.close.system_shutdown` to every session before the listeners close.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet import defer, task

from wampchat import errors
from wampchat.auth.factory import build_authenticators
from wampchat.auth.logout import logout_resource_for
from wampchat.components import attach_component
from wampchat.config_types import NodeConfig, TransportConfig
from wampchat.logs import Logger
from wampchat.metrics import Metrics
from wampchat.router.admission import admission_for
from wampchat.router.realm import Realm
from wampchat.router.session import RouterContext, install_refresh
from wampchat.transport.web import listen

log = Logger()

# How long GOODBYEs get to leave the sockets before the listeners close at shutdown.
SHUTDOWN_FLUSH = 0.3


@dataclass
class Node:
    """What build_node made: the service to start, and handles for tests and the CLI."""

    service: MultiService
    realms: dict[str, Realm]
    metrics: Metrics
    transports: list["TransportService"] = field(default_factory=list)

    def port_of(self, index: int = 0) -> int:
        """The TCP port transport `index` listens on (after start)."""
        return self.transports[index].port.getHost().port


class TransportService(Service):
    """Listens on one transport's endpoint while running."""

    def __init__(self, reactor, config: TransportConfig, context: RouterContext,
                 metrics: Metrics, extra_resources: dict[bytes, Any] | None = None,
                 gate: defer.Deferred | None = None) -> None:
        self._reactor = reactor
        self.config = config
        self.context = context
        self._metrics = metrics
        self._extra_resources = extra_resources or {}
        self._gate = gate          # fires when the node may take clients (migrations done)
        self.port = None
        self.ready: defer.Deferred = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        if self._gate is None:
            self._listen()
        else:
            def open_when_ready(value):
                if self.running:
                    self._listen()
                return value
            self._gate.addCallback(open_when_ready)

    def _listen(self) -> None:
        d = listen(self._reactor, self.config, self.context, self._metrics,
                   extra_resources=self._extra_resources)

        def listening(port):
            self.port = port
            host = port.getHost()
            log.info("{kind} transport listening on {interface}:{port}", kind=self.config.type,
                     interface=host.host, port=host.port)
            self.ready.callback(port)
            return port

        def failed(failure):
            log.error("cannot listen on {interface}:{port}: {error}",
                      interface=self.config.endpoint.interface, port=self.config.endpoint.port,
                      error=failure.getErrorMessage())
            self.ready.errback(failure)

        d.addCallbacks(listening, failed)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class RouterService(MultiService):
    """The node's root service: says GOODBYE to everyone before its children stop."""

    def __init__(self, reactor, realms: dict[str, Realm]) -> None:
        super().__init__()
        self._reactor = reactor
        self._realms = realms

    @defer.inlineCallbacks
    def stopService(self):
        count = calls = 0
        for realm in self._realms.values():
            # Calls in flight are answered first, so no caller is left waiting when its
            # GOODBYE comes (and no callee keeps working for nobody).
            calls += realm.dealer.cancel_all("the router is shutting down")
            for session in list(realm.sessions.values()):
                session.close_by_router(errors.CLOSE_SYSTEM_SHUTDOWN, "the router is shutting down")
                count += 1
        log.info("shutting down: canceled {calls} calls in flight, said GOODBYE to {count} "
                 "sessions", calls=calls, count=count)
        if count:
            yield task.deferLater(self._reactor, SHUTDOWN_FLUSH, lambda: None)
        yield super().stopService()


def build_realms(config: NodeConfig, reactor) -> dict[str, Realm]:
    """One Realm per configured realm, with the router procedures installed."""
    realms: dict[str, Realm] = {}
    for realm_config in config.realms:
        realm = Realm(realm_config, reactor, limits=config.limits)
        install_refresh(realm)
        realms[realm.name] = realm
    return realms


def build_node(config: NodeConfig, reactor, keycloak_factory: Callable | None = None,
               extra_resources: dict[bytes, Any] | None = None,
               metrics: Metrics | None = None, dsn: str | None = None,
               start_after: defer.Deferred | None = None) -> Node:
    """Build every service of a node from parsed config; starts nothing.

    keycloak_factory(KeycloakAuthConfig) -> authenticator serves `type: keycloak`
    auth entries; extra_resources are mounted on web transports (the dev issuer);
    transports listen only once start_after (if given) has fired.
    Web transports with a keycloak entry also get /backchannel-logout when the
    factory shares its key caches (KeycloakFactory.jwks_for). In-process components
    get the node's database (dsn, else database.dsn) as extra["dsn"] unless they set one.
    """
    realms = build_realms(config, reactor)
    metrics = metrics if metrics is not None else Metrics()
    for realm in realms.values():
        metrics.watch_realm(realm)
    root = RouterService(reactor, realms)
    node = Node(service=root, realms=realms, metrics=metrics)
    admission = admission_for(config.limits, reactor)      # one for all transports
    for transport_config in config.transports:
        authenticators = build_authenticators(transport_config.auth, realms, reactor,
                                              keycloak_factory=keycloak_factory)
        context = RouterContext(realms, authenticators, reactor, config.limits, observer=metrics,
                                admission=admission)
        resources = dict(extra_resources or {})
        if transport_config.type == "web":
            logout = logout_resource_for(transport_config.auth, keycloak_factory, realms, reactor)
            if logout is not None:
                resources[b"backchannel-logout"] = logout
        service = TransportService(reactor, transport_config, context, metrics, resources,
                                   gate=start_after)
        service.setServiceParent(root)
        node.transports.append(service)
    for cache in getattr(keycloak_factory, "caches", {}).values():
        metrics.watch_jwks(cache)
    root.addService(ComponentsService(config, realms, reactor, metrics,
                                      dsn=dsn or config.database.dsn))
    return node


class ComponentsService(Service):
    """Attaches the configured in-process components when the node starts."""

    def __init__(self, config: NodeConfig, realms: dict[str, Realm], reactor, metrics,
                 dsn: str | None = None) -> None:
        self._config = config
        self._dsn = dsn
        self._realms = realms
        self._reactor = reactor
        self._metrics = metrics
        self.sessions: list = []

    def startService(self) -> None:
        super().startService()
        for settings in self._config.components:
            if self._dsn and "dsn" not in settings.extra:
                settings = dataclasses.replace(settings, extra={**settings.extra, "dsn": self._dsn})
            self.sessions.append(attach_component(settings, self._realms, self._reactor,
                                                  observer=self._metrics))
