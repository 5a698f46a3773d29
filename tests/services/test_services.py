"""End to end: the shipped config's chat and activity services, dev-issuer users over WebSocket.

Users are Autobahn|Python sessions in the test's reactor and Autobahn|JS sessions in
Node (tests/js/chat_participant.js, driven line by line by JsParticipant).
"""

from __future__ import annotations

import dataclasses
import json
import socket

import psycopg2
import pytest
import pytest_twisted
import treq
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig, PublishOptions, SubscribeOptions
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.integration.dev_node import start_dev_node, stop_node
from tests.integration.conftest import reactor, within
from tests.services.external import ACTIVITY, CHAT, ComponentProcess, service_account_env
from tests.services.js_participant import JsParticipant
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)
from wampchat.dev.issuer import DevIssuer

GRACE = 0.2
QUIET = 0.6         # seconds a client must see nothing more (> GRACE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sleep(seconds: float) -> Deferred:
    return task.deferLater(reactor(), seconds, lambda: None)


class ChatClient(ApplicationSession):
    """A ticket-authenticated user; every event on its subscriptions goes to `events`."""

    def __init__(self, token: str) -> None:
        super().__init__(ComponentConfig(realm="wampchat"))
        self.token = token
        self.joined: Deferred = Deferred()
        self.disconnected: Deferred = Deferred()
        self.events: DeferredQueue = DeferredQueue()    # (topic, kwargs, details)

    def onConnect(self):
        self.join(self.config.realm, ["ticket"])

    def onChallenge(self, challenge):
        return self.token

    def onJoin(self, details):
        self.details = details
        self.joined.callback(details)

    def onLeave(self, details):
        if not self.joined.called:
            self.joined.errback(RuntimeError(f"not welcomed: {details.reason} {details.message}"))
        self.disconnect()

    def onDisconnect(self):
        if not self.disconnected.called:
            self.disconnected.callback(None)

    async def listen(self, topic: str) -> None:
        def on_event(*args, details=None, **kwargs):
            self.events.put((topic, kwargs, details))
        await self.subscribe(on_event, topic, options=SubscribeOptions(details_arg="details"))

    async def next(self) -> tuple[str, dict, object]:
        return await within(self.events.get(), 5)

    async def texts(self, count: int) -> list[tuple[str, str, str]]:
        """The next count events as (topic, from/authid, message)."""
        found = []
        for _ in range(count):
            topic, kwargs, details = await self.next()
            sender = kwargs.get("from") if details.publisher_authrole == "backend" else details.publisher_authid
            found.append((topic, sender, kwargs.get("message", kwargs.get("status"))))
        return found

    async def quiet(self) -> None:
        await sleep(QUIET)
        assert not self.events.pending, self.events.pending


class Chat:
    """The node and the clients of one test."""

    def __init__(self, port: int, issuer: DevIssuer) -> None:
        self.port = port
        self.issuer = issuer
        self.clients: list[ChatClient] = []
        self.js_clients: list[JsParticipant] = []

    async def connect(self, username: str, topics=("chat.main",), ready=True) -> ChatClient:
        client = ChatClient(self.issuer.mint(username))
        self.clients.append(client)
        factory = WampWebSocketClientFactory(lambda: client, url=f"ws://127.0.0.1:{self.port}/ws")
        await TCP4ClientEndpoint(reactor(), "127.0.0.1", self.port, timeout=5).connect(factory)
        await within(client.joined, 10)
        if ready:
            await self._services_ready(client)
        for topic in topics:
            await client.listen(topic)
        return client

    async def connect_js(self, username: str, topics=("chat.main",)) -> JsParticipant:
        """An Autobahn|JS user (Node), joined and subscribed to topics."""
        client = JsParticipant(f"ws://127.0.0.1:{self.port}/ws", "wampchat",
                               self.issuer.mint(username))
        self.js_clients.append(client)
        await client.joined()
        for procedure, args in (("rpc.activity.list", []), ("chat.history", ["chat.main"])):
            for _ in range(400):    # as in _services_ready
                reply = await client.request("call", procedure=procedure, args=args)
                if reply.get("error") != "wamp.error.no_such_procedure":
                    break
                await sleep(0.05)
            assert reply["event"] == "result", reply
        for topic in topics:
            reply = await client.request("subscribe", topic=topic)
            assert reply["event"] == "subscribed", reply
        return client

    async def metric(self, line_start: str) -> float:
        """The value of the /metrics sample whose line starts with line_start (0 if absent)."""
        d = treq.get(f"http://127.0.0.1:{self.port}/metrics".encode(), persistent=False)
        response = await within(d)
        assert response.code == 200
        text = (await within(treq.content(response))).decode()
        for line in text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def _services_ready(self, client: ChatClient) -> None:
        for _ in range(400):        # up to ~20 s: external components start as processes
            try:
                await client.call("rpc.activity.list")
                await client.call("chat.history", "chat.main")
                return
            except ApplicationError as exc:
                if exc.error != "wamp.error.no_such_procedure":
                    raise
                await sleep(0.05)
        raise TimeoutError("services did not register")

    async def close(self) -> None:
        for js in self.js_clients:
            await js.leave()
        for client in self.clients:
            if client.is_attached():
                client.leave()
            elif client.is_connected():
                client.disconnect()
        for client in self.clients:
            try:
                await within(client.disconnected, 2)
            except Exception:
                pass


async def database_ready(node) -> None:
    """Wait (bounded) until the user database pool is connected: logins need it."""
    pools = [service for service in node.service if hasattr(service, "state")]
    assert pools
    for _ in range(200):
        if all(pool.state().available for pool in pools):
            return
        await sleep(0.05)
    raise TimeoutError("the user database pool did not connect")


def with_leave_grace(config):
    """The shipped services, with the chat's leave_grace shortened to GRACE."""
    classnames = [c.classname for c in config.components]
    assert classnames == ["wampchat.services.chat.ChatService",
                          "wampchat.services.activity.ActivityService"]
    components = tuple(dataclasses.replace(c, extra={**c.extra, "leave_grace": GRACE})
                       if c.classname.endswith("ChatService") else c for c in config.components)
    return dataclasses.replace(config, components=components)


def clear_history(dsn: str) -> None:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("TRUNCATE chat_messages")
    connection.close()


def without_chat_service(config):
    return dataclasses.replace(config, components=tuple(
        c for c in config.components if not c.classname.endswith("ChatService")))


@pytest.fixture
def chat_without_service(users_database):  # noqa: F811 (pytest fixture injection)
    """Like `chat`, but the chat service is not in the node: a test starts it."""
    clear_history(users_database)
    port, issuer, node = start_dev_node(users_database, transform=without_chat_service)
    pytest_twisted.blockon(Deferred.fromCoroutine(database_ready(node)))
    session = Chat(port, issuer)
    yield session
    pytest_twisted.blockon(Deferred.fromCoroutine(session.close()))
    stop_node(node)


def without_components(config):
    with_leave_grace(config)            # the same shipped services, checked
    return dataclasses.replace(config, components=())


@pytest.fixture(params=["in-process", "external"])
def chat(request, users_database, tmp_path):  # noqa: F811 (pytest fixture injection)
    """The shipped crossbar-like.yaml with leave_grace GRACE, its own dev issuer; the
    services in-process (as shipped) or as `wampchat component` processes that
    authenticate with a service-account token from that issuer."""
    clear_history(users_database)      # the database is shared by the session's tests
    external = request.param == "external"
    port, issuer, node = start_dev_node(
        users_database, transform=without_components if external else with_leave_grace)
    pytest_twisted.blockon(Deferred.fromCoroutine(database_ready(node)))
    processes = []
    if external:
        url, credentials = f"ws://127.0.0.1:{port}/ws", service_account_env(issuer.issuer)
        processes = [
            ComponentProcess(url, credentials, tmp_path, CHAT,
                             extra=json.dumps({"leave_grace": GRACE}),
                             database_url=users_database),
            ComponentProcess(url, credentials, tmp_path, ACTIVITY)]
    session = Chat(port, issuer)
    try:
        yield session
        pytest_twisted.blockon(Deferred.fromCoroutine(session.close()))
        for process in processes:
            pytest_twisted.blockon(Deferred.fromCoroutine(process.stop()))
    finally:
        for process in processes:
            process.kill()
        stop_node(node)


A, B = "alice@example.com", "bob@example.com"


@pytest_twisted.ensureDeferred
async def test_welcome_joined_left_sequence(chat):
    alice = await chat.connect("alice")
    assert await alice.texts(1) == [("chat.main", "System", f"Welcome {A}")]
    bob = await chat.connect("bob")
    assert await bob.texts(1) == [("chat.main", "System", f"Welcome {B}")]
    assert await alice.texts(1) == [("chat.main", "System", f"{B} has joined the chat.")]
    bob.leave()
    assert await alice.texts(1) == [("chat.main", "System", f"{B} has left the chat.")]
    await alice.quiet()
    await bob.quiet()


@pytest_twisted.ensureDeferred
async def test_reload_within_grace_is_not_announced(chat):
    alice = await chat.connect("alice")
    bob = await chat.connect("bob")
    await alice.texts(2)
    await bob.texts(1)
    bob.leave()
    await within(bob.disconnected)
    bob_again = await chat.connect("bob")
    assert await bob_again.texts(1) == [("chat.main", "System", f"Welcome {B}")]
    await alice.quiet()
    # a second tab of a present user is welcomed but not announced either
    bob_tab = await chat.connect("bob")
    assert await bob_tab.texts(1) == [("chat.main", "System", f"Welcome {B}")]
    await alice.quiet()
    await bob_again.quiet()


@pytest_twisted.ensureDeferred
async def test_set_status_valid_and_invalid(chat):
    alice = await chat.connect("alice", topics=("chat.main", "activity.on_status"))
    bob = await chat.connect("bob", topics=("chat.main", "activity.on_status"))
    await alice.texts(2)
    await bob.texts(1)
    result = await bob.call("rpc.activity.set_status", "away")
    assert result == {"status": "ok", "new_status": "away"}
    seen = sorted(await alice.texts(2))
    assert seen == [("activity.on_status", None, "away"), ("chat.main", "System", f"{B} is now away")]
    with pytest.raises(ApplicationError) as refused:
        await bob.call("rpc.activity.set_status", "sleeping")
    assert refused.value.error == "wampchat.error.invalid_status"
    listing = await alice.call("rpc.activity.list")
    assert {entry["authid"]: entry["status"] for entry in listing} == {A: "online", B: "away"}


@pytest_twisted.ensureDeferred
async def test_on_status_names_session_and_authid(chat):
    alice = await chat.connect("alice", topics=("activity.on_status",))
    bob = await chat.connect("bob", topics=())
    await bob.call("rpc.activity.set_status", "busy")
    topic, kwargs, details = await alice.next()
    assert kwargs == {"authid": B, "session": bob.details.session, "status": "busy"}


@pytest_twisted.ensureDeferred
async def test_list_counts_two_tabs_of_one_user(chat):
    await chat.connect("alice", topics=())
    await chat.connect("alice", topics=())
    bob = await chat.connect("bob", topics=())
    listing = await bob.call("rpc.activity.list")
    assert sorted(listing, key=lambda e: e["authid"]) == [
        {"authid": A, "status": "online", "sessions": 2},
        {"authid": B, "status": "online", "sessions": 1}]


@pytest_twisted.ensureDeferred
async def test_abrupt_disconnect_is_left_and_offline(chat):
    alice = await chat.connect("alice", topics=("chat.main", "activity.on_status"))
    bob = await chat.connect("bob")
    await alice.texts(2)
    bob_session = bob.details.session
    bob._transport.transport.abortConnection()      # no GOODBYE
    events = {}
    for _ in range(2):
        topic, kwargs, details = await alice.next()
        events[topic] = kwargs
    assert events == {"chat.main": {"from": "System", "message": f"{B} has left the chat."},
                      "activity.on_status": {"authid": B, "session": bob_session, "status": "offline"}}
    assert [e["authid"] for e in await alice.call("rpc.activity.list")] == [A]


@pytest_twisted.ensureDeferred
async def test_user_spoofing_system_is_disclosed_as_user(chat):
    alice = await chat.connect("alice")
    bob = await chat.connect("bob")
    await alice.texts(2)
    await bob.texts(1)
    await bob.publish("chat.main", options=PublishOptions(acknowledge=True),
                      **{"from": "System", "message": "alice has left the chat."})
    topic, kwargs, details = await alice.next()
    assert kwargs["from"] == "System"
    assert details.publisher_authrole == "user" and details.publisher_authid == B
    assert details.publisher == bob.details.session


@pytest_twisted.ensureDeferred
async def test_chat_admin_refused_for_user_allowed_for_admin(chat):
    bob = await chat.connect("bob", topics=())
    for attempt in (bob.subscribe(lambda *a, **k: None, "chat.admin"),
                    bob.publish("chat.admin", options=PublishOptions(acknowledge=True), message="hi"),
                    bob.call("chat.history", "chat.admin")):
        with pytest.raises(ApplicationError) as refused:
            await attempt
        assert refused.value.error == "wamp.error.not_authorized"
    admin = await chat.connect("admin", topics=("chat.admin",))
    await admin.publish("chat.admin", options=PublishOptions(acknowledge=True, exclude_me=False),
                        message="admins only")
    topic, kwargs, details = await admin.next()
    assert kwargs == {"message": "admins only"} and details.publisher_authrole == "admin"
    history = await admin.call("chat.history", "chat.admin")
    assert [m["message"] for m in history] == ["admins only"]


@pytest_twisted.ensureDeferred
async def test_history_returns_earlier_messages(chat):
    alice = await chat.connect("alice", topics=())
    for n in range(5):
        await alice.publish("chat.main", options=PublishOptions(acknowledge=True), message=f"m{n}")
    bob = await chat.connect("bob", topics=())
    history = []
    for _ in range(50):         # the service records on a later turn
        history = await bob.call("chat.history", "chat.main")
        if len(history) == 5:
            break
        await sleep(0.05)
    assert [(m["from"], m["message"]) for m in history] == [(A, f"m{n}") for n in range(5)]
    page = await bob.call("chat.history", "chat.main", limit=2, before=history[3]["id"])
    assert [m["message"] for m in page] == ["m1", "m2"]


def system_event(message: str) -> dict:
    """A chat event as chat_participant.js prints it, sent by the chat or activity service."""
    return {"event": "event", "topic": "chat.main", "args": [],
            "kwargs": {"from": "System", "message": message}}


def without_publisher_session(line: dict) -> dict:
    # services' session ids vary per run; their role is checked separately
    assert line["publisher_authrole"] == "backend", line
    return {k: v for k, v in line.items() if not k.startswith("publisher")}


@pytest_twisted.ensureDeferred
async def test_python_and_js_users_see_the_same_sequence(chat):
    """Autobahn|JS (Node) and Autobahn|Python users: welcome, joined and left in both
    directions, messages both ways with the publisher disclosed, the JS user's status."""
    bob = await chat.connect_js("bob")
    assert without_publisher_session(await bob.next_event()) == system_event(f"Welcome {B}")

    alice = await chat.connect("alice", topics=("chat.main", "activity.on_status"))
    assert await alice.texts(1) == [("chat.main", "System", f"Welcome {A}")]
    assert without_publisher_session(await bob.next_event()) == \
        system_event(f"{A} has joined the chat.")

    # JS -> Python, with the JS session disclosed as the publisher
    reply = await bob.request("publish", topic="chat.main", kwargs={"message": "hi from js"})
    assert reply["event"] == "published", reply
    topic, kwargs, details = await alice.next()
    assert (topic, kwargs) == ("chat.main", {"message": "hi from js"})
    assert (details.publisher, details.publisher_authid, details.publisher_authrole) == \
        (bob.details["session"], B, "user")

    # Python -> JS; a spoofed "System" is still disclosed as alice
    await alice.publish("chat.main", options=PublishOptions(acknowledge=True),
                        **{"from": "System", "message": "hi from py"})
    assert await bob.next_event() == {
        "event": "event", "topic": "chat.main", "args": [],
        "kwargs": {"from": "System", "message": "hi from py"},
        "publisher": alice.details.session, "publisher_authid": A, "publisher_authrole": "user"}

    # the JS user's status, broadcast to the Python user (and to itself on chat.main)
    reply = await bob.request("call", procedure="rpc.activity.set_status", args=["busy"])
    assert reply == {"event": "result", "id": reply["id"],
                     "result": {"status": "ok", "new_status": "busy"}}
    assert sorted(await alice.texts(2)) == [("activity.on_status", None, "busy"),
                                            ("chat.main", "System", f"{B} is now busy")]
    assert without_publisher_session(await bob.next_event()) == system_event(f"{B} is now busy")
    reply = await bob.request("call", procedure="rpc.activity.set_status", args=["sleeping"])
    assert (reply["event"], reply["error"]) == ("error", "wampchat.error.invalid_status")

    # the Python user leaves: the JS user sees it; comes back: joined again
    alice.leave()
    await within(alice.disconnected)
    assert without_publisher_session(await bob.next_event()) == \
        system_event(f"{A} has left the chat.")
    alice = await chat.connect("alice", topics=("chat.main", "activity.on_status"))
    assert await alice.texts(1) == [("chat.main", "System", f"Welcome {A}")]
    assert without_publisher_session(await bob.next_event()) == \
        system_event(f"{A} has joined the chat.")

    # the JS user leaves: the Python user sees left and offline, and nothing else
    await bob.leave()
    events = {}
    for _ in range(2):
        topic, kwargs, details = await alice.next()
        events[topic] = kwargs
    assert events == {
        "chat.main": {"from": "System", "message": f"{B} has left the chat."},
        "activity.on_status": {"authid": B, "session": bob.details["session"],
                               "status": "offline"}}
    await alice.quiet()
    assert bob.pending() == []


@pytest_twisted.ensureDeferred
async def test_js_user_abrupt_disconnect_is_left(chat):
    """The Node process dies (no GOODBYE): left is announced after the grace."""
    alice = await chat.connect("alice")
    bob = await chat.connect_js("bob")
    await alice.texts(2)
    bob.abort()
    await bob.ended()
    assert await alice.texts(1) == [("chat.main", "System", f"{B} has left the chat.")]
    await alice.quiet()


DROPPED = 'wampchat_messages_dropped_total{reason="payload_too_large"}'
LIMIT = 16384           # max_payload of chat.main in crossbar-like.yaml
ENVELOPE = len('[[],{"message":""}]')     # how the router measures args + kwargs (JSON)


@pytest_twisted.ensureDeferred
async def test_payload_over_the_limit_is_refused_or_dropped(chat):
    alice = await chat.connect("alice")
    bob = await chat.connect("bob")
    await alice.texts(2)
    await bob.texts(1)
    at_limit = "a" * (LIMIT - ENVELOPE)
    over = "o" * (LIMIT - ENVELOPE + 1)
    await alice.publish("chat.main", options=PublishOptions(acknowledge=True), message=at_limit)
    assert await bob.texts(1) == [("chat.main", A, at_limit)]

    with pytest.raises(ApplicationError) as refused:
        await alice.publish("chat.main", options=PublishOptions(acknowledge=True), message=over)
    assert refused.value.error == "wampchat.error.payload_too_large"
    assert await chat.metric(DROPPED) == 1

    alice.publish("chat.main", message=over)            # unacknowledged: no answer at all
    await alice.publish("chat.main", options=PublishOptions(acknowledge=True), message="after")
    assert await bob.texts(1) == [("chat.main", A, "after")]
    assert await chat.metric(DROPPED) == 2
    await bob.quiet()
    for _ in range(50):             # history is recorded on a later turn
        history = await bob.call("chat.history", "chat.main")
        if len(history) >= 2:
            break
        await sleep(0.05)
    assert [m["message"] for m in history] == [at_limit, "after"]


@pytest_twisted.ensureDeferred
async def test_chat_service_joining_late_counts_present_users_silently(chat_without_service):
    """Users subscribed before the chat service (re)joins, as after a restart: the service,
    run as an external component over WebSocket with a service-account token, announces
    nothing for them, does not announce their next tab as a join, and does announce
    their leaving."""
    from wampchat.component_runner import build_component

    chat = chat_without_service
    alice = await chat.connect("alice", ready=False)
    bob = await chat.connect("bob", ready=False)
    issuer_url = chat.issuer.issuer
    component = build_component(
        "wampchat.services.chat.ChatService", f"ws://127.0.0.1:{chat.port}/ws", "wampchat",
        {"leave_grace": GRACE},
        {"WAMPCHAT_TOKEN_URL": f"{issuer_url}/protocol/openid-connect/token",
         "WAMPCHAT_CLIENT_ID": "wampchat-backend", "WAMPCHAT_CLIENT_SECRET": "wampchat-backend-secret"},
        reactor())
    done = component.start(reactor())
    try:
        await chat._services_ready(alice)
        bob_tab = await chat.connect("bob")
        assert await bob_tab.texts(1) == [("chat.main", "System", f"Welcome {B}")]
        await alice.quiet()                 # bob was present: no "joined"
        bob.leave()
        bob_tab.leave()
        assert await alice.texts(1) == [("chat.main", "System", f"{B} has left the chat.")]
        await alice.quiet()
    finally:
        await within(component.stop(), 10)
        await within(done, 10)
