"""The Prometheus metrics of one node, served as text at /metrics.

``Metrics`` owns its own ``CollectorRegistry`` (never the process-global one), so
a test can build several nodes in one process. It is the router's
``SessionObserver`` (messages by type, login outcomes, drops, protocol
violations), counts sessions per realm, and offers hooks for the JWKS cache and
the database pool. Messages received are counted in a plain dict (one increment of
a Python int per message: prometheus_client's counters take a lock on every
``inc()``) and turned into the ``wampchat_messages_received_total`` counter when
/metrics is scraped.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from autobahn.wamp.serializer import Serializer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily

from wampchat.router.session import SessionObserver

# PoolState fields shown as wampchat_db_pool_connections{state=...}.
POOL_STATES = ("connected", "total", "failed_attempts")


def _message_kind(cls: type) -> str:
    """The label of a message class: "publish", "call", ..."""
    return cls.__name__.lower()


class Metrics(SessionObserver):
    """Counters and gauges of one node, in a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        # message class -> how many were received (the hot path: no lock, no label lookup)
        self._received: dict[type, int] = dict.fromkeys(Serializer.MESSAGE_TYPE_MAP.values(), 0)
        reg.register(_ReceivedCollector(self._received))
        self.logins = Counter(
            "wampchat_logins", "Login outcomes (accepted/refused) by reason or authmethod",
            ["outcome", "reason"], registry=reg)
        self.messages_dropped = Counter(
            "wampchat_messages_dropped", "Messages the router did not deliver, by reason",
            ["reason"], registry=reg)
        self.calls_interrupted = Counter(
            "wampchat_calls_interrupted", "Calls ended without their callee's answer, by reason "
            "(callee_left, caller_left, timeout, canceled, shutdown)", ["reason"], registry=reg)
        self._interrupted_children: dict[str, Any] = {}
        self.protocol_violations = Counter(
            "wampchat_protocol_violations", "Sessions ended for breaking the WAMP protocol",
            registry=reg)
        self.sessions = Gauge(
            "wampchat_sessions", "Welcomed sessions, by realm", ["realm"], registry=reg)
        self.jwks_fetches = Counter(
            "wampchat_jwks_fetches", "JWKS fetches from the identity provider, by outcome",
            ["outcome"], registry=reg)
        self.jwks_key_age_seconds = Gauge(
            "wampchat_jwks_key_age_seconds",
            "Seconds since the oldest cached JWKS was fetched (NaN before the first fetch)",
            registry=reg)
        self.db_pool_connections = Gauge(
            "wampchat_db_pool_connections", "Database pool connections, by state",
            ["state"], registry=reg)
        # (outcome, reason) -> bound counter child; reasons are a small, stable set
        self._login_children: dict[tuple[str, str], Any] = {}
        # reason -> bound counter child
        self._dropped_children: dict[str, Any] = {}
        # JWKS caches watched for key age: objects with age() -> seconds | None
        self._jwks_caches: list[Any] = []
        self.jwks_key_age_seconds.set_function(self._oldest_key_age)

    # -- SessionObserver ----------------------------------------------------------------

    def message_received(self, msg: Any) -> None:
        kind = type(msg)
        received = self._received
        if kind in received:
            received[kind] += 1
        else:                   # a class outside WAMP's table (e.g. an unparsable request)
            received[kind] = 1

    def login(self, outcome: str, reason: str) -> None:
        key = (outcome, reason)
        child = self._login_children.get(key)
        if child is None:
            child = self._login_children[key] = self.logins.labels(outcome, reason)
        child.inc()

    def dropped(self, reason: str) -> None:
        child = self._dropped_children.get(reason)
        if child is None:
            child = self._dropped_children[reason] = self.messages_dropped.labels(reason)
        child.inc()

    def protocol_violation(self) -> None:
        self.protocol_violations.inc()

    # -- what the node and other modules register ---------------------------------------

    def watch_realm(self, realm: Any) -> None:
        """Report len(realm.sessions) as wampchat_sessions{realm=...}, read at scrape time,
        and count the realm's calls ended without their callee's answer."""
        self.sessions.labels(realm.name).set_function(lambda: len(realm.sessions))
        realm.dealer.on_call_interrupted = self.call_interrupted

    def call_interrupted(self, reason: str) -> None:
        child = self._interrupted_children.get(reason)
        if child is None:
            child = self._interrupted_children[reason] = self.calls_interrupted.labels(reason)
        child.inc()

    def jwks_fetched(self, outcome: str) -> None:
        """The JwksCache ``on_fetch`` hook: outcome "ok" or "error"."""
        self.jwks_fetches.labels(outcome).inc()

    def watch_jwks(self, cache: Any) -> None:
        """Include cache.age() (seconds or None) in wampchat_jwks_key_age_seconds."""
        self._jwks_caches.append(cache)

    def watch_pool(self, state: Callable[[], Any]) -> None:
        """Report a pool's state() (connected, total, failed_attempts) at scrape time."""
        def field(name: str) -> Callable[[], float]:
            return lambda: float(getattr(state(), name))

        for name in POOL_STATES:
            self.db_pool_connections.labels(name).set_function(field(name))

    def gauge(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
        """A new gauge in this node's registry (for modules with metrics of their own)."""
        return Gauge(name, documentation, list(labels), registry=self.registry)

    def counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
        """A new counter in this node's registry."""
        return Counter(name, documentation, list(labels), registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything in the registry."""
        return generate_latest(self.registry)

    def _oldest_key_age(self) -> float:
        ages = [age for age in (cache.age() for cache in self._jwks_caches) if age is not None]
        return max(ages) if ages else math.nan


class _ReceivedCollector:
    """wampchat_messages_received_total{type=...}, read from the counting dict at scrape time."""

    def __init__(self, received: dict[type, int]) -> None:
        self._received = received

    def collect(self):
        family = CounterMetricFamily("wampchat_messages_received",
                                     "WAMP messages received, by message type", labels=["type"])
        for kind, count in list(self._received.items()):
            family.add_metric([_message_kind(kind)], count)
        yield family

    def describe(self):
        return []
