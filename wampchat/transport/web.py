"""The web transport (one port: / static, /ws, /healthz, /metrics) and listening.

``build_site`` makes the twisted.web ``Site``; ``listen`` opens the TCP endpoint of
any transport type (``web``, plain ``websocket`` at any path, ``rawsocket``).
Extra resources (back-channel logout, the dev issuer) are mounted by the caller.

The web client gets two more things from the site: ``/config.json`` (WAMP realm,
WebSocket path and the Keycloak issuer and client id of this transport's ticket
auth, so one page works against the dev issuer and a real Keycloak) and
``/vendor/autobahn.min.js`` (Autobahn|JS from the npm package ``autobahn-browser``,
which is installed into ``node_modules`` next to the web directory, not committed).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.web import pages, resource, static
from twisted.web.server import Site

from wampchat.config_types import KeycloakAuthConfig, TransportConfig
from wampchat.logs import Logger
from wampchat.router.session import RouterContext
from wampchat.transport.dispatch import UpgradeDispatchFactory
from wampchat.transport.http_channel import IDLE_TIMEOUT, deadline_channel
from wampchat.transport.rawsocket import RouterRawSocketFactory
from wampchat.transport.websocket import RouterWebSocketFactory

log = Logger()

LISTEN_BACKLOG = 4096                  # the kernel caps it at net.core.somaxconn

PLACEHOLDER_PAGE = (b"<!doctype html><html><head><meta charset='utf-8'><title>wampchat</title>"
                    b"</head><body><h1>wampchat</h1><p>The router is running. No web client "
                    b"directory is configured.</p></body></html>")


def _ok() -> dict[str, Any]:
    return {"status": "ok"}


class HealthResource(resource.Resource):
    """GET /healthz: 200 {"status": "ok"} while health() says ok, else 503 with its answer."""

    isLeaf = True

    def __init__(self, health: Callable[[], dict[str, Any]] = _ok) -> None:
        super().__init__()
        self._health = health

    def render_GET(self, request) -> bytes:
        answer = self._health()
        request.setResponseCode(200 if answer.get("status") == "ok" else 503)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(answer).encode("utf-8")


class MetricsResource(resource.Resource):
    """GET /metrics: the Prometheus text exposition of one registry."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


class WebDirectory(static.File):
    """The web client's files; directories without an index are not listed.

    Every answer carries ``policy`` as its Content-Security-Policy: scripts and
    styles from this origin only, no inline script, so even text that reached the
    page as HTML by mistake could not run (defence in depth behind textContent).
    """

    policy: bytes | None = None

    def createSimilarFile(self, path):
        similar = super().createSimilarFile(path)
        similar.policy = self.policy
        return similar

    def directoryListing(self):
        return pages.forbidden("Directory listing is disabled.")

    def render_GET(self, request):
        if self.policy:
            request.setHeader(b"Content-Security-Policy", self.policy)
            request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return super().render_GET(request)


def content_security_policy(client: dict[str, Any]) -> bytes:
    """The page's CSP: this origin, plus the Keycloak origin the page fetches tokens from."""
    connect = ["'self'"]
    if client.get("keycloak"):
        url = urlsplit(client["keycloak"]["token_endpoint"])
        connect.append(f"{url.scheme}://{url.netloc}")
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {' '.join(connect)}; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'").encode("ascii")


class Placeholder(resource.Resource):
    """What / serves when no web directory exists: one small page."""

    def getChild(self, path: bytes, request):
        return self if path == b"" else pages.notFound()

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return PLACEHOLDER_PAGE


AUTOBAHN_BROWSER = ("autobahn-browser", "autobahn.min.js")   # under node_modules/


def _no_store_json(request, document: Any) -> bytes:
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(document).encode("utf-8")


def client_config(transport_config: TransportConfig, realm_names: list[str]) -> dict[str, Any]:
    """What the web client needs to sign in and connect (no secrets: all of it is public)."""
    keycloak: KeycloakAuthConfig | None = next(
        (m.keycloak for m in transport_config.auth
         if m.method == "ticket" and m.type == "keycloak" and m.keycloak is not None), None)
    document: dict[str, Any] = {
        "realm": "wampchat" if "wampchat" in realm_names or not realm_names else realm_names[0],
        "ws_path": "/" + transport_config.ws_path.strip("/"),
        "keycloak": None,
    }
    if keycloak is not None:
        issuer = keycloak.issuer.rstrip("/")
        document["keycloak"] = {
            "issuer": issuer, "client_id": keycloak.client_id,
            "realm": issuer.rsplit("/", 1)[-1],
            # Keycloak's fixed endpoint layout below the issuer (no discovery round trip).
            "authorization_endpoint": issuer + "/protocol/openid-connect/auth",
            "token_endpoint": issuer + "/protocol/openid-connect/token",
            "end_session_endpoint": issuer + "/protocol/openid-connect/logout",
        }
    return document


class ClientConfigResource(resource.Resource):
    """GET /config.json: ``client_config`` of this transport."""

    isLeaf = True

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__()
        self._document = document

    def render_GET(self, request) -> bytes:
        return _no_store_json(request, self._document)


def node_modules_for(web_directory: str | None) -> str:
    """Where `npm install` puts packages: next to the web directory (the repository root),
    else the checkout that holds this package."""
    if web_directory:
        return os.path.join(os.path.dirname(os.path.abspath(web_directory)), "node_modules")
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "node_modules")


class Vendor(resource.Resource):
    """/vendor/: the few npm files the client loads; anything else is a plain 404."""

    def getChild(self, path: bytes, request):
        return pages.notFound()


class VendorFile(resource.Resource):
    """One file of an npm package; looked up on each request, so a later `npm install`
    needs no restart. Missing: 404 and a log line saying how to get it."""

    isLeaf = True

    def __init__(self, path: str, package: str) -> None:
        super().__init__()
        self._path = path
        self._package = package

    def render(self, request):
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        if not os.path.isfile(self._path):
            log.warn("{path} is missing: run `npm install` (or `make run`) in the repository "
                     "to get the npm package {package}", path=self._path, package=self._package)
            return pages.notFound(
                "Not Found", f"{self._package} is not installed on this server.").render(request)
        served = static.File(self._path, defaultType="application/javascript")
        served.isLeaf = True
        return served.render(request)


def _registry_of(metrics: Any) -> CollectorRegistry:
    # A wampchat.metrics.Metrics, or a bare CollectorRegistry.
    return getattr(metrics, "registry", metrics)


def build_site(context: RouterContext, transport_config: TransportConfig, metrics: Any,
               health: Callable[[], dict[str, Any]] = _ok,
               extra_resources: dict[bytes, Any] | None = None) -> Site:
    """The Site of a `web` transport: / (web directory), /<ws_path>, /healthz, /metrics.

    metrics is the node's ``Metrics`` (or a ``CollectorRegistry``); extra_resources
    maps a first path segment to a resource (e.g. b"backchannel-logout").
    """
    directory = transport_config.web_directory
    client = client_config(transport_config, list(context.realms))
    if directory and os.path.isdir(directory):
        root: resource.Resource = WebDirectory(directory)
        root.policy = content_security_policy(client)
    else:
        if directory:
            log.warn("web directory {directory} does not exist: serving a placeholder page",
                     directory=directory)
        root = Placeholder()
    factory = RouterWebSocketFactory(context, transport_config.options,
                                     transport_config.serializers)
    root.putChild(transport_config.ws_path.strip("/").encode("utf-8"), WebSocketResource(factory))
    root.putChild(b"healthz", HealthResource(health))
    root.putChild(b"metrics", MetricsResource(_registry_of(metrics)))
    root.putChild(b"config.json", ClientConfigResource(client))
    vendor = Vendor()
    package, filename = AUTOBAHN_BROWSER
    vendor.putChild(filename.encode("ascii"), VendorFile(
        os.path.join(node_modules_for(directory), package, filename), package))
    root.putChild(b"vendor", vendor)
    for path, child in (extra_resources or {}).items():
        root.putChild(path, child)
    site = Site(root, timeout=IDLE_TIMEOUT)
    site.protocol = deadline_channel(transport_config.options.open_handshake_timeout)
    site.noisy = False
    site.websocket_factory = factory        # for the upgrade dispatch in front of the Site
    return site


def build_factory(transport_config: TransportConfig, context: RouterContext, metrics: Any,
                  extra_resources: dict[bytes, Any] | None = None,
                  health: Callable[[], dict[str, Any]] = _ok) -> Any:
    """The Twisted protocol factory for one transport of any type."""
    kind = transport_config.type
    if kind == "web":
        site = build_site(context, transport_config, metrics, health=health,
                          extra_resources=extra_resources)
        return UpgradeDispatchFactory(site, site.websocket_factory, transport_config.ws_path,
                                      context.clock, transport_config.options.open_handshake_timeout,
                                      blocked=context.admission.blocked)
    if kind == "websocket":
        return RouterWebSocketFactory(context, transport_config.options,
                                      transport_config.serializers)
    if kind == "rawsocket":
        return RouterRawSocketFactory(context, transport_config.serializers,
                                      transport_config.max_message_size)
    raise ValueError(f"unknown transport type {kind!r}; expected web, websocket or rawsocket")


def listen(reactor: Any, transport_config: TransportConfig, context: RouterContext,
           metrics: Any, extra_resources: dict[bytes, Any] | None = None,
           health: Callable[[], dict[str, Any]] = _ok) -> Deferred:
    """Listen on the transport's TCP endpoint; a Deferred of the IListeningPort."""
    factory = build_factory(transport_config, context, metrics, extra_resources, health)
    refuse_blocked_addresses(factory, context.admission)
    endpoint_config = transport_config.endpoint
    endpoint_type = TCP6ServerEndpoint if ":" in endpoint_config.interface else TCP4ServerEndpoint
    # A backlog far above Twisted's 50: a burst of connections is queued, not dropped
    # (a dropped SYN costs a legitimate client a 1 s, then 3 s, retransmission).
    endpoint = endpoint_type(reactor, endpoint_config.port, backlog=LISTEN_BACKLOG,
                             interface=endpoint_config.interface)
    return endpoint.listen(factory)


def refuse_blocked_addresses(factory: Any, admission: Any) -> None:
    """Close connections from blocked addresses at accept (no protocol is even built)."""
    build = factory.buildProtocol

    def build_unless_blocked(addr):
        if admission.blocked(getattr(addr, "host", "")):
            return None                      # Twisted closes the connection at once
        return build(addr)

    factory.buildProtocol = build_unless_blocked
