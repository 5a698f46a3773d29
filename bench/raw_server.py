"""The ceiling: a raw Autobahn WebSocket server speaking just enough WAMP JSON for the bench.

No realms, no authentication, no authorization, no meta API: HELLO gets WELCOME at
once, SUBSCRIBE/REGISTER are acknowledged, a PUBLISH becomes one EVENT frame prepared
once (``factory.prepareMessage``) and sent to every subscriber of that exact topic with
``sendPreparedMessage``, a CALL becomes an INVOCATION to the one callee of that exact
procedure and its YIELD becomes the RESULT. Served like the router's web transport:
WebSocket at ``/ws`` and ``/healthz`` on one twisted.web Site, with the same auto-ping
and message size limit as the router's defaults.

    python -m bench.raw_server --port 8081
"""

from __future__ import annotations

import argparse
import itertools
import sys

try:                                    # the fastest JSON codec at hand: this is the ceiling
    import ujson as json_codec
except ImportError:                     # pragma: no cover
    import json as json_codec

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

HELLO, WELCOME, GOODBYE, ERROR = 1, 2, 6, 8
PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = 16, 17, 32, 33, 36
CALL, RESULT, REGISTER, REGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 68, 70

WELCOME_DETAILS = {"roles": {"broker": {"features": {}}, "dealer": {"features": {}}},
                   "authid": "bench", "authrole": "bench", "authmethod": "anonymous"}


def _encode(message: list) -> bytes:
    return json_codec.dumps(message, ensure_ascii=False).encode("utf8")


class RawState:
    """Routing tables of the whole server (exact URIs only)."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.subscription_by_topic: dict[str, int] = {}              # topic -> subscription id
        self.subscribers_by_topic: dict[str, set[RawWampProtocol]] = {}  # topic -> subscriber protocols
        self.callee_by_procedure: dict[str, tuple[RawWampProtocol, int]] = {}  # uri -> (callee, registration id)
        self.pending_calls: dict[int, tuple[RawWampProtocol, int]] = {}  # invocation id -> (caller, request id)


class RawWampProtocol(WebSocketServerProtocol):
    """One client: a handler per WAMP message type, no checks beyond what routing needs."""

    def onConnect(self, request):
        if "wamp.2.json" not in request.protocols:
            from autobahn.websocket.types import ConnectionDeny
            raise ConnectionDeny(ConnectionDeny.NOT_ACCEPTABLE, "only wamp.2.json")
        self.routes: RawState = self.factory.routes
        self.topics: set[str] = set()          # topics this client subscribed to
        self.procedures: set[str] = set()      # procedures this client registered
        return "wamp.2.json"

    def onMessage(self, payload, isBinary):
        message = json_codec.loads(payload)
        handler = HANDLERS.get(message[0])
        if handler is not None:
            handler(self, message)

    def send(self, message: list) -> None:
        self.sendMessage(_encode(message))

    def on_hello(self, message):
        self.send([WELCOME, next(self.routes.ids), WELCOME_DETAILS])

    def on_goodbye(self, message):
        self.send([GOODBYE, {}, "wamp.close.goodbye_and_out"])
        self.sendClose(1000)

    def on_subscribe(self, message):
        _, request_id, _options, topic = message[:4]
        routes = self.routes
        subscription_id = routes.subscription_by_topic.get(topic)
        if subscription_id is None:
            subscription_id = routes.subscription_by_topic[topic] = next(routes.ids)
            routes.subscribers_by_topic[topic] = set()
        routes.subscribers_by_topic[topic].add(self)
        self.topics.add(topic)
        self.send([SUBSCRIBED, request_id, subscription_id])

    def on_publish(self, message):
        request_id, options, topic = message[1], message[2], message[3]
        routes = self.routes
        publication_id = next(routes.ids)
        subscribers = routes.subscribers_by_topic.get(topic)
        if subscribers:
            event = [EVENT, routes.subscription_by_topic[topic], publication_id, {}]
            event.extend(message[4:6])
            prepared = self.factory.prepareMessage(_encode(event))
            for subscriber in subscribers:
                if subscriber is not self:          # exclude_me
                    subscriber.sendPreparedMessage(prepared)
        if options.get("acknowledge"):
            self.send([PUBLISHED, request_id, publication_id])

    def on_register(self, message):
        _, request_id, _options, procedure = message[:4]
        routes = self.routes
        if procedure in routes.callee_by_procedure:
            self.send([ERROR, REGISTER, request_id, {}, "wamp.error.procedure_already_exists"])
            return
        registration_id = next(routes.ids)
        routes.callee_by_procedure[procedure] = (self, registration_id)
        self.procedures.add(procedure)
        self.send([REGISTERED, request_id, registration_id])

    def on_call(self, message):
        request_id, procedure = message[1], message[3]
        routes = self.routes
        target = routes.callee_by_procedure.get(procedure)
        if target is None:
            self.send([ERROR, CALL, request_id, {}, "wamp.error.no_such_procedure"])
            return
        callee, registration_id = target
        invocation_id = next(routes.ids)
        routes.pending_calls[invocation_id] = (self, request_id)
        invocation = [INVOCATION, invocation_id, registration_id, {}]
        invocation.extend(message[4:6])
        callee.send(invocation)

    def on_yield(self, message):
        pending = self.routes.pending_calls.pop(message[1], None)
        if pending is None:
            return
        caller, request_id = pending
        result = [RESULT, request_id, {}]
        result.extend(message[3:5])
        caller.send(result)

    def onClose(self, wasClean, code, reason):
        routes = getattr(self, "routes", None)
        if routes is None:
            return
        for topic in self.topics:
            routes.subscribers_by_topic.get(topic, set()).discard(self)
        for procedure in self.procedures:
            routes.callee_by_procedure.pop(procedure, None)
        for invocation_id in [i for i, (caller, _) in routes.pending_calls.items() if caller is self]:
            del routes.pending_calls[invocation_id]


# message type -> handler
HANDLERS = {
    HELLO: RawWampProtocol.on_hello,
    GOODBYE: RawWampProtocol.on_goodbye,
    SUBSCRIBE: RawWampProtocol.on_subscribe,
    PUBLISH: RawWampProtocol.on_publish,
    REGISTER: RawWampProtocol.on_register,
    CALL: RawWampProtocol.on_call,
    YIELD: RawWampProtocol.on_yield,
}


def build_site(port: int) -> Site:
    """`/ws` (the raw WAMP server) and `/healthz` on one site, like the router's web transport."""
    factory = WebSocketServerFactory(f"ws://127.0.0.1:{port}/ws", protocols=["wamp.2.json"])
    factory.protocol = RawWampProtocol
    factory.routes = RawState()
    factory.setProtocolOptions(autoPingInterval=10.0, autoPingTimeout=5.0,
                               maxMessagePayloadSize=1048576, maxFramePayloadSize=1048576)
    root = Resource()
    root.putChild(b"ws", WebSocketResource(factory))
    root.putChild(b"healthz", Data(b"ok\n", "text/plain"))
    site = Site(root)
    site.noisy = False
    return site


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args(argv)
    from twisted.internet import reactor
    listening = reactor.listenTCP(args.port, build_site(args.port), interface=args.interface,
                                  backlog=1024)
    print(f"raw server listening on {args.interface}:{listening.getHost().port}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
