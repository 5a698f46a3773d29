"""Start-up against a database that does not answer: bounded connects, retried migrations.

A black hole is a real TCP listener on 127.0.0.1 that never accepts: the kernel
completes the handshake, libpq sends its startup packet and waits for an answer
that never comes. psycopg2's asynchronous connect ignores connect_timeout, so
without a deadline of our own start-up would hang there forever, silently.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater

from wampchat.config import load_config
from wampchat.errors import Unavailable
from wampchat.runtime import MigrationService, user_services
from wampchat.users.migrate import run_migrations
from wampchat.users.postgres import PoolState, ResilientPool

REPO = Path(__file__).resolve().parents[2]


def _reactor():
    from twisted.internet import reactor
    return reactor


@pytest.fixture
def black_hole():
    """DSN of a TCP listener that completes handshakes and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/postgres"


def _messages(events) -> list[str]:
    from twisted.logger import formatEvent
    return [formatEvent(event) for event in events]


@pytest_twisted.ensureDeferred
async def test_migrations_against_a_black_hole_give_up_after_the_connect_timeout(black_hole):
    """run_migrations raises Unavailable naming the address and the timeout."""
    with pytest.raises(Unavailable, match=r"no answer from the user database at "
                                          r"127\.0\.0\.1:\d+/postgres within 0\.3s"):
        await run_migrations(_reactor(), black_hole, connect_timeout=0.3)


@pytest_twisted.ensureDeferred
async def test_pool_against_a_black_hole_is_down_and_retries(black_hole):
    """The pool's connect deadline fires: down, Unavailable, next rebuild scheduled."""
    clock = Clock()
    pool = ResilientPool(_reactor(), black_hole, size=2, clock=clock, connect_timeout=0.3)
    settled = pool.start()
    clock.advance(0.3)
    assert await settled is False
    assert pool.state() == PoolState(connected=0, total=2, available=False, failed_attempts=1)
    with pytest.raises(Unavailable):
        await pool.run_query("SELECT 1")
    assert [call.getTime() for call in clock.getDelayedCalls()] == [0.3 + 0.5]
    pool.close()


@pytest_twisted.ensureDeferred
async def test_start_up_migrations_retry_with_backoff_and_log_each_failure(black_hole,
                                                                           no_logged_errors):
    """Each failed attempt logs an error saying the node is not listening; delays grow."""
    clock = Clock()
    service = MigrationService(_reactor(), black_hole, connect_timeout=2, clock=clock)
    service.startService()
    try:
        for attempt, delay in ((1, 1), (2, 2), (3, 4)):
            clock.advance(2)                   # this attempt's connect deadline
            await deferLater(_reactor(), 0, lambda: None)
            assert service.attempts == attempt and not service.done.called
            retry, = clock.getDelayedCalls()
            assert retry.getTime() - clock.seconds() == delay
            clock.advance(delay)
        clock.advance(2)                       # the fourth attempt fails too
        messages = _messages(no_logged_errors)
        assert len(messages) == 4
        assert all("database migrations failed" in m and "not listening yet" in m
                   and "no answer from the user database" in m for m in messages), messages
    finally:
        service.stopService()
        no_logged_errors.clear()               # the errors above are the point of the test
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_start_up_migrations_succeed_once_the_database_answers(proxy, users_database,
                                                                    no_logged_errors):
    """Down at the first attempt (connection refused), up at the second: done fires."""
    await proxy.stop()
    clock = Clock()
    service = MigrationService(_reactor(), proxy.dsn(users_database), clock=clock)
    service.startService()
    try:
        for _ in range(500):                   # the refused connect settles on the reactor
            if no_logged_errors:
                break
            await deferLater(_reactor(), 0.01, lambda: None)
        assert not service.done.called
        assert len(no_logged_errors) == 1
        no_logged_errors.clear()
        proxy.start()
        clock.advance(1)
        await _wait(service.done)
        assert service.attempts == 2
    finally:
        service.stopService()


async def _wait(d: Deferred) -> None:
    from twisted.internet.defer import TimeoutError
    try:
        await d.addTimeout(10, _reactor())
    except TimeoutError:
        pytest.fail("start-up migrations did not finish")


def test_user_services_pass_the_configured_connect_timeout(tmp_path):
    """database.connect_timeout and max_waiting reach the pool and the migration service."""
    config = _config(tmp_path, "postgresql://postgres@127.0.0.1:1/postgres",
                     connect_timeout="0.7", max_waiting="3")
    directory, (migrations, pool) = user_services(config, _reactor())
    assert migrations._connect_timeout == 0.7
    assert pool._connect_timeout == 0.7 and pool._max_waiting == 3


def _config(tmp_path, dsn: str, **database):
    text = (REPO / "crossbar-like.yaml").read_text()
    for key, value in database.items():
        text = text.replace(f"\n  {key}: ", f"\n  {key}: {value}  # ", 1)
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return load_config(str(path), environ={"DATABASE_URL": dsn, "WAMPCHAT_PORT": "8080",
                                           "KEYCLOAK_REALM_URL": "http://127.0.0.1:1/realms/x"})


def test_migrate_command_fails_with_a_clear_message_against_a_black_hole(black_hole):
    """`wampchat migrate` exits 1 and says which address did not answer, within how long."""
    done = subprocess.run([str(Path(sys.executable).parent / "wampchat"), "migrate",
                           "--config", str(REPO / "crossbar-like.yaml"), "--dsn", black_hole],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "no answer from the user database at 127.0.0.1:" in done.stderr
    assert "within 5s" in done.stderr              # the default connect_timeout

