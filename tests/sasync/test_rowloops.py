"""
Row loops that start a transaction per row (issue 14.3): however many run
at once, and however deeply they nest, every one of them completes, with
every row in order, on the server databases (where a streaming iteration
keeps its transaction, and so a connection, until its rows are read).

The rows are streamed (C{stream=True}: PostgreSQL's default; MySQL reads a
result whole by default, and then holds nothing).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from sasync import AccessBroker, transact

#: Rows per loop: several batches of BATCH, so that every iteration is held.
ROWS = 40
BATCH = 10


class Touches(AccessBroker):
    """
    A table to iterate over, and one that each row's transaction writes to.
    """

    async def startup(self) -> None:
        await self.table(
            "items",
            SA.Column("n", SA.Integer, primary_key=True, autoincrement=False),
            SA.Column("label", SA.String(40)),
        )
        await self.table(
            "touches",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("n", SA.Integer),
        )

    @transact
    def fill(self, count: int) -> None:
        self.conn.execute(
            self.items.insert(), [{"n": i, "label": f"#{i}"} for i in range(count)]
        )

    @transact
    def rows(self) -> Any:
        return self.conn.execute(SA.select(self.items).order_by(self.items.c.n))

    @transact
    def bump(self, n: int) -> None:
        items = self.items
        query = items.update().where(items.c.n == n)
        self.conn.execute(query.values(label=items.c.label + "+"))

    @transact
    def touch(self, n: int) -> None:
        self.conn.execute(self.touches.insert().values(n=n))

    @transact
    def quotients(self, zeroAt: int) -> Any:
        # PostgreSQL: fails (division by zero) when it reaches row zeroAt.
        n = self.items.c.n
        query = SA.select(n, 1000 / (n - zeroAt)).order_by(n)
        return self.conn.execute(query)

    @transact
    def openTransactions(self) -> int:
        """
        How many other sessions on this database are inside a transaction.
        """
        if self.conn.dialect.name == "postgresql":
            query = (
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state LIKE 'idle in transaction%'"
            )
        else:
            query = (
                "SELECT count(*) FROM information_schema.innodb_trx t"
                " JOIN information_schema.processlist p"
                " ON p.id = t.trx_mysql_thread_id"
                " WHERE p.db = DATABASE() AND p.id <> CONNECTION_ID()"
            )
        return int(self.conn.execute(SA.text(query)).scalar_one())

    @transact
    def touchCounts(self) -> dict[int, int]:
        t = self.touches
        query = SA.select(t.c.n, SA.func.count()).group_by(t.c.n)
        return {n: count for n, count in self.conn.execute(query)}


async def rowLoop(broker: Touches) -> list[int]:
    """
    The user's natural pattern: a transaction for each row of an iteration.
    """
    seen = []
    async for row in await broker.rows(stream=True):
        await broker.touch(row[0])
        seen.append(row[0])
    return seen


@pytest.mark.reactorTimeout(60)
async def test_manyRowLoops(serverURL: str, brokers: Any) -> None:
    """
    12 row loops at once, with the default connections (4) and overflow
    (4): more open iterations than connections can ever be. All complete,
    each seeing every row in order, and every touch is written.
    """
    broker = brokers(Touches, serverURL, batchSize=BATCH)
    await broker.fill(ROWS)
    loops = 12
    seen = await gatherResults(
        [Deferred.fromCoroutine(rowLoop(broker)) for _ in range(loops)]
    )
    assert seen == [list(range(ROWS))] * loops
    assert await broker.touchCounts() == {n: loops for n in range(ROWS)}
    assert broker._handle.iterationsLetGo >= loops - 7
    assert await broker.openTransactions() == 0


async def nestedLoop(broker: Touches, depth: int, seen: list[list[int]]) -> None:
    """
    A row loop that, at its first row, runs another one inside it, down to
    C{depth} levels.
    """
    mine: list[int] = []
    seen.append(mine)
    async for row in await broker.rows(stream=True):
        await broker.touch(row[0])
        mine.append(row[0])
        if depth > 1 and row[0] == 0:
            await nestedLoop(broker, depth - 1, seen)


@pytest.mark.reactorTimeout(60)
async def test_nestedRowLoops(serverURL: str, brokers: Any) -> None:
    """
    Row loops nested 8 deep on one connection (and the default overflow of
    4): every level completes with every row in order.
    """
    broker = brokers(Touches, serverURL, batchSize=BATCH, connections=1)
    await broker.fill(ROWS)
    depth = 8
    seen: list[list[int]] = []
    await nestedLoop(broker, depth, seen)
    assert seen == [list(range(ROWS))] * depth
    assert await broker.touchCounts() == {n: depth for n in range(ROWS)}
    assert await broker.openTransactions() == 0


async def test_iterationsNeverHoldEveryConnection(serverURL: str, brokers: Any) -> None:
    """
    8 iterations open at once, with the default 4 connections and 4
    overflow: the 8th makes the oldest let go of its connection (its rows
    read into memory, its transaction committed), so a transaction still
    runs; every iteration then gives every row, in order.
    """
    broker = brokers(Touches, serverURL, batchSize=BATCH)
    await broker.fill(ROWS)
    handle = broker._handle
    iterations = [await broker.rows(stream=True) for _ in range(8)]
    holding = [w for w in handle._holders if not w.lettingGo]
    assert len(holding) == 7 == handle.maxHeld
    assert handle.iterationsLetGo == 1
    await broker.touch(-1)
    for dr in iterations:
        assert [row.n async for row in dr] == list(range(ROWS))
    assert await broker.openTransactions() == 0


async def test_pausedConsumerLetsGo(serverURL: str, brokers: Any) -> None:
    """
    A consumer that paused keeps its connection only until another
    iteration needs one: then its rows are read into memory, and resuming
    writes every one of them, in order.
    """
    broker = brokers(
        Touches, serverURL, batchSize=BATCH, connections=1, overflowConnections=1
    )
    await broker.fill(ROWS)
    consumer = PausingConsumer(pauseAt=3)
    d = broker.rows(consumer=consumer, stream=True)
    await consumer.pausedD
    assert broker._handle.iterationsLetGo == 0
    other = await broker.rows(stream=True)
    assert broker._handle.iterationsLetGo == 1
    assert [row.n async for row in other] == list(range(ROWS))
    consumer.producer.resumeProducing()
    assert await d is consumer
    assert consumer.rows == list(range(ROWS))
    assert await broker.openTransactions() == 0


async def test_cancelAfterLettingGo(serverURL: str, brokers: Any) -> None:
    """
    Cancelling a consumer's iteration after it let go of its connection
    fails its call with CancelledError and leaves no transaction open.
    """
    from twisted.internet.defer import CancelledError

    broker = brokers(
        Touches, serverURL, batchSize=BATCH, connections=1, overflowConnections=0
    )
    await broker.fill(ROWS)
    consumer = PausingConsumer(pauseAt=3)
    d = broker.rows(consumer=consumer, stream=True)
    await consumer.pausedD
    # maxHeld is 0: the iteration let go at once.
    assert broker._handle.iterationsLetGo == 1
    await broker.touch(-1)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    assert consumer.rows == [0, 1, 2]
    assert await broker.openTransactions() == 0


async def test_failureWhileLettingGo(postgresqlURL: str, brokers: Any) -> None:
    """
    An iteration whose query fails partway (division by zero at row 35)
    while it lets go (its batches up to row 29 were fetched before): the
    rows before the failing batch are handed out, then the error, as
    SQLAlchemy's DataError; the connection is left outside any
    transaction, and the next calls on it succeed.
    """
    from sqlalchemy.exc import DataError

    broker = brokers(
        Touches, postgresqlURL, batchSize=BATCH, connections=1, overflowConnections=1
    )
    await broker.fill(ROWS)
    failing = await broker.quotients(35)
    seen = [(await next(failing)).n]
    other = await broker.rows()  # the failing one lets go
    assert broker._handle.iterationsLetGo == 1
    got: list[int] = []
    with pytest.raises(DataError, match="division by zero"):
        async for row in failing:
            got.append(row.n)
    assert seen + got == list(range(len(seen + got)))
    assert len(seen + got) <= 35
    assert [row.n async for row in other] == list(range(ROWS))
    await broker.touch(-1)
    assert await broker.openTransactions() == 0


@pytest.mark.reactorTimeout(60)
async def test_rowLoopWritesItsRows(serverURL: str, brokers: Any) -> None:
    """
    A row loop that updates each row it reads (by default: MySQL reads
    the result whole, PostgreSQL streams it). On MySQL/MariaDB under
    SERIALIZABLE, an iteration whose transaction stayed open would hold
    shared locks on those rows, and each update would wait for it; the
    result read whole commits first, and holds nothing.
    """
    broker = brokers(Touches, serverURL, batchSize=BATCH)
    await broker.fill(ROWS)
    async for row in await broker.rows():
        await broker.bump(row.n)
    labels = [row.label async for row in await broker.rows()]
    assert labels == [f"#{n}+" for n in range(ROWS)]
    assert broker._handle.iterationsLetGo == 0
    assert await broker.openTransactions() == 0


async def test_readWholeHoldsNothing(mysqlURL: str, brokers: Any) -> None:
    """
    MySQL/MariaDB by default: 10 iterations open at once on one connection
    and no overflow hold nothing (their rows were read whole, and their
    transactions committed); none had to let go.
    """
    broker = brokers(
        Touches, mysqlURL, batchSize=BATCH, connections=1, overflowConnections=0
    )
    await broker.fill(ROWS)
    iterations = [await broker.rows() for _ in range(10)]
    assert broker._handle._holders == {}
    await broker.touch(-1)
    for dr in iterations:
        assert [row.n async for row in dr] == list(range(ROWS))
    assert broker._handle.iterationsLetGo == 0


@implementer(IConsumer)
class PausingConsumer:
    """
    Keeps the first column of each row; pauses its producer at row
    C{pauseAt} (C{pausedD} fires then).
    """

    def __init__(self, pauseAt: int) -> None:
        self.rows: list[int] = []
        self.producer: Any = None
        self.pauseAt = pauseAt
        self.pausedD: Deferred[None] = Deferred()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: Any) -> None:
        self.rows.append(data[0])
        if len(self.rows) == self.pauseAt:
            self.producer.pauseProducing()
            self.pausedD.callback(None)


async def test_callGivenAheadOfAStream(serverURL: str, brokers: Any) -> None:
    """
    A transaction called right behind one that turns into an open
    iteration is given to the same connection ahead (its thread goes on to
    it without waiting for the reactor), but never waits for the
    iteration: the queue takes it back, and it runs on an overflow
    connection, in a transaction of its own, while the rows are unread.
    """
    broker = brokers(
        Touches, serverURL, batchSize=BATCH, connections=1, overflowConnections=1
    )
    await broker.fill(ROWS)
    queue = broker._handle.queue
    d = broker.rows(stream=True)
    touched = broker.touch(-1, timeout=30)
    # Both on the one worker: the second given ahead.
    assert (queue.running(), queue.pending()) == (2, 0)
    await touched
    rows = await d
    assert broker._handle.iterationsLetGo == 0
    assert [row.n async for row in rows] == list(range(ROWS))
    assert await broker.touchCounts() == {-1: 1}
    assert await broker.openTransactions() == 0
