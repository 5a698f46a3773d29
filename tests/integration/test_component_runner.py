"""`wampchat component`: a service class run out of process with a service-account token.

Over WebSocket and RawSocket, with a service-account token or WAMP-CRA; and across a
router restart (a new node on the same port, with a new development issuer whose key
refuses the token the component held), after which it fetches a new token, joins
again and re-registers.
"""

from __future__ import annotations

import dataclasses

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred

from tests.integration.dev_node import (SHIPPED_CONFIG, TicketUser, connect_ticket_user,
                                        start_dev_node, stop_node)
from tests.integration.conftest import reactor, within
from tests.integration.processes import free_port, sleep
from tests.services.external import ComponentProcess, service_account_env
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)
from wampchat.cli import build_runtime
from wampchat.component_runner import SetupError, transport_for
from wampchat.config import load_config
from wampchat.config_types import Endpoint, TransportConfig
from wampchat.dev.issuer import DevIssuer, realms_resource

CRA_SECRET = "cra-backend-secret"
REGISTER_TRIES = 150            # x 0.2 s: up to ~30 s for a component to (re-)register


def with_rawsocket(config):
    """No in-process components; a RawSocket transport (free port) with the web's auth."""
    web = config.transports[0]
    raw = TransportConfig(type="rawsocket", endpoint=Endpoint("127.0.0.1", 0),
                          serializers=("cbor", "msgpack", "json"), auth=web.auth)
    return dataclasses.replace(config, components=(), transports=(web, raw))


@pytest.fixture
def bare_node(users_database):  # noqa: F811 (pytest fixture injection)
    """The shipped config without in-process components, plus a RawSocket transport;
    the dev issuer mounted."""
    port, issuer, node = start_dev_node(
        users_database, environ={"WAMPCHAT_BACKEND_SECRET": CRA_SECRET}, transform=with_rawsocket)
    pytest_twisted.blockon(within(node.transports[1].ready))
    yield port, issuer, node
    stop_node(node)


@pytest.fixture(params=[("service-account", "ws"), ("wampcra", "ws"), ("service-account", "rs")],
                ids=lambda p: "-".join(p))
def component_process(request, bare_node, tmp_path):
    """`wampchat component …ActivityService` against bare_node over WebSocket or RawSocket."""
    port, issuer, node = bare_node
    method, transport = request.param
    if method == "service-account":
        credentials = service_account_env(issuer.issuer)
    else:
        credentials = {"WAMPCHAT_BACKEND_AUTHID": "chat-service",
                       "WAMPCHAT_BACKEND_SECRET": CRA_SECRET}
    url = (f"ws://127.0.0.1:{port}/ws" if transport == "ws"
           else f"rs://127.0.0.1:{node.port_of(1)}")
    component = ComponentProcess(url, credentials, tmp_path)
    try:
        yield component, port, issuer
    finally:
        component.kill()


async def set_status_when_registered(user: TicketUser, component: ComponentProcess,
                                     status: str = "away") -> dict:
    """rpc.activity.set_status, retried (bounded) until the component has registered it."""
    for _ in range(REGISTER_TRIES):
        assert component.proc.poll() is None, component.output()
        try:
            return await within(user.call("rpc.activity.set_status", status))
        except ApplicationError as exc:
            if exc.error != "wamp.error.no_such_procedure":
                raise
        await sleep(0.2)
    raise AssertionError(f"rpc.activity.set_status never registered:\n{component.output()}")


@pytest_twisted.ensureDeferred
async def test_activity_service_runs_out_of_process_as_backend(component_process):
    """The component joins as backend (service-account token or WAMP-CRA, over WebSocket or
    RawSocket) and serves set_status and list."""
    component, port, issuer = component_process
    user = await connect_ticket_user(port, issuer.mint("alice"))
    try:
        result = await set_status_when_registered(user, component)
        assert result == {"status": "ok", "new_status": "away"}
        with pytest.raises(ApplicationError) as invalid:
            await within(user.call("rpc.activity.set_status", "sleeping"))
        assert invalid.value.error == "wampchat.error.invalid_status"
        listed = await within(user.call("rpc.activity.list"))
        assert listed == [{"authid": "alice@example.com", "status": "away", "sessions": 1}]
    finally:
        user.leave()
    output = await component.stop()
    assert "joined wampchat as" in output and "(backend)" in output, output


def test_rawsocket_urls():
    for url in ("rs://127.0.0.1:9000", "tcp://127.0.0.1:9000"):
        transport = transport_for(url)
        assert transport["type"] == "rawsocket" and transport["serializer"] == "cbor"
        assert transport["endpoint"] == {"type": "tcp", "host": "127.0.0.1", "port": 9000}
    for bad in ("rs://127.0.0.1", "http://127.0.0.1:9000/ws", "rss://127.0.0.1:9000"):
        with pytest.raises(SetupError):
            transport_for(bad)


def test_database_url_is_the_dsn_unless_extra_names_one():
    """The DSN (with its password) can come from the environment, not the command line."""
    from wampchat.component_runner import with_database

    url = "postgresql://chat:secret@db/wampchat"
    assert with_database({"leave_grace": 1}, {"DATABASE_URL": url}) == {"leave_grace": 1,
                                                                       "dsn": url}
    assert with_database({"dsn": "postgresql:///other"}, {"DATABASE_URL": url}) == \
        {"dsn": "postgresql:///other"}
    assert with_database({}, {}) == {}


def node_on_ports(dsn: str, port: int, raw_port: int, issuer: DevIssuer):
    """The shipped config without components on port, plus RawSocket on raw_port, the
    issuer mounted; not started."""
    config = load_config(str(SHIPPED_CONFIG), environ={
        "WAMPCHAT_PORT": str(port), "KEYCLOAK_REALM_URL": issuer.issuer, "DATABASE_URL": dsn})
    config = with_rawsocket(config)
    raw = dataclasses.replace(config.transports[1], endpoint=Endpoint("127.0.0.1", raw_port))
    config = dataclasses.replace(config, transports=(config.transports[0], raw))
    return build_runtime(config, reactor(), extra_resources={b"realms": realms_resource(issuer)})


@pytest_twisted.async_yield_fixture
async def restartable(users_database, tmp_path):  # noqa: F811 (pytest fixture injection)
    """Nodes made one after the other on the same two ports; all stopped at teardown."""
    port = free_port()
    raw_port = free_port()
    while raw_port == port:
        raw_port = free_port()
    issuer_url = f"http://127.0.0.1:{port}/realms/wampchat"
    nodes = []

    async def start():
        # A new issuer each time, as `wampchat dev` makes on every start: new signing key.
        issuer = DevIssuer(issuer_url, reactor())
        node = node_on_ports(users_database, port, raw_port, issuer)
        nodes.append(node)
        node.service.startService()
        await within(node.transports[0].ready, 10)
        await within(node.transports[1].ready, 10)
        return node, issuer

    try:
        yield port, raw_port, start
    finally:
        for node in nodes:
            if node.service.running:
                await within(node.service.stopService(), 10)


async def crash(node) -> None:
    """As if the router process died: the kernel closes its connections (FIN, no WAMP
    GOODBYE, no WebSocket close), then nothing listens any more."""
    for realm in node.realms.values():
        for session in list(realm.sessions.values()):
            session.transport.transport.loseConnection()
    for _ in range(50):
        if not any(realm.sessions for realm in node.realms.values()):
            break
        await sleep(0.02)
    await within(node.service.stopService(), 10)     # nobody left to say GOODBYE to


@pytest.mark.parametrize("transport", ["ws", "rs"])
@pytest.mark.parametrize("stop", ["shutdown", "crash"])
@pytest_twisted.ensureDeferred
async def test_component_reconnects_and_reregisters_after_router_restart(restartable, tmp_path,
                                                                         transport, stop):
    """Router stopped (GOODBYE system_shutdown) or gone at once under a running component,
    a new one started on the same ports with a new issuer key: the component retries with
    backoff, its old token is refused, it fetches a new one, joins again and
    re-registers; users' calls work again."""
    port, raw_port, start = restartable
    node, issuer = await start()
    url = f"ws://127.0.0.1:{port}/ws" if transport == "ws" else f"rs://127.0.0.1:{raw_port}"
    component = ComponentProcess(url, service_account_env(issuer.issuer), tmp_path)
    try:
        user = await connect_ticket_user(port, issuer.mint("alice"))
        assert await set_status_when_registered(user, component, "busy") == \
            {"status": "ok", "new_status": "busy"}
        if stop == "shutdown":
            await within(node.service.stopService(), 10)     # GOODBYE system_shutdown to all
        else:
            await crash(node)
        await sleep(1.5)                                  # a reconnect attempt or two fails
        assert component.proc.poll() is None, component.output()
        node, issuer = await start()
        restarted = reactor().seconds()
        bob = await connect_ticket_user(port, issuer.mint("bob"))
        assert await set_status_when_registered(bob, component, "away") == \
            {"status": "ok", "new_status": "away"}
        print(f"[{transport}/{stop}] served again {reactor().seconds() - restarted:.2f} s "
              "after the new router listened")
        assert await within(bob.call("rpc.activity.list")) == \
            [{"authid": "bob@example.com", "status": "away", "sessions": 1}]
        bob.leave()
        output = await component.stop()
    finally:
        component.kill()
    assert output.count("joined wampchat as") == 2, output
    assert "router refused the session: wamp.error.authentication_failed" in output, output
    assert output.count("service-account token obtained") == 2, output


@pytest_twisted.ensureDeferred
async def test_service_account_token_is_refreshed_before_it_expires(bare_node, monkeypatch):
    """In-process Component: the refresh timer renews the session's token via the router."""
    from wampchat import component_runner

    port, issuer, node = bare_node
    monkeypatch.setattr(component_runner, "REFRESH_MARGIN", 299.0)   # renew ~1 s after join
    component = component_runner.build_component(
        "wampchat.services.activity.ActivityService", f"ws://127.0.0.1:{port}/ws", "wampchat",
        {}, {"WAMPCHAT_TOKEN_URL": f"{issuer.issuer}/protocol/openid-connect/token",
             "WAMPCHAT_CLIENT_ID": "wampchat-backend",
             "WAMPCHAT_CLIENT_SECRET": "wampchat-backend-secret"}, reactor())
    joined: Deferred = Deferred()
    component.on("join", lambda session, details: joined.called or joined.callback(details))
    done = component.start(reactor())
    try:
        details = await within(joined, 15)
        assert details.authrole == "backend" and details.authmethod == "ticket"
        for _ in range(100):
            if component.refresher.refreshed >= 1:
                break
            await sleep(0.1)
        assert component.refresher.refreshed >= 1
    finally:
        await within(component.stop(), 10)
        await within(done, 10)
