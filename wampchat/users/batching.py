"""Requests that arrive while the database is busy go to it together, as one statement.

`Coalescer` runs at most `limit` batches at once. A request submitted while a
slot is free goes alone, at once (no added latency at a low rate); requests
submitted while every slot is busy wait and go together as the next batch. A
login storm then costs a few statements instead of one per user: fewer round
trips for the database and fewer wake-ups for the router, whose CPU per login
otherwise grows while it idles between answers of a queue of single statements.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from twisted.internet.defer import Deferred

Item = TypeVar("Item")


class Coalescer(Generic[Item]):
    """Runs `run_batch(items)`, at most `limit` at once and `max_batch` items each.

    `run_batch` returns one outcome per item, in order: a result, or an exception
    instance for that item alone; raising fails every item of the batch.
    """

    def __init__(self, run_batch: Callable[[list[Item]], Awaitable[Sequence[object]]],
                 limit: int, max_batch: int = 200) -> None:
        if limit < 1 or max_batch < 1:
            raise ValueError("limit and max_batch must be at least 1")
        self._run_batch = run_batch
        self._limit = limit
        self._max_batch = max_batch
        self._running = 0
        self._queued: list[tuple[Item, Deferred]] = []
        self.batches = 0                     # batches run so far
        self.largest_batch = 0

    @property
    def queued(self) -> int:
        """Items waiting for a free slot."""
        return len(self._queued)

    def submit(self, item: Item) -> Deferred:
        """A Deferred firing with the item's outcome."""
        waiter: Deferred = Deferred()
        self._queued.append((item, waiter))
        if self._running < self._limit:
            self._start()
        return waiter

    def _start(self) -> None:
        batch = self._queued[:self._max_batch]
        del self._queued[:self._max_batch]
        self._running += 1
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        Deferred.fromCoroutine(self._run(batch))

    async def _run(self, batch: list[tuple[Item, Deferred]]) -> None:
        try:
            outcomes = list(await self._run_batch([item for item, _ in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except Exception as error:
            outcomes = [error] * len(batch)
        self._running -= 1
        # The next batch leaves before this one's callers run: they may submit again.
        while self._queued and self._running < self._limit:
            self._start()
        for (_, waiter), outcome in zip(batch, outcomes):
            if isinstance(outcome, Exception):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)
