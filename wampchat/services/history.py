"""Chat history in PostgreSQL: a batching writer off the hot path, and a page reader.

`HistoryWriter.add()` only appends to an in-memory buffer; a clock-driven flush
writes the buffer with one multi-row INSERT every `interval` seconds, or at once
when `batch_size` rows are waiting. While the database is away the buffer keeps
at most `max_buffered` rows (the oldest are dropped), the outage is logged once,
and the rows are retried at the next flush. Nothing here blocks or raises into
the caller.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

from psycopg2 import Error as DriverError
from twisted.internet.defer import Deferred, succeed

from wampchat.errors import Unavailable
from wampchat.logs import Logger

log = Logger()

DEFAULT_INTERVAL = 0.5
DEFAULT_BATCH_SIZE = 100
DEFAULT_MAX_BUFFERED = 10_000

_COLUMNS = "(topic, sender_authid, sender_user_id, message)"
_PAGE = ("SELECT id, topic, sender_authid, sender_user_id, message,"
         " EXTRACT(EPOCH FROM created_at)::float8 FROM ("
         " SELECT * FROM chat_messages WHERE topic = %s AND (%s::bigint IS NULL OR id < %s)"
         " ORDER BY id DESC LIMIT %s) AS page ORDER BY id")


def insert_statement(rows: Sequence[tuple]) -> tuple[str, list[Any]]:
    """One multi-row INSERT of (topic, authid, user_id, message) rows, and its parameters."""
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    params = [value for row in rows for value in row]
    return f"INSERT INTO chat_messages {_COLUMNS} VALUES {values}", params


class HistoryWriter:
    """Buffers chat messages and writes them in batches through a `ResilientPool`."""

    def __init__(self, pool, clock, interval: float = DEFAULT_INTERVAL,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        self._pool = pool
        self._clock = clock
        self.interval = interval
        self.batch_size = batch_size
        self.max_buffered = max_buffered
        self.buffer: deque[tuple] = deque()
        self.dropped = 0                      # rows lost to a full buffer during outages
        self._timer = None
        self._flushing: Deferred | None = None
        self._busy = False
        self._closed = False
        self._failing = False

    def add(self, topic: str, authid: str, user_id: int | None, message: str) -> None:
        """Queue one message; returns at once."""
        self.buffer.append((topic, authid, user_id, message))
        self._trim()
        if len(self.buffer) >= self.batch_size:
            self._schedule(0)
        else:
            self._schedule(self.interval)

    def pending(self, topic: str) -> bool:
        """Whether messages of `topic` are buffered, not yet written."""
        return any(row[0] == topic for row in self.buffer)

    def flush(self) -> Deferred:
        """Write what is buffered now (one INSERT per `batch_size` rows); never fails."""
        if self._flushing is not None:
            return self._flushing
        self._cancel_timer()
        if not self.buffer:
            return succeed(None)
        self._busy = True
        d = Deferred.fromCoroutine(self._flush())
        if self._busy:                   # still running: later calls share it
            self._flushing = d
        return d

    async def close(self) -> None:
        """Write what is left (once, during an outage it is lost) and stop the timer."""
        self._closed = True
        self._cancel_timer()
        if self._flushing is not None:
            await self._flushing
        await self.flush()
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self, delay: float) -> None:
        if self._busy or self._closed:
            return                       # the flush in flight reschedules when done
        if self._timer is not None and self._timer.active():
            if delay > 0:
                return
            self._timer.cancel()
        self._timer = self._clock.callLater(delay, self.flush)

    def _trim(self) -> None:
        while len(self.buffer) > self.max_buffered:
            self.buffer.popleft()
            self.dropped += 1

    async def _flush(self) -> None:
        try:
            while self.buffer:
                batch = [self.buffer.popleft()
                         for _ in range(min(self.batch_size, len(self.buffer)))]
                sql, params = insert_statement(batch)
                try:
                    await self._pool.run_operation(sql, params)
                except (Unavailable, DriverError) as error:
                    self.buffer.extendleft(reversed(batch))
                    self._trim()
                    if not self._failing:
                        self._failing = True
                        log.warn("chat history not stored ({error}); keeping at most {max}"
                                 " messages until the database is back",
                                 error=str(error).strip().splitlines()[0] if str(error) else
                                 type(error).__name__, max=self.max_buffered)
                    return
                if self._failing:
                    self._failing = False
                    log.info("chat history stored again")
        except Exception:
            log.failure("chat history flush failed")
        finally:
            self._busy = False
            self._flushing = None
            if self.buffer:
                self._schedule(self.interval)


async def read_page(pool, topic: str, limit: int, before: int | None) -> list[dict[str, Any]]:
    """The latest `limit` messages of `topic` older than id `before`, oldest first.

    Raises `Unavailable` (or a driver error) when the database cannot answer.
    """
    rows = await pool.run_query(_PAGE, (topic, before, before, limit))
    return [{"id": id_, "topic": topic_, "from": authid, "user_id": user_id, "message": message,
             "time": time} for id_, topic_, authid, user_id, message, time in rows]
