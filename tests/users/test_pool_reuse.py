"""Which pooled connection a query gets: the one returned last, while the load allows.

Real PostgreSQL: each connection is told apart by its backend's pid.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults


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
