"""Hostile input against the shipped node over real WebSockets (issue 8 §4, targeted cases).

A raw WebSocket speaks WAMP JSON by hand, so a test can send what no Autobahn client
would: a second HELLO, a PUBLISH during the CHALLENGE, a payload 10,000 levels deep.
Roles and permissions are the shipped crossbar-like.yaml's; tokens come from the
development issuer.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from tests.integration.conftest import net, within  # noqa: F401 (fixture)
from tests.integration.dev_node import start_dev_node, stop_node
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)
from wampchat import errors

HELLO, WELCOME, ABORT, CHALLENGE, AUTHENTICATE, GOODBYE, ERROR = 1, 2, 3, 4, 5, 6, 8
PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT, CALL, RESULT = 16, 17, 32, 33, 36, 48, 50
ROLES = {"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}}


@pytest.fixture(scope="module")
def node(users_database):  # noqa: F811 (pytest fixture injection)
    port, issuer, runtime = start_dev_node(users_database, transform=_without_components)
    yield port, issuer, runtime
    stop_node(runtime)


def _without_components(config):
    from dataclasses import replace
    return replace(config, components=())     # no service sessions: exact event counts


class Peer:
    """A raw JSON WebSocket that logged in with a token; request ids are counted here."""

    def __init__(self, ws, session_id: int) -> None:
        self.ws = ws
        self.session = session_id
        self._request = 0

    def send(self, *msg) -> None:
        self.ws.sendMessage(json.dumps(list(msg)).encode(), isBinary=False)

    def request(self) -> int:
        self._request += 1
        return self._request

    async def next(self) -> list:
        return await self.ws.next_json()

    async def ask(self, kind: int, *rest) -> list:
        request = self.request()
        self.send(kind, request, *rest)
        reply = await self.next()
        while reply[0] == EVENT:                # events may cross the reply
            reply = await self.next()
        assert reply[2 if reply[0] == ERROR else 1] == request, reply
        return reply

    async def quiet(self) -> list:
        """What arrives within a short while (nothing, for a session that must see nothing)."""
        try:
            return [await within(self.ws.frames.get(), 0.3)]
        except Exception:
            return []


async def open_peer(net, port: int) -> object:  # noqa: F811
    return await net.raw_websocket(port)


async def join(net, port: int, token: str) -> Peer:  # noqa: F811
    ws = await open_peer(net, port)
    ws.sendMessage(json.dumps([HELLO, "wampchat", {"roles": ROLES, "authmethods": ["ticket"]}])
                   .encode(), isBinary=False)
    challenge = await ws.next_json()
    assert challenge[0] == CHALLENGE, challenge
    ws.sendMessage(json.dumps([AUTHENTICATE, token, {}]).encode(), isBinary=False)
    welcome = await ws.next_json()
    assert welcome[0] == WELCOME, welcome
    return Peer(ws, welcome[1])


@pytest_twisted.ensureDeferred
async def test_payload_nested_10000_deep_ends_only_that_session(node, net):  # noqa: F811
    port, issuer, _ = node
    attacker = await join(net, port, issuer.mint("alice"))
    bystander = await join(net, port, issuer.mint("bob"))
    deep = "[" * 10000 + "]" * 10000
    attacker.ws.sendMessage(f'[{PUBLISH}, 1, {{}}, "chat.main", [{deep}]]'.encode(), False)
    goodbye = await attacker.next()
    assert goodbye[0] == GOODBYE and goodbye[2] == errors.PROTOCOL_VIOLATION
    await within(attacker.ws.closed)
    reply = await bystander.ask(PUBLISH, {"acknowledge": True}, "chat.main", [], {"message": "hi"})
    assert reply[0] == PUBLISHED


@pytest_twisted.ensureDeferred
async def test_second_hello_after_welcome_is_a_violation(node, net):  # noqa: F811
    port, issuer, _ = node
    peer = await join(net, port, issuer.mint("alice"))
    peer.send(HELLO, "wampchat", {"roles": ROLES, "authmethods": ["ticket"]})
    goodbye = await peer.next()
    assert goodbye[0] == GOODBYE and goodbye[2] == errors.PROTOCOL_VIOLATION


@pytest_twisted.ensureDeferred
async def test_publish_while_the_challenge_is_pending_is_a_violation(node, net):  # noqa: F811
    port, issuer, _ = node
    ws = await open_peer(net, port)
    ws.sendMessage(json.dumps([HELLO, "wampchat", {"roles": ROLES, "authmethods": ["ticket"]}])
                   .encode(), isBinary=False)
    assert (await ws.next_json())[0] == CHALLENGE
    ws.sendMessage(json.dumps([PUBLISH, 1, {}, "chat.main", [], {"message": "sneaky"}]).encode(),
                   isBinary=False)
    abort = await ws.next_json()
    assert abort[0] == ABORT and abort[2] == errors.PROTOCOL_VIOLATION
    await within(ws.closed)


@pytest_twisted.ensureDeferred
async def test_meta_api_is_for_backend_only(node, net):  # noqa: F811
    """wamp.session.list must not show other users' sessions to a user."""
    port, issuer, _ = node
    user = await join(net, port, issuer.mint("alice"))
    for procedure in ("wamp.session.list", "wamp.session.get", "wamp.session.count",
                      "wamp.subscription.list", "wamp.registration.list",
                      "wamp.session.kill_by_authid"):
        reply = await user.ask(CALL, {}, procedure, [user.session])
        assert reply[0] == ERROR and reply[4] == errors.NOT_AUTHORIZED, (procedure, reply)
    reply = await user.ask(SUBSCRIBE, {}, "wamp.session.on_join")
    assert reply[0] == ERROR and reply[4] == errors.NOT_AUTHORIZED
    backend = await join(net, port, issuer.mint(issuer.backend_client_id,
                                                client_id=issuer.backend_client_id))
    reply = await backend.ask(CALL, {}, "wamp.session.list")
    assert reply[0] == RESULT and user.session in reply[3][0]


@pytest_twisted.ensureDeferred
async def test_pattern_subscriptions_reach_only_permitted_topics(node, net):  # noqa: F811
    port, issuer, _ = node
    user = await join(net, port, issuer.mint("alice"))
    for match, topic in (("prefix", "chat."), ("wildcard", "chat."), ("prefix", "")):
        reply = await user.ask(SUBSCRIBE, {"match": match}, topic)
        assert reply[0] == ERROR and reply[4] == errors.NOT_AUTHORIZED, (match, topic, reply)
    # A prefix on a URI the role may subscribe to is allowed, but reaches only what the
    # role may see: not chat.main.hidden (no permission row), however it was published.
    reply = await user.ask(SUBSCRIBE, {"match": "prefix"}, "chat.main")
    assert reply[0] == SUBSCRIBED
    backend = await join(net, port, issuer.mint(issuer.backend_client_id,
                                                client_id=issuer.backend_client_id))
    reply = await backend.ask(PUBLISH, {"acknowledge": True}, "chat.main.hidden", ["secret"])
    assert reply[0] == PUBLISHED
    assert await user.quiet() == []
    reply = await backend.ask(PUBLISH, {"acknowledge": True}, "chat.main", ["visible"])
    event = await user.next()
    assert event[0] == EVENT and event[4] == ["visible"]


@pytest_twisted.ensureDeferred
async def test_eligible_and_exclude_never_widen_delivery(node, net):  # noqa: F811
    port, issuer, _ = node
    alice = await join(net, port, issuer.mint("alice"))
    bob = await join(net, port, issuer.mint("bob"))
    admin = await join(net, port, issuer.mint("admin"))       # not subscribed to chat.main
    for peer in (bob,):
        assert (await peer.ask(SUBSCRIBE, {}, "chat.main"))[0] == SUBSCRIBED
    reply = await admin.ask(SUBSCRIBE, {}, "chat.admin")
    assert reply[0] == SUBSCRIBED
    # naming a session that is not a subscriber of the topic delivers nothing to it
    reply = await alice.ask(PUBLISH, {"acknowledge": True, "eligible": [admin.session]},
                            "chat.main", [], {"message": "to admin?"})
    assert reply[0] == PUBLISHED
    assert await admin.quiet() == [] and await bob.quiet() == []
    # exclude names the only subscriber: nobody gets it
    await alice.ask(PUBLISH, {"acknowledge": True, "exclude": [bob.session]}, "chat.main", [],
                    {"message": "not for bob"})
    assert await bob.quiet() == []
    # a user cannot publish into chat.admin by naming the admin as eligible
    reply = await alice.ask(PUBLISH, {"acknowledge": True, "eligible": [admin.session]},
                            "chat.admin", [], {"message": "x"})
    assert reply[0] == ERROR and reply[4] == errors.NOT_AUTHORIZED
    assert await admin.quiet() == []


@pytest.mark.parametrize("topic", ["chat..main", "chat main", "", "chat.#", "x" * 600])
@pytest_twisted.ensureDeferred
async def test_invalid_uris_get_invalid_uri(node, net, topic):  # noqa: F811
    port, issuer, _ = node
    user = await join(net, port, issuer.mint("alice"))
    reply = await user.ask(SUBSCRIBE, {}, topic)
    assert reply[0] == ERROR and reply[4] == errors.INVALID_URI, reply


@pytest_twisted.ensureDeferred
async def test_malformed_uris_that_autobahn_cannot_parse_are_answered(node, net):  # noqa: F811
    """URIs with spaces fail Autobahn's parser: the request still gets its ERROR."""
    port, issuer, _ = node
    user = await join(net, port, issuer.mint("alice"))
    reply = await user.ask(CALL, {}, "rpc.activity set_status", ["away"])
    assert reply[0] == ERROR and reply[1] == CALL and reply[4] == errors.INVALID_URI, reply
    user.send(PUBLISH, user.request(), {}, "chat main", ["unacknowledged: no answer"])
    reply = await user.ask(PUBLISH, {"acknowledge": True}, "chat main", [])
    assert reply[0] == ERROR and reply[1] == PUBLISH and reply[4] == errors.INVALID_URI, reply
    assert (await user.ask(SUBSCRIBE, {}, "chat.main"))[0] == SUBSCRIBED   # still served
    ws = await open_peer(net, port)
    ws.sendMessage(json.dumps([HELLO, "bad realm", {"roles": ROLES}]).encode(), isBinary=False)
    abort = await ws.next_json()
    assert abort[0] == ABORT and abort[2] == errors.INVALID_URI, abort
