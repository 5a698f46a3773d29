"""CPU per first-time login on the user store path, in process: no sockets but the database's.

    .venv/bin/python -m bench.store_path                  # ~30 seconds
    .venv/bin/python -m bench.store_path --concurrency 1 --logins 2000 --rounds 5

What a first-time handshake costs the router beyond an existing user's is this path:
`UserDirectory.login` -> `PostgresUserStore.find_or_create` (logins coalesced into
batches) -> `ResilientPool` -> txpostgres -> psycopg2. Here it runs alone, against a
real PostgreSQL (DATABASE_URL when set, else an embedded pgserver; a scratch database
either way), so that its CPU is measured without the noise of a whole handshake: for
each concurrency, `--rounds` rounds of `--logins` new users, that many logins in flight
at once. Printed per round: this process's CPU per login (user + system, getrusage),
statements per login (each one round trip) and logins/s. The database server's own CPU
is not included; log events below warn are dropped, as in `bench.run`. For changes of a few percent, count instructions instead of time:
`valgrind --tool=cachegrind --cache-sim=no` on two runs with different `--logins`, the
difference divided by the difference in logins.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import LogLevel

from bench.logins import database
from wampchat.logs import drop_below
from wampchat.users.directory import UserDirectory
from wampchat.users.migrate import run_migrations
from wampchat.users.postgres import PostgresUserStore, make_pool


@dataclass(frozen=True)
class Identity:
    """The fields of a validated token that the directory reads."""

    sub: str
    email: str | None
    preferred_username: str | None
    roles: tuple[str, ...] = ("user",)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_round(directory: UserDirectory, logins: int, concurrency: int) -> float:
    """`logins` first-time logins, `concurrency` in flight; CPU seconds they took."""
    identities = iter([Identity(str(uuid.uuid4()), None, f"u{n}") for n in range(logins)])

    async def worker() -> None:
        for identity in identities:
            await directory.login(identity)

    started = cpu_seconds()
    await gatherResults([Deferred.fromCoroutine(worker()) for _ in range(concurrency)])
    return cpu_seconds() - started


async def measure(reactor, dsn: str, args: argparse.Namespace) -> None:
    await run_migrations(reactor, dsn)
    pool = make_pool(reactor, dsn, size=args.pool_size)
    await pool.start()
    statements = [0]
    run_prepared = pool.run_prepared

    def counted(*call_args, **kwargs):
        statements[0] += 1
        return run_prepared(*call_args, **kwargs)

    pool.run_prepared = counted                      # find_or_create's statement
    directory = UserDirectory(PostgresUserStore(pool), reactor)
    await one_round(directory, 200, max(args.concurrency))          # warm-up: prepared, cached
    try:
        for concurrency in args.concurrency:
            per_login = []
            for number in range(1, args.rounds + 1):
                statements[0] = 0
                wall = time.perf_counter()
                cpu = await one_round(directory, args.logins, concurrency)
                wall = time.perf_counter() - wall
                per_login.append(cpu / args.logins * 1e6)
                print(f"concurrency {concurrency:3d} round {number}: {per_login[-1]:6.1f} us CPU"
                      f" per login, {statements[0] / args.logins:.2f} statements per login,"
                      f" {args.logins / wall:,.0f} logins/s", flush=True)
            print(f"concurrency {concurrency:3d}: median {statistics.median(per_login):.1f} us"
                  f" CPU per login over {args.rounds} rounds", flush=True)
    finally:
        await directory.close()
        pool.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=3000, help="first-time logins per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,4,16",
                        type=lambda text: [int(part) for part in text.split(",")],
                        help="logins in flight at once, comma-separated (default 1,4,16)")
    parser.add_argument("--pool-size", type=int, default=5, help="as database.pool_size")
    args = parser.parse_args(argv)
    drop_below(LogLevel.warn)          # as `wampchat run --log-level warn` in bench.run
    with ExitStack() as stack:
        dsn = database(stack)
        task.react(lambda reactor: Deferred.fromCoroutine(measure(reactor, dsn, args)))


if __name__ == "__main__":
    main()
