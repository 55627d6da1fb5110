"""
Iterating results: transactions started from inside an iteration loop
never deadlock (one SQLite connection; one server connection plus
overflow), stopping early releases the connection, a paused consumer gets
no rows, big results stream through a server-side cursor on PostgreSQL, and
an iteration that fails partway leaves its worker healthy.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.interfaces import IConsumer
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from sasync import AccessBroker, transact
from tests.reliability.helpers import killBackend, settle, until


class Numbers(AccessBroker):
    """
    A table of numbers to iterate over, and one of notes to write meanwhile.
    """

    async def startup(self) -> None:
        await self.table(
            "numbers",
            SA.Column("n", SA.Integer, primary_key=True, autoincrement=False),
            SA.Column("label", SA.String(40)),
        )
        await self.table(
            "notes",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("n", SA.Integer),
        )

    @transact
    def fill(self, count: int) -> None:
        self.conn.execute(
            self.numbers.insert(), [{"n": i, "label": f"#{i}"} for i in range(count)]
        )

    @transact
    def allNumbers(self) -> Any:
        return self.conn.execute(SA.select(self.numbers).order_by(self.numbers.c.n))

    @transact
    def note(self, n: int) -> int:
        self.conn.execute(self.notes.insert().values(n=n))
        query = SA.select(SA.func.count()).select_from(self.notes)
        return int(self.conn.execute(query).scalar_one())

    @transact
    def noteCount(self) -> int:
        query = SA.select(SA.func.count()).select_from(self.notes)
        return int(self.conn.execute(query).scalar_one())


def oneConnection(url: str) -> dict[str, Any]:
    return {} if url.startswith("sqlite") else {"connections": 1}


@pytest.mark.reactorTimeout(120)
async def test_noDeadlockInsideIteration(dbURL: str, brokers: Any) -> None:
    """
    With a single connection, a loop over a big result starts (and waits
    for) write transactions every few rows; all of them run, and the
    iteration sees every row.
    """
    broker = brokers(Numbers, dbURL, batchSize=100, **oneConnection(dbURL))
    await broker.fill(3000)
    dr = await broker.allNumbers()
    seen = 0
    for d in dr:
        row = await d
        assert row.n == seen
        if seen % 250 == 0:
            assert await broker.note(seen) == seen // 250 + 1
            if seen == 0 and dbURL.startswith("postgresql"):
                # The one connection is held (a streaming iteration): an
                # overflow one ran the note.
                assert len(broker._handle._overflow) == 1
        seen += 1
    assert seen == 3000
    assert await broker.noteCount() == 12
    if not dbURL.startswith("sqlite"):
        assert broker._handle._overflow == []


@pytest.mark.reactorTimeout(120)
async def test_nestedIterations(dbURL: str, brokers: Any) -> None:
    """
    An iteration started inside another iteration's loop, on one
    connection, completes too.
    """
    broker = brokers(Numbers, dbURL, batchSize=50, **oneConnection(dbURL))
    await broker.fill(300)
    outer = await broker.allNumbers()
    total = 0
    async for row in outer:
        if row.n % 100 == 0:
            inner = await broker.allNumbers()
            total += len([r async for r in inner])
    assert total == 900


async def test_stopEarly(dbURL: str, brokers: Any) -> None:
    """
    Stopping a Deferator early releases its connection: the next
    transaction runs on a single connection.
    """
    broker = brokers(Numbers, dbURL, batchSize=10, **oneConnection(dbURL))
    await broker.fill(500)
    dr = await broker.allNumbers()
    first = await next(dr)
    assert first.n == 0
    dr.stop()
    assert await broker.note(1) == 1
    if not dbURL.startswith("sqlite"):
        assert broker._handle._overflow == []


@implementer(IConsumer)
class CountingConsumer:
    """
    Counts rows and keeps none; optionally pauses its producer once.
    """

    def __init__(self, pauseAt: int | None = None) -> None:
        self.count = 0
        self.producer: Any = None
        self.pauseAt = pauseAt
        self.paused = threading.Event()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: Any) -> None:
        self.count += 1
        if self.count == self.pauseAt:
            self.producer.pauseProducing()
            self.paused.set()


async def test_pausedConsumer(dbURL: str, brokers: Any) -> None:
    """
    A consumer that pauses stops the production: once any fetch under way
    has landed (and one more batch with it) and the reactor has run what
    that scheduled, it has had no more rows. Resuming finishes it.
    """
    broker = brokers(Numbers, dbURL, batchSize=20)
    await broker.fill(400)
    consumer = CountingConsumer(pauseAt=30)
    d = broker.allNumbers(consumer=consumer)
    await until(consumer.paused.is_set)
    await consumer.producer.deferator.fetchMore()
    await settle()
    assert consumer.count == 30
    assert not d.called
    consumer.producer.resumeProducing()
    assert await d is consumer
    assert consumer.count == 400


@pytest.mark.slow
@pytest.mark.reactorTimeout(600)
async def test_streamMillionRows(postgresqlURL: str, brokers: Any) -> None:
    """
    1,000,000 rows from PostgreSQL reach a consumer through a server-side
    cursor, every one of them. (What streaming costs in time and memory is
    measured by the benchmark: C{./scripts/bench --only 'stream-*'}, the
    "growth MB" column and its target in docs/benchmarks.md.)
    """
    broker = brokers(Numbers, postgresqlURL)
    await broker.waitUntilRunning()
    await broker.execute(
        "INSERT INTO numbers (n, label) SELECT g, md5(g::text)"
        " FROM generate_series(1, 1000000) g"
    )
    consumer = CountingConsumer()
    assert await broker.allNumbers(consumer=consumer) is consumer
    assert consumer.count == 1_000_000


async def test_streamKeyword(serverURL: str, brokers: Any) -> None:
    """
    stream=True reads through an unbuffered/server-side cursor (MySQL too),
    stream=False through an ordinary one; both give every row.
    """
    broker = brokers(Numbers, serverURL, batchSize=64)
    await broker.fill(1000)
    for stream in (True, False):
        dr = await broker.allNumbers(stream=stream)
        assert [row.n async for row in dr] == list(range(1000))
        assert await broker.note(1) >= 1


class Failing(Numbers):
    """
    Iterations that fail partway, each after a write of its own (a note)
    that must be rolled back with it.
    """

    backendPID: int | None = None

    @transact
    def dividedRows(self, zeroAt: int) -> Any:
        # Row zeroAt divides by zero: an error only the FETCH reaching it
        # raises, as a server-side cursor computes its rows lazily.
        self.conn.execute(self.notes.insert().values(n=-1))
        return self.conn.execute(
            SA.text("SELECT 1 / (:zeroAt - g) AS q FROM generate_series(1, 1000) g"),
            {"zeroAt": zeroAt},
        )

    @transact
    def rowsOnBackend(self) -> Any:
        self.backendPID = int(
            self.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        )
        self.conn.execute(self.notes.insert().values(n=-1))
        return self.conn.execute(SA.select(self.numbers).order_by(self.numbers.c.n))


async def healthyAfter(broker: Any) -> None:
    """
    The iteration's failure left the one connection healthy: the note it
    wrote was rolled back, no overflow connection is left, and new
    transactions (an iteration too) run.
    """
    assert await broker.noteCount() == 0
    assert await broker.note(1) == 1
    assert broker._handle._overflow == []
    assert [row.n async for row in await broker.allNumbers()] == list(range(300))


@pytest.mark.reactorTimeout(60)
async def test_heldIterationStatementError(postgresqlURL: str, brokers: Any) -> None:
    """
    A server-side cursor whose query fails partway (division by zero at row
    500, batches of 50): the rows before it arrive, then the iteration
    fails with the database's error; the transaction is rolled back and
    the worker is healthy.
    """
    broker = brokers(Failing, postgresqlURL, batchSize=50, connections=1)
    await broker.fill(300)
    dr = await broker.dividedRows(500, stream=True)
    seen = 0
    with pytest.raises(SA.exc.DataError, match="division by zero"):
        async for _row in dr:
            seen += 1
    assert 400 <= seen < 500
    await healthyAfter(broker)


@pytest.mark.reactorTimeout(60)
async def test_heldIterationBackendTerminated(postgresqlURL: str, brokers: Any) -> None:
    """
    The backend of a held iteration is terminated partway: the iteration
    fails with the driver's disconnect error (not run again, even with
    retries), and the worker replaces its connection and runs on.
    """
    broker = brokers(Failing, postgresqlURL, batchSize=20, connections=1, retries=3)
    await broker.fill(300)
    dr = await broker.rowsOnBackend(stream=True)
    seen = 0
    with pytest.raises(SA.exc.OperationalError) as caught:
        async for row in dr:
            assert row.n == seen
            seen += 1
            if seen == 50:
                assert broker.backendPID is not None
                await deferToThread(killBackend, postgresqlURL, broker.backendPID)
    assert caught.value.connection_invalidated
    assert 50 <= seen < 300
    assert sum(broker._handle.retries.values()) == 0
    await healthyAfter(broker)
    assert broker._handle.replacedConnections() == 1


class Shapes(Numbers):
    @transact
    def labels(self) -> Any:
        query = SA.select(self.numbers.c.label).order_by(self.numbers.c.n)
        return self.conn.execute(query).scalars()

    @transact
    def mappings(self) -> Any:
        return self.conn.execute(
            SA.select(self.numbers).order_by(self.numbers.c.n)
        ).mappings()


async def test_filteredResults(dbURL: str, brokers: Any) -> None:
    """
    A transaction may return result.scalars() or result.mappings(): they
    are iterated too (in several batches), or listed with asList, or
    buffered with raw.
    """
    broker = brokers(Shapes, dbURL, batchSize=7)
    await broker.fill(50)
    labels = [label async for label in await broker.labels()]
    assert labels == [f"#{i}" for i in range(50)]
    maps = [m async for m in await broker.mappings()]
    assert [m["n"] for m in maps] == list(range(50))
    assert await broker.labels(asList=True) == labels
    assert await broker.labels(raw=True) == labels
    assert (await broker.allNumbers(raw=True)).scalars().all() == list(range(50))
