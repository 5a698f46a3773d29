"""A txpostgres connection pool that rebuilds itself after an outage and never piles up queries.

Every query is asynchronous on the reactor (psycopg2 async connections polled
by txpostgres). txpostgres never reconnects on its own, so `ResilientPool`
wraps its `ConnectionPool`: when a connection dies it drops the whole pool,
refuses queries at once with `Unavailable` while the database is away, and
rebuilds it on a clock-driven backoff until the database answers again.

A slow database cannot pile up logins: every connection has a server-side
statement_timeout, connecting has a reactor-side deadline (psycopg2's async
connections ignore connect_timeout), and at most `max_waiting` queries wait for
a busy pool; beyond that, and past the deadline, callers get `Unavailable` at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Sequence

from psycopg2 import Error as DriverError, InterfaceError, OperationalError
from psycopg2.errorcodes import DUPLICATE_PREPARED_STATEMENT, INVALID_SQL_STATEMENT_NAME
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, FirstError, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from txpostgres.txpostgres import Connection, ConnectionPool

from wampchat.config_types import DatabaseConfig
from wampchat.errors import Unavailable
from wampchat.logs import Logger

log = Logger()


@dataclass(frozen=True)
class PoolState:
    """What /metrics shows of the pool: open connections out of `total`, and the outage."""

    connected: int
    total: int
    available: bool
    failed_attempts: int       # reconnection attempts failed since the database went away
    waiting: int = 0           # queries waiting for a free connection now


def reconnect_delay(failures: int, initial: float = 0.5, maximum: float = 30.0,
                    factor: float = 2.0) -> float:
    """Seconds to wait before the next rebuild after `failures` failed attempts (0, 1, ...)."""
    return min(maximum, initial * factor ** failures)


_TOO_LATE = "the user database did not answer in time"    # every deadline's refusal


class DeadlineExceeded(Exception):
    """The database did not answer within the deadline."""


def within(deferred: Deferred, seconds: float, clock) -> Deferred:
    """A Deferred with `deferred`'s result, or failing with DeadlineExceeded after `seconds`.

    Unlike `Deferred.addTimeout` it does not cancel `deferred`: cancelling a
    txpostgres query or connect can raise from inside the canceller. A result
    arriving late is dropped (a late failure is consumed, never "unhandled").
    """
    result: Deferred = Deferred()

    def expire() -> None:
        result.errback(DeadlineExceeded(f"no answer within {seconds:g}s"))

    timer = clock.callLater(seconds, expire)

    def settle(outcome):
        if not timer.active():
            return None
        timer.cancel()
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)
        return None

    deferred.addBoth(settle)
    return result


@dataclass(frozen=True)
class PreparedStatement:
    """A statement the server parses and plans once per connection, on its first use there.

    `sql` has psycopg2's %s placeholders. The first run on a connection sends
    PREPARE and EXECUTE together (one round trip); later runs send only
    EXECUTE. For a login's find-or-create this halved the server's CPU per
    statement (parse and plan of a CTE: 300 -> 200 us) and its latency.
    """

    name: str
    sql: str

    # Both texts are built once per statement, not at every run.
    @cached_property
    def execute(self) -> str:
        """EXECUTE with psycopg2 placeholders for the parameters."""
        return f"EXECUTE {self.name}({', '.join(['%s'] * self.sql.count('%s'))})"

    @cached_property
    def prepare_and_execute(self) -> str:
        """PREPARE (parameters $1..$n, types inferred by the server), then EXECUTE."""
        parts = self.sql.replace("%%", "%").split("%s")
        body = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
        return f"PREPARE {self.name} AS {body.replace('%', '%%')}; {self.execute}"


class _Connection(Connection):
    """A txpostgres Connection that reports its death to `on_lost` instead of to the reactor."""

    def __init__(self, reactor, cooperator=None,
                 on_lost: Callable[["_Connection"], None] | None = None) -> None:
        super().__init__(reactor, cooperator)
        self._on_lost = on_lost or (lambda connection: None)
        self.prepared: set[str] = set()          # names of statements prepared on it

    # The pool runs one statement at a time on a connection (it hands each query a
    # connection of its own), so these skip txpostgres' per-connection lock: two
    # Deferreds and a lock acquisition per statement.

    def rows(self, sql: str, params: tuple) -> Deferred:
        """Rows of one statement (runQuery without the lock)."""
        return self.cursor().execute(sql, params).addCallback(_fetchall)

    def operation(self, sql: str, params: tuple) -> Deferred:
        """One statement without rows (runOperation without the lock)."""
        return self.cursor().execute(sql, params).addCallback(_nothing)

    def run_prepared(self, statement: PreparedStatement, params: tuple) -> Deferred:
        """Rows of `statement`, prepared first if this connection has not done it yet."""
        if statement.name in self.prepared:
            return self.rows(statement.execute, params).addErrback(
                self._not_prepared, statement, params)
        return self.rows(statement.prepare_and_execute, params).addCallbacks(
            self._now_prepared, self._already_prepared,
            callbackArgs=(statement.name,), errbackArgs=(statement, params))

    def _now_prepared(self, rows, name: str):
        self.prepared.add(name)
        return rows

    def _already_prepared(self, failure: Failure, statement: PreparedStatement, params: tuple):
        # Prepared by a run whose answer was lost (a timed-out query): execute it.
        if getattr(failure.value, "pgcode", None) != DUPLICATE_PREPARED_STATEMENT:
            return failure
        self.prepared.add(statement.name)
        return self.rows(statement.execute, params)

    def _not_prepared(self, failure: Failure, statement: PreparedStatement, params: tuple):
        # Gone from the server session (DEALLOCATE ALL, DISCARD ALL, a pooler in between).
        if getattr(failure.value, "pgcode", None) != INVALID_SQL_STATEMENT_NAME:
            return failure
        self.prepared.discard(statement.name)
        return self.run_prepared(statement, params)

    def doRead(self) -> None:
        try:
            super().doRead()
        except DriverError:
            # The server closed an idle connection (shutdown, restart, terminated
            # backend). No query is waiting, so txpostgres would raise into the
            # reactor, which logs an unhandled error; the pool handles it instead.
            self._on_lost(self)
        except ValueError:
            # A connect that failed (reset by the peer) leaves libpq without a socket
            # while psycopg2 does not call the connection closed yet: txpostgres then
            # re-registers fd -1. Its connect Deferred has already failed.
            self._on_lost(self)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self._on_lost(self)


# For a connection of its own (migrations): never raises into the reactor.
QuietConnection = _Connection


class _MostRecentFirst:
    """The idle connections of a pool, handed out most recently returned first.

    txpostgres keeps them in a set, whose pop() cycles through all of them: at a
    low query rate every query then went to a backend idle since the previous
    round, which cost this process twice the CPU per statement (a first-time
    login's insert: 190 us against 110 us, measured with 5 connections). Taking
    the last one returned keeps as few backends busy as the load needs.
    """

    def __init__(self, connections) -> None:
        self._idle: list = list(connections)

    def pop(self):
        return self._idle.pop()

    def add(self, connection) -> None:
        if connection not in self._idle:
            self._idle.append(connection)

    def remove(self, connection) -> None:
        self._idle.remove(connection)

    def __iter__(self):
        return iter(list(self._idle))

    def __len__(self) -> int:
        return len(self._idle)


class _TxPool(ConnectionPool):
    """txpostgres' pool on a given reactor, whose connections report their death."""

    def __init__(self, reactor, size: int, dsn: str, connect_kwargs: dict,
                 on_lost: Callable[[_Connection], None]) -> None:
        # Set before ConnectionPool.__init__, which otherwise imports the global reactor.
        self.reactor = reactor
        self.connectionFactory = lambda reactor, cooperator: _Connection(reactor, cooperator, on_lost)
        super().__init__(None, dsn, min=size, **connect_kwargs)
        self.connections = _MostRecentFirst(self.connections)

    # ResilientPool admits at most `size` queries at once, so an idle connection is always
    # there: its queries skip txpostgres' semaphore (two Deferreds per statement).

    def runQuery(self, sql: str, params: tuple = ()) -> Deferred:
        return self._on_idle_connection(_Connection.rows, sql, params)

    def runOperation(self, sql: str, params: tuple = ()) -> Deferred:
        return self._on_idle_connection(_Connection.operation, sql, params)

    def runPrepared(self, statement: PreparedStatement, params: tuple) -> Deferred:
        """Like runQuery, for a statement prepared on each connection (txpostgres' naming)."""
        return self._on_idle_connection(_Connection.run_prepared, statement, params)

    def _on_idle_connection(self, method, *args) -> Deferred:
        connection = self.connections.pop()      # IndexError if admission let too many in
        # maybeDeferred: a connection closed under us raises from cursor(); it still goes
        # back (the pool's health check drops it) and the caller gets the failure.
        return maybeDeferred(method, connection, *args).addBoth(
            self._putBackAndPassthrough, connection)


def _fetchall(cursor) -> list[tuple]:
    return cursor.fetchall()


def _nothing(cursor) -> None:
    return None


def _is_open(connection: Connection) -> bool:
    raw = connection.pollable()      # the psycopg2 connection, None before connect()
    return raw is not None and not raw.closed


def _close_quietly(connection: Connection) -> None:
    if connection.pollable() is not None:
        connection.close()


class ResilientPool(Service):
    """A txpostgres ConnectionPool of `size` connections that reconnects by itself.

    `startService()`/`start()` begins connecting; queries before the first
    success or during an outage fail at once with `Unavailable`. `clock` drives
    the reconnection backoff and the deadlines (it may be a test `Clock`);
    `reactor` is where txpostgres polls its sockets and must be a real reactor.
    """

    def __init__(self, reactor, dsn: str, size: int = 5, statement_timeout_ms: int = 5000,
                 clock=None, connect_timeout: float = 5.0, query_timeout: float | None = None,
                 initial_delay: float = 0.5, max_delay: float = 30.0,
                 max_waiting: int = 100) -> None:
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._dsn = dsn
        self.size = size
        self._connect_timeout = connect_timeout
        # The server's statement_timeout fires first; this only catches a
        # connection that went silent (or a queue of waiters too long to serve).
        self._query_timeout = query_timeout or statement_timeout_ms / 1000 + 2.0
        self._initial_delay, self._max_delay = initial_delay, max_delay
        # Admission: at most `size` queries run (one per connection) and at most
        # `max_waiting` wait; txpostgres' own queue is unbounded and never gives up.
        self._max_waiting = max_waiting
        self._running = 0                            # queries on the current pool's connections
        self._waiting: deque[Deferred] = deque()     # callers waiting for a connection, FIFO
        self.peak_waiting = 0                        # most callers ever waiting at once
        self.refused_busy = 0                        # queries refused because the queue was full
        self._connect_kwargs = {
            # Sent in the startup packet: no extra round trip per connection.
            "options": f"-c statement_timeout={int(statement_timeout_ms)}",
            # A peer that vanished without closing is noticed in ~25 s.
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        self._pool: _TxPool | None = None           # current pool; None while down
        self._connections: set[_Connection] = set()  # every connection of the current pool
        self._building: _TxPool | None = None        # pool being connected by an attempt
        self._settle_waiters: list[Deferred] = []    # callers waiting for the attempt
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._closed = False

    # -- life cycle ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.start()

    def stopService(self):
        super().stopService()
        self.close()

    def start(self) -> Deferred:
        """Connect now unless connected or connecting; fires with `available` when settled."""
        if self._closed or self._pool is not None:
            return succeed(self._pool is not None)
        if self._building is None:
            if self._retry is not None and self._retry.active():
                self._retry.cancel()
            self._retry = None
            Deferred.fromCoroutine(self._attempt())
        return self.when_settled()

    def when_settled(self) -> Deferred:
        """Fires with `available` once no connection attempt is under way."""
        if self._building is None:
            return succeed(self._pool is not None)
        waiter: Deferred = Deferred()
        self._settle_waiters.append(waiter)
        return waiter

    def close(self) -> None:
        """Close every connection and stop reconnecting."""
        self._closed = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        building, self._building = self._building, None
        if building is not None:
            for connection in list(building.connections):
                _close_quietly(connection)
        self._drop_pool()

    @property
    def clock(self):
        """What the deadlines are measured by."""
        return self._clock

    @property
    def max_waiting(self) -> int:
        """How many queries may wait for a connection; more are refused at once."""
        return self._max_waiting

    def state(self) -> PoolState:
        """Connections open now, out of `size`; for the /metrics gauges."""
        connected = sum(1 for c in self._connections if _is_open(c))
        return PoolState(connected=connected, total=self.size,
                         available=self._pool is not None, failed_attempts=self._failures,
                         waiting=len(self._waiting))

    # -- queries ------------------------------------------------------------

    async def run_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of one statement in its own transaction.

        Raises `Unavailable` for any connection trouble or deadline, and lets
        the database's own refusals (psycopg2 IntegrityError, ...) through for
        the store to translate.
        """
        return await self._run(lambda pool: pool.runQuery(sql, tuple(params)))

    async def run_prepared(self, statement: PreparedStatement, params: Sequence[Any] = (),
                           since: float | None = None) -> list[tuple]:
        """Like `run_query`, with `statement` prepared once per connection. `since`: when
        the caller began to wait (clock seconds), if before this call: the deadline
        covers that wait too."""
        return await self._run(lambda pool: pool.runPrepared(statement, tuple(params)), since)

    async def run_operation(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Like `run_query`, for a statement without rows."""
        await self._run(lambda pool: pool.runOperation(sql, tuple(params)))

    async def _run(self, call: Callable[[ConnectionPool], Deferred], since: float | None = None):
        # One deadline for every wait (the caller's, for a connection) and the statement.
        started = self._clock.seconds() if since is None else since

        def left() -> float:
            return self._query_timeout - (self._clock.seconds() - started)

        if left() <= 0:
            raise Unavailable(_TOO_LATE)
        pool = self._pool
        if pool is None and self._building is not None:
            # Connecting (start-up or a reconnect): wait for that attempt, bounded, so
            # logins arriving just before the pool is up are not refused.
            try:
                await within(self.when_settled(), left(), self._clock)
            except DeadlineExceeded:
                raise Unavailable(_TOO_LATE) from None
            pool = self._pool
        if pool is None:
            raise Unavailable("the user database is unavailable")
        await self._admit(left())
        pool = self._pool
        if pool is None:                 # went down while we waited
            self._release(None)
            raise Unavailable("the user database is unavailable")
        remaining = left()
        if remaining <= 0:               # never sent after its caller's deadline
            self._release(None)
            raise Unavailable(_TOO_LATE)
        try:
            query = call(pool)
            query.addBoth(self._release, pool)
            return await within(query, remaining, self._clock)
        except DeadlineExceeded:
            raise Unavailable(_TOO_LATE) from None
        except DriverError as error:
            if not isinstance(error, (OperationalError, InterfaceError)):
                raise
            self._check_health(pool)
            raise Unavailable(f"the user database is unavailable: {_first_line(error)}") from None
        except CancelledError:
            # statement_timeout: txpostgres turns QueryCanceled into CancelledError.
            raise Unavailable(_TOO_LATE) from None
        except Exception as error:
            # The connection was closed under the query (ConnectionDone, ...).
            self._check_health(pool)
            raise Unavailable(f"the user database is unavailable: {type(error).__name__}") from None

    async def _admit(self, timeout: float) -> None:
        """Take a connection slot, waiting in line (at most timeout s) if all are busy;
        raises Unavailable."""
        if self._running < self.size and not self._waiting:
            self._running += 1
            return
        if len(self._waiting) >= self._max_waiting:
            self.refused_busy += 1
            raise Unavailable(f"the user database is overloaded ({len(self._waiting)} queries"
                              " waiting); try again")
        waiter: Deferred = Deferred()
        self._waiting.append(waiter)
        self.peak_waiting = max(self.peak_waiting, len(self._waiting))
        try:
            await within(waiter, timeout, self._clock)
        except DeadlineExceeded:
            # Leave the line so the query never runs after its caller gave up.
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            raise Unavailable(_TOO_LATE) from None
        # The slot was handed over by _release (still counted in _running).

    def _release(self, result, pool: "_TxPool | None" = None):
        """A query finished: hand its slot to the next waiter (passes `result` through)."""
        if pool is not None and pool is not self._pool:
            return result                # a dropped pool's query: its slot was reset
        if self._waiting:
            self._waiting.popleft().callback(None)
        else:
            self._running = max(0, self._running - 1)
        return result

    # -- reconnection -------------------------------------------------------

    async def _attempt(self) -> None:
        pool = self._building = _TxPool(self._reactor, self.size, self._dsn,
                                        self._connect_kwargs, self._connection_lost)
        try:
            await within(pool.start(), self._connect_timeout, self._clock)
        except Exception as error:
            self._attempt_failed(pool, error)
        else:
            if self._building is pool:           # not closed meanwhile
                self._pool, self._connections = pool, set(pool.connections)
                if self._failures:
                    log.info("user database reachable again after {failures} failed attempts",
                             failures=self._failures)
                self._failures = 0
        finally:
            if self._building is pool:
                self._building = None
            waiters, self._settle_waiters = self._settle_waiters, []
            for waiter in waiters:
                waiter.callback(self._pool is not None)

    def _attempt_failed(self, pool: _TxPool, error: Exception) -> None:
        if isinstance(error, FirstError):        # DeferredList: the first connection's failure
            error = error.subFailure.value
        for connection in list(pool.connections):
            _close_quietly(connection)
        if self._closed or self._building is not pool:
            return
        delay = reconnect_delay(self._failures, self._initial_delay, self._max_delay)
        self._failures += 1
        # Logged when the delay grows, i.e. less and less often while the outage lasts.
        if delay < self._max_delay or self._failures % 10 == 1:
            log.warn("user database unreachable ({error}); retrying in {delay}s",
                     error=_first_line(error), delay=delay, failures=self._failures)
        self._retry = self._clock.callLater(delay, self.start)

    def _connection_lost(self, connection: _Connection) -> None:
        if connection in self._connections and not self._closed:
            self._go_down("a connection was closed")

    def _check_health(self, pool: _TxPool) -> None:
        # Only the current pool matters: errors from a dropped one are expected.
        if pool is self._pool and not all(_is_open(c) for c in self._connections):
            self._go_down("a query found a closed connection")

    def _go_down(self, why: str) -> None:
        self._drop_pool()
        log.warn("lost the user database ({why}); reconnecting", why=why)
        delay = reconnect_delay(0, self._initial_delay, self._max_delay)
        self._retry = self._clock.callLater(delay, self.start)

    def _drop_pool(self) -> None:
        connections, self._connections, self._pool = self._connections, set(), None
        # Queries of the dropped pool fail as their connections close; they no
        # longer hold slots of the next pool. Waiters go on and find it down.
        self._running = 0
        while self._waiting:
            self._waiting.popleft().callback(None)
        for connection in connections:
            _close_quietly(connection)


def make_pool(reactor, dsn: str, size: int = 5, statement_timeout_ms: int = 5000,
              clock=None, connect_timeout: float = 5.0, max_waiting: int = 100) -> ResilientPool:
    """A pool for `dsn`, not started yet (start it, or add it to the node's services)."""
    return ResilientPool(reactor, dsn, size=size, statement_timeout_ms=statement_timeout_ms,
                         clock=clock, connect_timeout=connect_timeout, max_waiting=max_waiting)


def pool_from_config(reactor, config: DatabaseConfig, dsn: str | None = None) -> ResilientPool:
    """`make_pool` from the `database` section; `dsn` overrides it (e.g. an embedded server)."""
    chosen = dsn or config.dsn
    if not chosen:
        raise ValueError("no database DSN: set database.dsn or DATABASE_URL")
    return make_pool(reactor, chosen, config.pool_size, config.statement_timeout_ms,
                     connect_timeout=config.connect_timeout, max_waiting=config.max_waiting)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
