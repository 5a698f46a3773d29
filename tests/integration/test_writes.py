"""The router's write path (wampchat.transport.writes) on real loopback TCP connections."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from wampchat.transport.writes import WRITES, send_now

from .conftest import RawSocketPeer, reactor, within


class _Accepted(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.accepted.callback(self.transport)


@pytest.fixture
def pair():
    """(server-side tcp transport, client reader) of one loopback connection, closed after."""
    made: dict = {"ports": [], "transports": []}

    async def connect():
        factory = protocol.Factory.forProtocol(_Accepted)
        factory.accepted = Deferred()
        port = await TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1").listen(factory)
        made["ports"].append(port)
        client = await TCP4ClientEndpoint(reactor(), "127.0.0.1", port.getHost().port,
                                          timeout=5).connect(
            protocol.Factory.forProtocol(RawSocketPeer))
        server = await within(factory.accepted)
        made["transports"] += [server, client.transport]
        return server, client

    yield connect
    for transport in made["transports"]:
        transport.abortConnection()
    for port in made["ports"]:
        port.stopListening()


def _queued(transport) -> int:
    """Bytes Twisted holds for transport (not yet given to the socket)."""
    return transport._tempDataLen + len(transport.dataBuffer) - transport.offset


def _unread(reader: RawSocketPeer) -> bytes:
    """What the kernel holds for reader, peeked without the reactor: b"" if nothing."""
    try:
        return reader.transport.socket.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


@pytest_twisted.ensureDeferred
async def test_outside_a_batch_a_frame_goes_straight_to_the_socket(pair):
    server, client = await pair()
    WRITES.write(server, b"hello")
    assert _queued(server) == 0 and server not in reactor().getWriters()
    assert await client.read(5) == b"hello"


@pytest_twisted.ensureDeferred
async def test_a_frame_goes_behind_what_twisted_still_holds(pair):
    server, client = await pair()
    server.write(b"first,")                  # Twisted's buffer: sent on the next reactor turn
    WRITES.write(server, b"second,")
    WRITES.handling(lambda frame: WRITES.write(server, frame), b"third")
    assert await client.read(18) == b"first,second,third"


@pytest_twisted.ensureDeferred
async def test_a_batch_sends_each_destination_its_frames_in_order_at_the_end(pair):
    (a, reader_a), (b, reader_b) = await pair(), await pair()

    def receive(data: bytes) -> None:
        for frame in data.split(b"|"):
            WRITES.write(a, frame)
        WRITES.write(b, b"other")
        # nothing before the end: not in Twisted's buffer, not on the wire either
        assert _queued(a) == 0 and _queued(b) == 0
        assert _unread(reader_a) == b"" and _unread(reader_b) == b""

    WRITES.handling(receive, b"one,|two,|three")
    assert _queued(a) == 0 and _queued(b) == 0
    assert await reader_a.read(13) == b"one,two,three"
    assert await reader_b.read(5) == b"other"


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.paused = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_a_full_socket_keeps_order_and_twisted_flow_control(pair):
    """The peer stops reading: part of a send goes out, the rest waits in Twisted's buffer,
    every later frame queues behind it, the producer is paused, and all of it arrives
    in order once the peer reads again."""
    server, client = await pair()
    producer = _Producer()
    server.registerProducer(producer, True)
    client.transport.pauseProducing()
    chunks = [bytes([n % 251]) * 65536 for n in range(128)]      # 8 MiB
    for index, chunk in enumerate(chunks):
        if index % 2:
            WRITES.write(server, chunk)
        else:
            WRITES.handling(lambda data: (WRITES.write(server, data[:100]),
                                          WRITES.write(server, data[100:])), chunk)
    assert _queued(server) > 0 and producer.paused >= 1
    client.transport.resumeProducing()
    received = await client.read(len(chunks) * 65536)        # each wait bounded
    assert received == b"".join(chunks)


@pytest_twisted.ensureDeferred
async def test_frames_for_an_aborted_connection_are_not_sent(pair):
    server, client = await pair()

    def receive(data: bytes) -> None:
        WRITES.write(server, data)
        server.abortConnection()

    WRITES.handling(receive, b"never")
    await within(client.lost)
    assert client.buffer == b""


def test_other_transports_get_a_plain_write():
    transport = StringTransport()
    send_now(transport, b"abc")

    def receive(data: bytes) -> None:
        WRITES.write(transport, data)
        assert transport.value() == b"abc"

    WRITES.handling(receive, b"def")
    assert transport.value() == b"abcdef"
