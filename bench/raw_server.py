"""The ceiling: a raw Autobahn WebSocket server speaking just enough WAMP JSON for the bench.

No realms, no authorization, no meta API, no database: with ``--jwks-url`` HELLO gets
CHALLENGE ticket and AUTHENTICATE one RS256 verification of the token (PyJWT, keys
fetched once at start) before WELCOME; without it HELLO gets WELCOME at once.
SUBSCRIBE/REGISTER are acknowledged, a PUBLISH becomes one EVENT frame prepared once
per serializer (``factory.prepareMessage``) and sent to every subscriber of that exact
topic with ``sendPreparedMessage``, a CALL becomes an INVOCATION to the one callee of
that exact procedure and its YIELD becomes the RESULT. JSON (ujson) and MessagePack.
Served like the router's web transport: WebSocket at ``/ws`` and ``/healthz`` on one
twisted.web Site, with the same auto-ping and message size limit as the router's defaults.

    python -m bench.raw_server --port 8081 [--jwks-url URL --issuer URL]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import urllib.request

try:                                    # the fastest JSON codec at hand: this is the ceiling
    import ujson as json_codec
except ImportError:                     # pragma: no cover
    import json as json_codec

import jwt
import msgpack
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

HELLO, WELCOME, ABORT, CHALLENGE, AUTHENTICATE, GOODBYE, ERROR = 1, 2, 3, 4, 5, 6, 8
PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = 16, 17, 32, 33, 36
CALL, RESULT, REGISTER, REGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 68, 70

WELCOME_DETAILS = {"roles": {"broker": {"features": {}}, "dealer": {"features": {}}},
                   "authid": "bench", "authrole": "bench", "authmethod": "anonymous"}


def _encode(message: list) -> bytes:
    return json_codec.dumps(message, ensure_ascii=False).encode("utf8")


# subprotocol -> (encode, decode, binary frames)
SERIALIZERS = {
    "wamp.2.json": (_encode, json_codec.loads, False),
    "wamp.2.msgpack": (msgpack.packb, msgpack.unpackb, True),
}


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
        protocol = next((p for p in request.protocols if p in SERIALIZERS), None)
        if protocol is None:
            from autobahn.websocket.types import ConnectionDeny
            raise ConnectionDeny(ConnectionDeny.NOT_ACCEPTABLE, "only wamp.2.json, wamp.2.msgpack")
        self.protocol_name = protocol
        self.encode, self.decode, self.binary = SERIALIZERS[protocol]
        self.routes: RawState = self.factory.routes
        self.topics: set[str] = set()          # topics this client subscribed to
        self.procedures: set[str] = set()      # procedures this client registered
        return protocol

    def onMessage(self, payload, isBinary):
        message = self.decode(payload)
        handler = HANDLERS.get(message[0])
        if handler is not None:
            handler(self, message)

    def send(self, message: list) -> None:
        self.sendMessage(self.encode(message), self.binary)

    def on_hello(self, message):
        if self.factory.jwt_keys is None:
            self.send([WELCOME, next(self.routes.ids), WELCOME_DETAILS])
        else:
            self.send([CHALLENGE, "ticket", {}])

    def on_authenticate(self, message):
        """One RS256 verification of the token against the keys fetched at start."""
        token = message[1]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            claims = jwt.decode(token, self.factory.jwt_keys[kid], algorithms=["RS256"],
                                issuer=self.factory.issuer, options={"verify_aud": False})
        except (jwt.PyJWTError, KeyError, TypeError):
            self.send([ABORT, {}, "wamp.error.authentication_failed"])
            self.sendClose(1000)
            return
        details = dict(WELCOME_DETAILS, authid=claims.get("email") or claims["sub"],
                       authrole="user", authmethod="ticket")
        self.send([WELCOME, next(self.routes.ids), details])

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
            prepared = {}                           # subprotocol -> frame, made once each
            for subscriber in subscribers:
                if subscriber is not self:          # exclude_me
                    frame = prepared.get(subscriber.protocol_name)
                    if frame is None:
                        frame = prepared[subscriber.protocol_name] = self.factory.prepareMessage(
                            subscriber.encode(event), subscriber.binary)
                    subscriber.sendPreparedMessage(frame)
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
    AUTHENTICATE: RawWampProtocol.on_authenticate,
    GOODBYE: RawWampProtocol.on_goodbye,
    SUBSCRIBE: RawWampProtocol.on_subscribe,
    PUBLISH: RawWampProtocol.on_publish,
    REGISTER: RawWampProtocol.on_register,
    CALL: RawWampProtocol.on_call,
    YIELD: RawWampProtocol.on_yield,
}


def fetch_keys(jwks_url: str) -> dict:
    """kid -> RSA public key, fetched once before the reactor runs."""
    with urllib.request.urlopen(jwks_url, timeout=10) as response:
        document = json.loads(response.read())
    return {jwk["kid"]: jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
            for jwk in document.get("keys", []) if jwk.get("kty") == "RSA"}


def build_site(port: int, jwt_keys: dict | None = None, issuer: str | None = None) -> Site:
    """`/ws` (the raw WAMP server) and `/healthz` on one site, like the router's web transport."""
    factory = WebSocketServerFactory(f"ws://127.0.0.1:{port}/ws", protocols=list(SERIALIZERS))
    factory.protocol = RawWampProtocol
    factory.routes = RawState()
    factory.jwt_keys = jwt_keys
    factory.issuer = issuer
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
    parser.add_argument("--jwks-url", help="ticket auth: verify tokens with these keys")
    parser.add_argument("--issuer", help="with --jwks-url: the expected iss claim")
    args = parser.parse_args(argv)
    keys = fetch_keys(args.jwks_url) if args.jwks_url else None
    from twisted.internet import reactor
    listening = reactor.listenTCP(args.port, build_site(args.port, keys, args.issuer),
                                  interface=args.interface, backlog=1024)
    print(f"raw server listening on {args.interface}:{listening.getHost().port}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
