"""`wampchat dev`: the whole system on one machine with no setup.

The router from the given config, an embedded throwaway PostgreSQL when no
database is configured, and the Keycloak-compatible development issuer mounted on
the router's own web transport when the configured issuer points there.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

from wampchat.config_types import KeycloakAuthConfig, NodeConfig, TransportConfig
from wampchat.dev.database import EmbeddedPostgres
from wampchat.dev.issuer import DEMO_USERS, DevIssuer, realms_resource
from wampchat.logs import Logger

log = Logger()


def _web_transport(config: NodeConfig) -> TransportConfig | None:
    return next((t for t in config.transports if t.type == "web"), None)


def _keycloak(config: NodeConfig) -> KeycloakAuthConfig | None:
    for transport in config.transports:
        for method in transport.auth:
            if method.type == "keycloak" and method.keycloak is not None:
                return method.keycloak
    return None


def served_issuer(config: NodeConfig) -> str | None:
    """The configured issuer when it lives on this node's web transport (/realms/<name>)."""
    web, keycloak = _web_transport(config), _keycloak(config)
    if web is None or keycloak is None:
        return None
    url = urlsplit(keycloak.issuer)
    local = {web.endpoint.interface, "localhost", "127.0.0.1"}
    parts = url.path.strip("/").split("/")
    if url.hostname in local and url.port == web.endpoint.port and len(parts) == 2 \
            and parts[0] == "realms":
        return keycloak.issuer.rstrip("/")
    return None


def follow_web_port(config: NodeConfig, environ=None) -> NodeConfig:
    """`WAMPCHAT_PORT=9000 wampchat dev`: the default loopback issuer moves with the port.

    Only when KEYCLOAK_REALM_URL is not set and the configured issuer is a loopback
    /realms/<name> URL on another port than the web transport's.
    """
    environ = os.environ if environ is None else environ
    web = _web_transport(config)
    if environ.get("KEYCLOAK_REALM_URL") or web is None or served_issuer(config) is not None:
        return config

    def moved(method):
        url = urlsplit(method.keycloak.issuer) if method.keycloak is not None else None
        if url is None or url.hostname not in ("127.0.0.1", "localhost") \
                or len(url.path.strip("/").split("/")) != 2 \
                or url.path.strip("/").split("/")[0] != "realms":
            return method
        issuer = urlunsplit((url.scheme, f"{url.hostname}:{web.endpoint.port}", url.path, "", ""))
        return replace(method, keycloak=replace(method.keycloak, issuer=issuer))

    return replace(config, transports=tuple(
        replace(t, auth=tuple(moved(m) for m in t.auth)) for t in config.transports))


def backchannel_logout_url(issuer_url: str) -> str:
    """The router's /backchannel-logout on the web transport that serves issuer_url."""
    url = urlsplit(issuer_url)
    return f"{url.scheme}://{url.netloc}/backchannel-logout"


def banner(config: NodeConfig, issuer: DevIssuer | None, embedded: bool) -> str:
    """What a newcomer needs: the page, the accounts, how to get a token."""
    web = _web_transport(config)
    base = f"http://{web.endpoint.interface}:{web.endpoint.port}" if web else "(no web transport)"
    lines = ["", "wampchat dev is running", f"  chat page:   {base}/",
             f"  WebSocket:   {base.replace('http', 'ws', 1)}/{web.ws_path if web else 'ws'}",
             f"  database:    {'embedded PostgreSQL (thrown away on exit)' if embedded else 'DATABASE_URL'}"]
    if issuer is not None:
        accounts = ", ".join(f"{u.username}/{u.password}" for u in DEMO_USERS)
        lines += [f"  issuer:      {issuer.issuer} (development issuer)",
                  f"  demo users:  {accounts}",
                  f"  backend:     client {issuer.backend_client_id} / {issuer.backend_secret}",
                  "  a token:     curl -s -d grant_type=password -d client_id=" + issuer.client_id
                  + " -d username=alice -d password=alice "
                  + issuer.issuer + "/protocol/openid-connect/token"]
    else:
        lines.append("  issuer:      the configured Keycloak (KEYCLOAK_REALM_URL)")
    lines.append("  Ctrl-C stops everything.")
    return "\n".join(lines) + "\n"


def run_dev(config: NodeConfig, data_dir: str | None = None) -> int:
    """Run until Ctrl-C/SIGTERM; the embedded database is stopped on the way out."""
    from twisted.internet import defer, task

    from wampchat.cli import _until_stopped, build_runtime
    from wampchat.runtime import tune_garbage_collection

    config = follow_web_port(config)
    database = None
    dsn = config.database.dsn
    if not dsn:
        database = EmbeddedPostgres(data_dir)
        dsn = database.start()
    try:
        def main(reactor):
            issuer = None
            extra = {}
            issuer_url = served_issuer(config)
            if issuer_url is not None:
                # Logouts at the issuer reach this router's own back-channel endpoint.
                issuer = DevIssuer(issuer_url, reactor,
                                   backchannel_logout_url=backchannel_logout_url(issuer_url))
                extra[b"realms"] = realms_resource(issuer)
            node = build_runtime(config, reactor, extra_resources=extra, dsn=dsn)
            reactor.addSystemEventTrigger("before", "shutdown", node.service.stopService)
            node.service.startService()
            tune_garbage_collection()
            running = _until_stopped(reactor, node)
            listening = defer.DeferredList([t.ready for t in node.transports],
                                           fireOnOneErrback=True, consumeErrors=True)
            listening.addCallback(
                lambda _: sys.stdout.write(banner(config, issuer, database is not None)))
            listening.addErrback(lambda _: None)    # _until_stopped reports the failure
            return running

        task.react(main)
    finally:
        if database is not None:
            database.close()
    return 0
