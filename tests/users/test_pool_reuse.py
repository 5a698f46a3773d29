"""Which pooled connection a query gets: the one returned last, while the load allows.

Real PostgreSQL: each connection is told apart by its backend's pid.
"""

from __future__ import annotations

import psycopg2
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from wampchat.errors import Unavailable


async def _backend_pid(pool, sleep: float = 0.0) -> int:
    rows = await pool.run_query("SELECT pg_backend_pid(), pg_sleep(%s)", (sleep,))
    return rows[0][0]


@pytest_twisted.ensureDeferred
async def test_queries_one_at_a_time_reuse_the_connection_returned_last(pg_pool):
    # txpostgres' set of idle connections cycled through all five: each query then
    # went to a backend idle since the previous round (twice the CPU per statement).
    pids = [await _backend_pid(pg_pool) for _ in range(12)]
    assert len(set(pids)) == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_queries_still_spread_over_every_connection(pg_pool):
    pids = await gatherResults([Deferred.fromCoroutine(_backend_pid(pg_pool, 0.2))
                                for _ in range(5)])
    assert len(set(pids)) == 5
    # and afterwards one at a time again: one of those five, always the same
    later = [await _backend_pid(pg_pool) for _ in range(6)]
    assert len(set(later)) == 1 and later[0] in pids


@pytest_twisted.ensureDeferred
async def test_a_statement_that_cannot_start_is_refused_and_its_connection_and_slot_return(
        pg_pool):
    # cursor() raises when psycopg2 already knows the connection is closed: the caller
    # gets Unavailable at once, the connection goes back and the slot is released.
    txpool = pg_pool._pool
    broken = txpool.connections._idle[-1]        # the one the next query takes

    def closed_cursor():
        raise psycopg2.InterfaceError("connection already closed")

    broken.cursor = closed_cursor
    with pytest.raises(Unavailable, match="connection already closed"):
        await _backend_pid(pg_pool)
    assert pg_pool._running == 0 and len(txpool.connections) == pg_pool.size
    del broken.cursor
    assert await _backend_pid(pg_pool) > 0
