"""Fixtures for the user tests: a real PostgreSQL per session, fresh databases, pools, helpers.

The server is DATABASE_URL when set, else an embedded pgserver started once for
the session. Tests work in databases with random names created here and
dropped afterwards, so they neither see nor leave other data.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import psycopg2
import pytest
import pytest_twisted
from psycopg2.extensions import make_dsn
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.logger import LogLevel, globalLogPublisher

from wampchat.dev.database import database_dsn_for_tests, endpoint_description, scratch_database
from wampchat.users.migrate import run_migrations
from wampchat.users.postgres import PostgresUserStore, make_pool


@dataclass(frozen=True)
class Identity:
    """Stands in for auth.tokens.Identity: the user directory only reads these fields."""

    sub: str
    email: str | None = None
    preferred_username: str | None = None
    roles: tuple[str, ...] = ("user",)


def query_rows(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of one query on its own blocking connection (test checks of what is stored)."""
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        connection.close()


def _reactor():
    # pytest-twisted installs the reactor at configure time; import it only once that ran.
    from twisted.internet import reactor
    return reactor


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """DSN of a PostgreSQL server where the tests may create databases."""
    with database_dsn_for_tests() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def users_database(postgres_server) -> str:
    """DSN of a migrated database shared by the session (tests use unique keycloak ids)."""
    with scratch_database(postgres_server) as dsn:
        pytest_twisted.blockon(Deferred.fromCoroutine(run_migrations(_reactor(), dsn)))
        yield dsn


@pytest.fixture
def fresh_database(postgres_server) -> str:
    """DSN of an empty database of this test's own."""
    with scratch_database(postgres_server) as dsn:
        yield dsn


def _started_pool(dsn: str, size: int):
    pool = make_pool(_reactor(), dsn, size=size)
    assert pytest_twisted.blockon(pool.start())
    yield pool
    pool.close()


@pytest.fixture
def pg_pool(users_database):
    """A started pool of 5 connections on the migrated database."""
    yield from _started_pool(users_database, 5)


@pytest.fixture
def one_connection(users_database):
    """A started pool of one connection: queries queue, and session state is the same."""
    yield from _started_pool(users_database, 1)


@pytest.fixture
def pg_store(pg_pool) -> PostgresUserStore:
    return PostgresUserStore(pg_pool)


@pytest.fixture(autouse=True)
def no_logged_errors():
    """Fail a test that logs an error: unhandled Deferred failures, reactor tracebacks, ..."""
    errors = []

    def observe(event):
        if event.get("log_level") in (LogLevel.error, LogLevel.critical) or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    yield errors
    gc.collect()    # a garbage Deferred with a failure logs "Unhandled error" when collected
    globalLogPublisher.removeObserver(observe)
    assert [e.get("log_format") or e.get("log_text") for e in errors] == []


class _Pipe(protocol.Protocol):
    """One side of a proxied connection; `peer` is the other side."""

    peer = None

    def dataReceived(self, data: bytes) -> None:
        self.peer.transport.write(data)

    def connectionLost(self, reason) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _Front(_Pipe):
    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.factory.proxy.fronts.add(self)
        back = protocol.Factory.forProtocol(_Pipe)
        clientFromString(self.factory.proxy.reactor, self.factory.proxy.target).connect(back) \
            .addCallbacks(self._connected, lambda _: self.transport.abortConnection())

    def _connected(self, back: _Pipe) -> None:
        self.peer, back.peer = back, self
        self.transport.resumeProducing()

    def connectionLost(self, reason) -> None:
        self.factory.proxy.fronts.discard(self)
        super().connectionLost(reason)


class TcpProxy:
    """A TCP proxy in front of PostgreSQL that a test can take down and bring back."""

    def __init__(self, reactor, target: str) -> None:
        self.reactor = reactor
        self.target = target           # Twisted client endpoint string of the real server
        self.port = 0                  # chosen at the first start, kept for restarts
        self.fronts: set[_Front] = set()
        self._listening = None

    @property
    def listening(self) -> bool:
        return self._listening is not None

    def start(self) -> None:
        factory = protocol.Factory.forProtocol(_Front)
        factory.proxy = self
        self._listening = self.reactor.listenTCP(self.port, factory, interface="127.0.0.1")
        self.port = self._listening.getHost().port

    def stop(self) -> Deferred:
        """Refuse new connections and reset the open ones, like a crashed server."""
        for front in list(self.fronts):
            front.transport.abortConnection()
            if front.peer is not None:
                front.peer.transport.abortConnection()
        listening, self._listening = self._listening, None
        return listening.stopListening()

    def dsn(self, dsn: str) -> str:
        """`dsn` redirected through this proxy."""
        return make_dsn(dsn, host="127.0.0.1", port=self.port)


@pytest.fixture
def proxy(users_database):
    """A started TcpProxy to the session's server; stopped at the end."""
    proxy = TcpProxy(_reactor(), endpoint_description(users_database))
    proxy.start()
    yield proxy
    if proxy.listening:
        pytest_twisted.blockon(proxy.stop())
