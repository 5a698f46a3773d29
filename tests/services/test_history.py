"""Chat history in PostgreSQL: the batching writer, the fallback, and end to end across a restart."""

from __future__ import annotations


import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig, PublishOptions
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, globalLogPublisher

from tests.integration.dev_node import build_dev_node
from tests.integration.conftest import reactor, within
from tests.services.test_services import A, B, Chat, database_ready, sleep, with_leave_grace
from tests.users.conftest import fresh_database, postgres_server  # noqa: F401 (fixtures)
from tests.users.conftest import query_rows
from wampchat.errors import Unavailable
from wampchat.services.chat import ChatService
from wampchat.services.history import HistoryWriter, insert_statement
from wampchat.users.migrate import run_migrations


class FakePool:
    """Records the statements; `down` makes them fail like a database outage."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, list]] = []
        self.down = False

    async def run_operation(self, sql, params=()):
        if self.down:
            raise Unavailable("the user database is unavailable")
        self.statements.append((sql, list(params)))

    async def run_query(self, sql, params=()):
        raise Unavailable("the user database is unavailable")


@pytest.fixture
def warnings():
    seen = []

    def observe(event):
        if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def test_insert_statement_is_one_multi_row_insert():
    sql, params = insert_statement([("chat.main", "a", 1, "x"), ("chat.main", "b", None, "y")])
    assert sql.count("INSERT") == 1 and sql.count("(%s, %s, %s, %s)") == 2
    assert params == ["chat.main", "a", 1, "x", "chat.main", "b", None, "y"]


def test_writer_flushes_every_interval_in_one_statement():
    clock, pool = task.Clock(), FakePool()
    writer = HistoryWriter(pool, clock, interval=0.5, batch_size=100)
    for n in range(3):
        writer.add("chat.main", "a", 1, f"m{n}")
    assert pool.statements == []            # nothing on the hot path
    clock.advance(0.49)
    assert pool.statements == []
    clock.advance(0.01)
    assert len(pool.statements) == 1 and pool.statements[0][1][3::4] == ["m0", "m1", "m2"]
    assert not writer.buffer and not clock.getDelayedCalls()


def test_writer_flushes_at_once_when_a_batch_is_full():
    clock, pool = task.Clock(), FakePool()
    writer = HistoryWriter(pool, clock, interval=0.5, batch_size=100)
    for n in range(250):
        writer.add("chat.main", "a", None, f"m{n}")
    clock.advance(0)
    # 100 rows were due at once; everything buffered by then goes in batches of 100
    assert [len(params) // 4 for _, params in pool.statements] == [100, 100, 50]
    assert [p[3] for _, params in pool.statements for p in zip(*[iter(params)] * 4)] == \
        [f"m{n}" for n in range(250)]


def test_outage_keeps_at_most_max_buffered_and_logs_once(warnings):
    clock, pool = task.Clock(), FakePool()
    writer = HistoryWriter(pool, clock, interval=0.5, batch_size=10, max_buffered=25)
    pool.down = True
    for n in range(40):
        writer.add("chat.main", "a", None, f"m{n}")
        clock.advance(0.1)
    clock.advance(2)
    assert len(writer.buffer) == 25 and writer.dropped == 15
    assert len([w for w in warnings if "not stored" in (w.get("log_format") or "")]) == 1
    pool.down = False
    clock.advance(0.5)
    stored = [p[3] for _, params in pool.statements for p in zip(*[iter(params)] * 4)]
    assert stored == [f"m{n}" for n in range(15, 40)]
    assert not writer.buffer


@pytest_twisted.ensureDeferred
async def test_history_falls_back_to_memory_when_the_database_is_down():
    service = ChatService(ComponentConfig(realm="wampchat", extra={"clock": task.Clock()}))
    service._pool = FakePool()

    class Details:
        publisher, publisher_authid, publisher_authrole = 7, A, "user"
        caller_authrole = "user"

    record = service._recorder("chat.main")
    for n in range(3):
        record(details=Details(), message=f"m{n}")
    page = await service.chat_history("chat.main", 2, details=Details())
    assert [(m["from"], m["message"]) for m in page] == [(A, "m1"), (A, "m2")]


# -- end to end: a node, its database, a restart ----------------------------------------


@pytest.fixture
def history_database(fresh_database):  # noqa: F811 (pytest fixture injection)
    pytest_twisted.blockon(Deferred.fromCoroutine(run_migrations(reactor(), fresh_database)))
    return fresh_database


def start_node(dsn: str):
    port, issuer, node = build_dev_node(dsn, transform=with_leave_grace)
    node.service.startService()
    return node, Chat(port, issuer)


async def started(node) -> None:
    await within(node.transports[0].ready)
    await database_ready(node)


async def stop(node, chat: Chat) -> None:
    await chat.close()
    await within(node.service.stopService(), 10)


async def history_of(client, topic: str, count: int) -> list[dict]:
    history = []
    for _ in range(60):                     # stored within the flush interval
        history = await client.call("chat.history", topic)
        if len(history) >= count:
            return history
        await sleep(0.05)
    return history


rows = query_rows


@pytest_twisted.ensureDeferred
async def test_history_survives_a_restart_pages_and_is_guarded(history_database):
    node, chat = start_node(history_database)
    try:
        await started(node)
        alice = await chat.connect("alice", topics=())
        admin = await chat.connect("admin", topics=())
        for n in range(5):
            await alice.publish("chat.main", options=PublishOptions(acknowledge=True),
                                message=f"m{n}")
        await admin.publish("chat.admin", options=PublishOptions(acknowledge=True),
                            message="admins only")
        assert len(await history_of(alice, "chat.main", 5)) == 5
        assert len(await history_of(admin, "chat.admin", 1)) == 1
    finally:
        await stop(node, chat)

    node, chat = start_node(history_database)          # a new node, a new ChatService
    try:
        await started(node)
        bob = await chat.connect("bob", topics=())
        history = await history_of(bob, "chat.main", 5)
        alice_id = rows(history_database, "SELECT id FROM users WHERE email = %s", (A,))[0][0]
        assert [(m["from"], m["user_id"], m["message"]) for m in history] == \
            [(A, alice_id, f"m{n}") for n in range(5)]
        assert [m["id"] for m in history] == sorted(m["id"] for m in history)
        page = await bob.call("chat.history", "chat.main", limit=2, before=history[3]["id"])
        assert [m["message"] for m in page] == ["m1", "m2"]
        older = await bob.call("chat.history", "chat.main", limit=2, before=page[0]["id"])
        assert [m["message"] for m in older] == ["m0"]
        latest = await bob.call("chat.history", "chat.main", limit=2)
        assert [m["message"] for m in latest] == ["m3", "m4"]
        with pytest.raises(ApplicationError) as refused:
            await bob.call("chat.history", "chat.admin")
        assert refused.value.error == "wamp.error.not_authorized"
        admin = await chat.connect("admin", topics=())
        assert [m["message"] for m in await history_of(admin, "chat.admin", 1)] == ["admins only"]
        assert B not in {m["from"] for m in history}
    finally:
        await stop(node, chat)
    stored = rows(history_database, "SELECT topic, count(*) FROM chat_messages GROUP BY topic"
                                    " ORDER BY topic")
    assert stored == [("chat.admin", 1), ("chat.main", 5)]
