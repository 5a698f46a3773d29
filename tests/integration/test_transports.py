"""The socket transports and the web site, end to end with real Autobahn clients."""

from __future__ import annotations

import gc
import json
import weakref

import pytest
import pytest_twisted
import treq
from autobahn.wamp.types import PublishOptions
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs

from wampchat.config_types import LimitsConfig, WebSocketOptions
from wampchat.transport.websocket import SHARED_SERIALIZERS

from .conftest import reactor, within

SERIALIZERS = ["json", "msgpack", "cbor"]
PROTOCOL_VIOLATION = "wamp.error.protocol_violation"


async def _connect(net, kind: str, port: int, serializer: str, **kwargs):
    if kind == "websocket":
        return await net.websocket(port, serializer, **kwargs)
    return await net.rawsocket(port, serializer, **kwargs)


def _collector():
    """A subscription handler and the Deferred-list of what it received."""
    received: list = []
    waiting: list[Deferred] = []

    def handler(*args, **kwargs):
        received.append((args, kwargs))
        # Swap first: a woken waiter may register a new Deferred for a later event.
        woken = waiting[:]
        waiting.clear()
        for d in woken:
            d.callback(None)

    async def wait_for(count: int):
        while len(received) < count:
            d = Deferred()
            waiting.append(d)
            await within(d)
        return received

    return handler, wait_for


@pytest.mark.parametrize("kind", ["websocket", "rawsocket"])
@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest_twisted.ensureDeferred
async def test_subscribe_publish_register_call(net, kind, serializer):
    """Each serializer on each transport does pub/sub and RPC through the router."""
    port = await net.listen("web" if kind == "websocket" else "rawsocket")
    subscriber = await _connect(net, kind, port, serializer)
    publisher = await _connect(net, kind, port, serializer, authmethods=["ticket"],
                               ticket="backend:svc")
    handler, wait_for = _collector()
    await subscriber.subscribe(handler, "room.one")
    await publisher.register(lambda a, b: {"sum": a + b, "bytes": b"\x00\x01"}, "math.add")

    await publisher.publish("room.one", "hi", n=1, options=PublishOptions(acknowledge=True))
    assert await wait_for(1) == [(("hi",), {"n": 1})]
    assert await subscriber.call("math.add", 2, 3) == {"sum": 5, "bytes": b"\x00\x01"}


@pytest_twisted.ensureDeferred
async def test_json_publisher_reaches_msgpack_and_cbor_subscribers(net):
    """One publication reaches subscribers of every serializer, over both transports."""
    web_port = await net.listen("web")
    raw_port = await net.listen("rawsocket")
    subscribers = [await net.websocket(web_port, "msgpack"), await net.websocket(web_port, "cbor"),
                   await net.rawsocket(raw_port, "cbor")]
    waits = []
    for subscriber in subscribers:
        handler, wait_for = _collector()
        await subscriber.subscribe(handler, "room.mixed")
        waits.append(wait_for)
    publisher = await net.websocket(web_port, "json")
    await publisher.publish("room.mixed", "hello", {"k": [1, 2]}, options=PublishOptions(acknowledge=True))
    for wait_for in waits:
        assert await wait_for(1) == [(("hello", {"k": [1, 2]}), {})]


@pytest_twisted.ensureDeferred
async def test_fan_out_serializes_the_event_once_per_serializer(net, monkeypatch):
    """N msgpack subscribers of one topic cost one msgpack serialization of the EVENT."""
    inner = SHARED_SERIALIZERS["msgpack"]._serializer
    original = inner.serialize
    event_serializations = []

    def counting(obj):
        if isinstance(obj, list) and obj and obj[0] == 36:      # EVENT
            event_serializations.append(obj)
        return original(obj)

    monkeypatch.setattr(inner, "serialize", counting)
    port = await net.listen("web")
    waits = []
    for _ in range(5):
        subscriber = await net.websocket(port, "msgpack")
        handler, wait_for = _collector()
        await subscriber.subscribe(handler, "room.fan")
        waits.append(wait_for)
    publisher = await net.websocket(port, "json")
    await publisher.publish("room.fan", "x", options=PublishOptions(acknowledge=True))
    for wait_for in waits:
        await wait_for(1)
    assert len(event_serializations) == 1


@pytest_twisted.ensureDeferred
async def test_malformed_json_before_welcome_gets_abort(net):
    """Garbage instead of HELLO: ABORT protocol_violation, then the WebSocket closes."""
    port = await net.listen("web")
    client = await net.raw_websocket(port)
    client.sendMessage(b"{not json", isBinary=False)
    abort = await client.next_json()
    assert abort[0] == 3 and abort[2] == PROTOCOL_VIOLATION
    assert await within(client.closed) == 1000
    assert net.router.metrics.registry.get_sample_value("wampchat_protocol_violations_total") == 1


@pytest_twisted.ensureDeferred
async def test_malformed_message_after_welcome_gets_goodbye(net):
    """A welcomed session sending an unparseable WAMP message gets GOODBYE protocol_violation."""
    port = await net.listen("web")
    client = await net.raw_websocket(port)
    client.sendMessage(json.dumps([1, "test", {"roles": {"subscriber": {}},
                                               "authmethods": ["anonymous"]}]).encode(), False)
    welcome = await client.next_json()
    assert welcome[0] == 2
    client.sendMessage(b'[32, "not-a-request-id", {}, "topic"]', isBinary=False)
    goodbye = await client.next_json()
    assert goodbye[0] == 6 and goodbye[2] == PROTOCOL_VIOLATION
    await within(client.closed)
    assert net.router.realm.sessions == {}


@pytest_twisted.ensureDeferred
async def test_fragmented_masked_messages_and_invalid_utf8(net):
    """Frames are unmasked, joined and validated by wsaccel's C code (autobahn_tuning):
    a HELLO in 7-byte fragments is welcomed; text that is not UTF-8 closes with 1007."""
    from autobahn.websocket import protocol as autobahn_protocol
    from wsaccel.xormask import createXorMasker

    assert autobahn_protocol.create_xor_masker is createXorMasker
    port = await net.listen("web")
    client = await net.raw_websocket(port)
    hello = json.dumps([1, "test", {"roles": {"caller": {}}, "authmethods": ["anonymous"],
                                    "authextra": {"name": "s\u00e9bastien \u2603 " * 20}}])
    client.sendMessage(hello.encode(), isBinary=False, fragmentSize=7)
    welcome = await client.next_json()
    assert welcome[0] == 2
    client.sendMessage(json.dumps([48, 1, {}, "wamp.session.count", []]).encode(), False,
                       fragmentSize=5)
    result = await client.next_json()
    assert result[0] == 50 and result[1] == 1 and result[3] == [1]
    bad = await net.raw_websocket(port)
    bad.sendMessage(b'[1, "test", {"x": "\xc3\x28"}]', isBinary=False)
    assert await within(bad.closed) == 1007
    assert len(net.router.realm.sessions) == 1


@pytest_twisted.ensureDeferred
async def test_binary_frame_on_json_subprotocol_is_a_violation(net):
    """wamp.2.json speaks text frames only: a binary frame ends the session with ABORT."""
    port = await net.listen("web")
    client = await net.raw_websocket(port)
    client.sendMessage(b"\x93\x01\x02\x03", isBinary=True)
    abort = await client.next_json()
    assert abort[0] == 3 and abort[2] == PROTOCOL_VIOLATION
    await within(client.closed)


@pytest_twisted.ensureDeferred
async def test_other_sessions_survive_a_violation(net):
    """One peer's garbage ends that peer only; a joined client keeps working."""
    port = await net.listen("web")
    survivor = await net.websocket(port, "cbor")
    client = await net.raw_websocket(port)
    client.sendMessage(b"\xff\xfe", isBinary=False)
    await within(client.closed)
    assert survivor.is_attached()
    assert await survivor.call("wamp.session.count") == 1


@pytest.mark.parametrize("compress", [False, True])
@pytest_twisted.ensureDeferred
async def test_oversize_message_is_refused_with_1009(net, compress):
    """A message over max_message_size closes with 1009, also when it is deflated small."""
    port = await net.listen("web", options=WebSocketOptions(auto_ping_interval=0,
                                                            max_message_size=1024))
    client = await net.raw_websocket(port, compress=compress)
    assert bool(client._perMessageCompress) == compress
    # 64 KiB of one character deflates to a few hundred bytes.
    client.sendMessage(b"[1," + b'"' + b"a" * 65536 + b'"]', isBinary=False)
    assert await within(client.closed) == 1009


@pytest_twisted.ensureDeferred
async def test_unknown_subprotocol_is_refused(net):
    """A WebSocket offering no WAMP subprotocol we speak is refused at the upgrade."""
    port = await net.listen("web")
    with pytest.raises(RuntimeError):
        await net.raw_websocket(port, subprotocol="wamp.2.ubjson")


@pytest_twisted.ensureDeferred
async def test_rawsocket_garbage_gets_abort(net):
    """RawSocket: an undecodable message before WELCOME gets ABORT protocol_violation."""
    port = await net.listen("rawsocket")
    peer = await net.raw_rawsocket(port, serializer_id=1)
    peer.send_frame(b"{nope")
    abort = json.loads(await peer.read_frame())
    assert abort[0] == 3 and abort[2] == PROTOCOL_VIOLATION
    await within(peer.lost)


@pytest_twisted.ensureDeferred
async def test_rawsocket_oversize_message_is_a_violation(net):
    """RawSocket: a message over max_message_size gets ABORT protocol_violation."""
    port = await net.listen("rawsocket", max_message_size=1024)
    peer = await net.raw_rawsocket(port, serializer_id=1)
    peer.send_frame(b'[1,"' + b"a" * 1500 + b'"]')
    abort = json.loads(await peer.read_frame())
    assert abort[0] == 3 and abort[2] == PROTOCOL_VIOLATION
    await within(peer.lost)


@pytest_twisted.ensureDeferred
async def test_bearer_header_authenticates_the_hello(net):
    """Authorization: Bearer reaches TransportInfo and logs in without a CHALLENGE."""
    port = await net.listen("web")
    client = await net.websocket(port, "json", authmethods=["anonymous"],
                                 headers={"Authorization": "Bearer user:alice"})
    assert (await client.call("wamp.session.get", client.session_id))["authid"] == "alice"
    info = net.router.hellos[-1].transport
    assert (info.kind, info.bearer_token) == ("websocket", "user:alice")
    assert info.peer.startswith("tcp4:127.0.0.1:")
    assert "authorization" not in {name.lower() for name in info.http_headers}


@pytest.mark.parametrize("allowed", [False, True])
@pytest_twisted.ensureDeferred
async def test_query_token_only_where_allowed(net, allowed):
    """?token= is a transport token only with allow_query_token."""
    port = await net.listen("web", options=WebSocketOptions(auto_ping_interval=0,
                                                            allow_query_token=allowed))
    await net.websocket(port, "json", authmethods=["anonymous"], query="?token=user:bob")
    info = net.router.hellos[-1].transport
    assert info.bearer_token == ("user:bob" if allowed else None)


@pytest_twisted.ensureDeferred
async def test_plain_websocket_transport_and_rawsocket_record_their_kind(net):
    """A `websocket` transport accepts any path; RawSocket sessions say kind rawsocket."""
    ws_port = await net.listen("websocket")
    raw_port = await net.listen("rawsocket")
    await net.websocket(ws_port, "msgpack", path="anything/here")
    await net.rawsocket(raw_port, "msgpack")
    assert [hello.transport.kind for hello in net.router.hellos] == ["websocket", "rawsocket"]


@pytest_twisted.ensureDeferred
async def test_healthz_and_metrics(net):
    """/healthz answers 200 ok; /metrics shows sessions, messages and logins."""
    port = await net.listen("web")
    client = await net.websocket(port, "json")
    await client.publish("room.metrics", options=PublishOptions(acknowledge=True))
    base = f"http://127.0.0.1:{port}"
    health = await within(treq.get(f"{base}/healthz", persistent=False))
    assert health.code == 200
    assert json.loads(await within(treq.content(health))) == {"status": "ok"}
    response = await within(treq.get(f"{base}/metrics", persistent=False))
    assert response.code == 200
    text = (await within(treq.content(response))).decode()
    assert 'wampchat_sessions{realm="test"} 1.0' in text
    assert 'wampchat_messages_received_total{type="hello"} 1.0' in text
    assert 'wampchat_messages_received_total{type="publish"} 1.0' in text
    assert 'wampchat_logins_total{outcome="accepted",reason="anonymous"} 1.0' in text


@pytest_twisted.ensureDeferred
async def test_root_serves_the_web_directory_or_a_placeholder(net, tmp_path):
    """/ serves index.html from the web directory; without one, a placeholder page."""
    (tmp_path / "index.html").write_text("<p>chat client</p>")
    with_dir = await net.listen("web", web_directory=str(tmp_path))
    without = await net.listen("web", web_directory=str(tmp_path / "missing"))
    page = await within(treq.get(f"http://127.0.0.1:{with_dir}/", persistent=False))
    assert (await within(treq.content(page))) == b"<p>chat client</p>"
    placeholder = await within(treq.get(f"http://127.0.0.1:{without}/", persistent=False))
    assert placeholder.code == 200 and b"wampchat" in await within(treq.content(placeholder))
    missing = await within(treq.get(f"http://127.0.0.1:{without}/nope", persistent=False))
    assert missing.code == 404
    await within(treq.content(missing))


@pytest_twisted.ensureDeferred
async def test_peer_errors_log_no_traceback(net):
    """Garbage, a binary frame and an oversize frame log warnings, never a failure."""
    port = await net.listen("web", options=WebSocketOptions(auto_ping_interval=0,
                                                            max_message_size=1024))
    with capturedLogs() as events:
        for payload, binary in [(b"{x", False), (b"\x00", True), (b"a" * 4096, False)]:
            client = await net.raw_websocket(port)
            client.sendMessage(payload, isBinary=binary)
            await within(client.closed)
    assert events, "the violations were not logged at all"
    assert [e for e in events if "log_failure" in e] == []
    assert all(e["log_level"].name in ("debug", "info", "warn") for e in events)


@pytest.mark.parametrize("kind", ["websocket", "rawsocket"])
@pytest_twisted.ensureDeferred
async def test_a_subscriber_that_does_not_read_is_ended_as_slow_consumer(net, kind):
    """Past outbound_buffer_bytes queued for a stalled peer, it is ended; others keep pace."""
    net.router.context.limits = LimitsConfig(outbound_buffer_bytes=256 * 1024)
    port = await net.listen("web" if kind == "websocket" else "rawsocket")
    hello = json.dumps([1, "test", {"roles": {"subscriber": {}}, "authmethods": ["anonymous"]}])
    if kind == "websocket":
        stalled = await net.raw_websocket(port)
        stalled.sendMessage(hello.encode(), False)
        assert (await stalled.next_json())[0] == 2
        stalled.sendMessage(b'[32, 1, {}, "room.flood"]', False)
        assert (await stalled.next_json())[0] == 33
    else:
        stalled = await net.raw_rawsocket(port)
        stalled.send_frame(hello.encode())
        assert json.loads(await stalled.read_frame())[0] == 2
        stalled.send_frame(b'[32, 1, {}, "room.flood"]')
        assert json.loads(await stalled.read_frame())[0] == 33
    stalled.transport.pauseProducing()          # stop reading: the kernel buffers fill up
    healthy = await net.websocket(port, "msgpack") if kind == "websocket" \
        else await net.rawsocket(port, "msgpack")
    handler, wait_for = _collector()
    await healthy.subscribe(handler, "room.flood")
    publisher = await net.websocket(port, "json") if kind == "websocket" \
        else await net.rawsocket(port, "json")
    count, chunk = 300, "x" * 65536             # ~19 MiB: more than the kernel buffers hold
    for n in range(count):
        publisher.publish("room.flood", n, chunk)
    await wait_for(count)
    assert len(net.router.realm.sessions) == 2  # the stalled subscriber is gone
    assert net.router.metrics.registry.get_sample_value(
        "wampchat_messages_dropped_total", {"reason": "slow_consumer"}) == 1


@pytest_twisted.ensureDeferred
async def test_slowloris_headers_are_cut_off_at_the_handshake_deadline(net):
    """A client dribbling header bytes is disconnected at open_handshake_timeout; others join."""
    from twisted.internet import protocol as tprotocol, task
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from tests.integration.conftest import RawSocketPeer, reactor

    port = await net.listen("web", options=WebSocketOptions(auto_ping_interval=0,
                                                            open_handshake_timeout=1.0))
    idle = await TCP4ClientEndpoint(reactor(), "127.0.0.1", port).connect(
        tprotocol.Factory.forProtocol(RawSocketPeer))           # connects, sends nothing
    dribbler = await TCP4ClientEndpoint(reactor(), "127.0.0.1", port).connect(
        tprotocol.Factory.forProtocol(RawSocketPeer))
    dribbler.transport.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    dribbled = 0
    while dribbled < 40 and not dribbler.lost.called:          # a header byte every 0.1 s
        dribbler.transport.write(b"X")
        dribbled += 1
        await task.deferLater(reactor(), 0.1, lambda: None)
    assert dribbler.lost.called, "still connected after 4 s of dribbling"
    await within(idle.lost, 5)
    # a WebSocket session lives on well past the deadline (the HTTP timers stand down)
    client = await net.websocket(port)
    await task.deferLater(reactor(), 1.5, lambda: None)
    assert await client.call("wamp.session.count") >= 1


@pytest_twisted.ensureDeferred
async def test_an_event_over_a_subscribers_message_size_is_dropped_for_it_only(net):
    """max_message_size also bounds what the router sends on that transport."""
    small = await net.listen("web", options=WebSocketOptions(auto_ping_interval=0,
                                                             max_message_size=2000))
    large = await net.listen("web")
    handler, wait_for = _collector()
    subscriber = await net.websocket(small, "json")
    await subscriber.subscribe(handler, "room.big")
    publisher = await net.websocket(large, "msgpack")
    await publisher.publish("room.big", "x" * 5000, options=PublishOptions(acknowledge=True))
    await publisher.publish("room.big", "small", options=PublishOptions(acknowledge=True))
    assert await wait_for(1) == [(("small",), {})]
    assert net.router.metrics.registry.get_sample_value(
        "wampchat_messages_dropped_total", {"reason": "message_too_large"}) == 1
    assert subscriber.is_attached()


@pytest_twisted.ensureDeferred
async def test_upgrade_on_a_connection_that_served_a_page_and_a_huge_request_line(net):
    """The upgrade dispatch in front of the Site: a keep-alive connection that first got
    /healthz can still upgrade (through the Site's WebSocket resource); a request line
    over 8 KiB is cut off."""
    import base64
    import os

    from twisted.internet import protocol as tprotocol
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from tests.integration.conftest import RawSocketPeer, reactor

    port = await net.listen("web")
    peer = await TCP4ClientEndpoint(reactor(), "127.0.0.1", port).connect(
        tprotocol.Factory.forProtocol(RawSocketPeer))
    peer.transport.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await peer.read_until(lambda buffer: b"\r\n\r\n" in buffer and buffer.rstrip().endswith(b"}"))
    assert peer.buffer.startswith(b"HTTP/1.1 200")
    peer.buffer = b""
    key = base64.b64encode(os.urandom(16))
    peer.transport.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
                         % (port, key))
    await peer.read_until(lambda buffer: b"\r\n\r\n" in buffer)
    assert peer.buffer.startswith(b"HTTP/1.1 101"), peer.buffer[:200]
    peer.transport.abortConnection()

    huge = await TCP4ClientEndpoint(reactor(), "127.0.0.1", port).connect(
        tprotocol.Factory.forProtocol(RawSocketPeer))
    huge.transport.write(b"GET /" + b"a" * 9000)
    await within(huge.lost)


@pytest.mark.parametrize("kind", ["websocket", "rawsocket"])
@pytest_twisted.ensureDeferred
async def test_a_closed_connection_is_freed_without_the_garbage_collector(net, kind):
    """Connection, session and guard go when the client leaves, not at a full collection
    (whose pause grows with every closed connection it has to walk)."""
    port = await net.listen("web" if kind == "websocket" else "rawsocket")
    client = await _connect(net, kind, port, "json")
    await client.subscribe(lambda *args: None, "room.freed")
    (session,) = net.router.realm.sessions.values()
    protocol = session.transport
    gone = [weakref.ref(protocol), weakref.ref(session), weakref.ref(protocol._guard)]
    del session, protocol
    gc.collect()
    gc.disable()
    try:
        client.leave()
        await within(client.disconnected)
        for _ in range(20):           # the router's side closes a moment later
            if all(ref() is None for ref in gone):
                break
            await _turn()
        assert [ref() for ref in gone] == [None, None, None]
    finally:
        gc.enable()


def _turn() -> Deferred:
    d: Deferred = Deferred()
    reactor().callLater(0.01, d.callback, None)
    return d
