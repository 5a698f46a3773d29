"""The shipped crossbar-like.yaml node with its own development issuer, for end-to-end tests.

The issuer is mounted on the node's web transport at /realms/wampchat, so the router
fetches its JWKS over real HTTP, as it would from Keycloak.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import pytest_twisted
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.types import ComponentConfig
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.integration.conftest import reactor, within
from tests.integration.processes import free_port
from wampchat.cli import build_runtime
from wampchat.config import load_config
from wampchat.config_types import NodeConfig
from wampchat.dev.issuer import DevIssuer, realms_resource

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "crossbar-like.yaml"


def build_dev_node(dsn: str, *, issuer_url: str | None = None,
                   environ: Mapping[str, str] | None = None,
                   transform: Callable[[NodeConfig], NodeConfig] | None = None):
    """(port, issuer, node) of the shipped config on database dsn; not started.

    issuer_url defaults to this node's own /realms/wampchat; transform adjusts the
    parsed config (e.g. drops the components).
    """
    port = free_port()
    issuer_url = issuer_url or f"http://127.0.0.1:{port}/realms/wampchat"
    config = load_config(str(SHIPPED_CONFIG), environ={
        "WAMPCHAT_PORT": str(port), "KEYCLOAK_REALM_URL": issuer_url, "DATABASE_URL": dsn,
        **(environ or {})})
    if transform is not None:
        config = transform(config)
    issuer = DevIssuer(issuer_url, reactor())
    node = build_runtime(config, reactor(), extra_resources={b"realms": realms_resource(issuer)})
    return port, issuer, node


def start_dev_node(dsn: str, **options):
    """build_dev_node, started and listening (blocks: for fixtures)."""
    port, issuer, node = build_dev_node(dsn, **options)
    node.service.startService()
    pytest_twisted.blockon(within(node.transports[0].ready))
    return port, issuer, node


def stop_node(node) -> None:
    """Stop a node started by start_dev_node (blocks: for fixture teardown)."""
    pytest_twisted.blockon(node.service.stopService())


class TicketUser(ApplicationSession):
    """A session of the wampchat realm with ticket auth (the token) that stays joined:
    `joined` fires with the WELCOME's details (fails if refused), `left` when it ends."""

    def __init__(self, token: str) -> None:
        super().__init__(ComponentConfig(realm="wampchat"))
        self.token = token
        self.joined: Deferred = Deferred()
        self.left: Deferred = Deferred()

    def onConnect(self):
        self.join(self.config.realm, ["ticket"])

    def onChallenge(self, challenge):
        return self.token

    def onJoin(self, details):
        self.joined.callback(details)

    def onLeave(self, details):
        if not self.joined.called:
            self.joined.errback(RuntimeError(f"not welcomed: {details.reason}"))
        if not self.left.called:
            self.left.callback(details)
        self.disconnect()


async def connect_ticket_user(port: int, token: str) -> TicketUser:
    """A TicketUser joined over WebSocket to the node on port."""
    user = TicketUser(token)
    factory = WampWebSocketClientFactory(lambda: user, url=f"ws://127.0.0.1:{port}/ws")
    await within(TCP4ClientEndpoint(reactor(), "127.0.0.1", port).connect(factory))
    await within(user.joined, 10)
    return user
