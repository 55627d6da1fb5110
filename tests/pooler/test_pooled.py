"""
A broker behind a real PgBouncer in transaction mode, with a pool of 2
server connections per database (C{pooled=True}): open iterations leave a
server connection for small transactions, cancels and timeouts stop the
statement on the server, the COMMIT lookup knows the real backend, rows
stream, and serialization conflicts are retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import CancelledError, gatherResults
from twisted.internet.threads import deferToThread

from sasync import AccessBroker, transact
from sasync.connection import _outcome as outcome
from sasync.errors import NotSupported, TransactionTimeout
from tests.pooler.bouncer import POOL_SIZE
from tests.reliability.helpers import activeSleeps, adminEngine, retriedCount, until

ROWS = 200
BATCH = 10


class Pooled(AccessBroker):
    """
    A table of numbered rows and a counter, and a record of the server
    processes its writes ran on.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        #: Worker thread appends, reactor thread reads once the call fired.
        self.writePIDs: list[int] = []

    async def startup(self) -> None:
        await self.table(
            "items",
            SA.Column("n", SA.Integer, primary_key=True, autoincrement=False),
            SA.Column("label", SA.String(40)),
        )
        await self.table(
            "counter",
            SA.Column("id", SA.Integer, primary_key=True, autoincrement=False),
            SA.Column("value", SA.Integer),
        )

    @transact
    def fill(self, count: int) -> None:
        if count:
            self.conn.execute(
                self.items.insert(), [{"n": i, "label": f"#{i}"} for i in range(count)]
            )
        self.conn.execute(self.counter.insert().values(id=1, value=0))

    @transact
    def rows(self) -> Any:
        return self.conn.execute(SA.select(self.items).order_by(self.items.c.n))

    @transact
    def count(self) -> int:
        return int(
            self.conn.execute(SA.select(SA.func.count(self.items.c.n))).scalar_one()
        )

    @transact
    def sleep(self, seconds: float) -> None:
        self.conn.execute(SA.text("SELECT pg_sleep(:s)"), {"s": seconds})

    @transact
    def write(self, n: int) -> int:
        self.conn.execute(self.items.insert().values(n=n, label="written"))
        pid = self.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        self.writePIDs.append(int(pid))
        return n

    @transact
    def increment(self) -> None:
        # Read, wait, write: two at once conflict (SERIALIZABLE).
        counter = self.counter
        value = self.conn.execute(SA.select(counter.c.value)).scalar_one()
        self.conn.execute(SA.text("SELECT pg_sleep(0.2)"))
        self.conn.execute(counter.update().values(value=value + 1))

    @transact
    def counterValue(self) -> int:
        return int(self.conn.execute(SA.select(self.counter.c.value)).scalar_one())

    @transact
    def lookUps(self, times: int) -> int:
        # The same statement again and again: psycopg 3 would prepare it on
        # the server after 5 runs (unless prepare_threshold is None).
        found = 0
        query = SA.text("SELECT label FROM items WHERE n = :n")
        for i in range(times):
            found += len(self.conn.execute(query, {"n": i}).all())
        return found


def serverPIDs(url: str) -> set[int]:
    """
    The backends of the database of C{url}, as the server lists them.
    """
    engine = adminEngine(url)
    try:
        with engine.connect() as conn:
            return set(
                conn.exec_driver_sql(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).scalars()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "options",
    [{"connections": POOL_SIZE}, {"poolerConnections": POOL_SIZE}],
    ids=["connections", "poolerConnections"],
)
@pytest.mark.reactorTimeout(60)
async def test_iterationsLeaveAServerConnection(
    pooledURL: str, brokers: Callable[..., Any], options: dict[str, int]
) -> None:
    """
    Two open iterations (streaming, so each keeps its transaction and its
    server connection) and then a small transaction, through a pooler with
    2 server connections: the second iteration makes the first let go (its
    rows read into memory), so the small transaction gets the other server
    connection at once instead of failing after the pooler's
    C{query_wait_timeout}. Both iterations give every row.
    """
    broker = brokers(Pooled, pooledURL, pooled=True, batchSize=BATCH, **options)
    await broker.fill(ROWS)
    handle = broker._handle
    assert handle.maxHeld == POOL_SIZE - 1
    first = await broker.rows()
    second = await broker.rows()
    assert handle.iterationsLetGo == 1
    assert await broker.count() == ROWS
    for rows in (first, second):
        assert [row.n async for row in rows] == list(range(ROWS))


@pytest.mark.reactorTimeout(60)
async def test_cancel(pooledURL: str, postgresqlURL: str, brokers: Any) -> None:
    """
    Cancelling a running call through the pooler stops its statement on
    the server (PgBouncer forwards the driver's cancel request to the
    server connection), without cutting the connection, which serves the
    next call.
    """
    broker = brokers(Pooled, pooledURL, pooled=True, connections=1)
    await broker.waitUntilRunning()
    d = broker.sleep(30)
    await until(lambda: activeSleeps(postgresqlURL) == 1)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    # (The default 20 s: a loaded machine may take seconds to cancel through
    # the pooler; the 30 s sleep would still be running.)
    await until(lambda: activeSleeps(postgresqlURL) == 0)
    assert broker._handle.replacedConnections() == 0
    await broker.fill(1)
    assert await broker.count() == 1


@pytest.mark.reactorTimeout(60)
async def test_timeout(pooledURL: str, postgresqlURL: str, brokers: Any) -> None:
    """
    A call that runs past its timeout through the pooler fails with
    TransactionTimeout, and its statement is stopped on the server.
    """
    broker = brokers(Pooled, pooledURL, pooled=True, connections=1)
    await broker.waitUntilRunning()
    with pytest.raises(TransactionTimeout):
        await broker.sleep(30, timeout=0.5)
    # (The default 20 s: a loaded machine may take seconds to cancel through
    # the pooler; the 30 s sleep would still be running.)
    await until(lambda: activeSleeps(postgresqlURL) == 0)
    assert broker._handle.replacedConnections() == 0
    await broker.fill(1)
    assert await broker.count() == 1


@pytest.mark.reactorTimeout(60)
async def test_commitLookUpAsksTheServer(
    pooledURL: str,
    postgresqlURL: str,
    brokers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    The connection to the pooler lost during COMMIT (which committed): the
    lookup of what became of the transaction gets the process ID of the
    server backend it ran on (asked in the transaction, and listed in
    C{pg_stat_activity}), not the one the pooler made up for the driver;
    the database says it committed, and the caller gets the result.
    """
    looked: list[int | None] = []
    lookUp = outcome.lostCommitOutcome

    def spy(engine: Any, xid: int | None, pid: int | None, **kw: Any) -> str:
        looked.append(pid)
        return lookUp(engine, xid, pid, **kw)

    monkeypatch.setattr(outcome, "lostCommitOutcome", spy)
    broker = brokers(Pooled, pooledURL, pooled=True, connections=1, retries=3)
    await broker.fill(0)
    dialect = broker._handle.engine.dialect
    doCommit = dialect.do_commit

    def commitThenLose(proxied: Any) -> None:
        # Worker thread, inside COMMIT: it commits, then the connection to
        # the pooler is gone before the answer is read.
        doCommit(proxied)
        del dialect.do_commit
        proxied.dbapi_connection.close()
        proxied.dbapi_connection.cursor().execute("SELECT 1")

    dialect.do_commit = commitThenLose
    try:
        assert await broker.write(7) == 7
    finally:
        dialect.__dict__.pop("do_commit", None)
    assert looked == broker.writePIDs
    assert looked[0] in await deferToThread(serverPIDs, postgresqlURL)
    assert await broker.count() == 1


def cursorStatements(url: str) -> list[str]:
    """
    The last statements of the backends of the database of C{url} that are
    inside a transaction (or running) and ran a server-side cursor's
    statement.
    """
    engine = adminEngine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.exec_driver_sql(
                    "SELECT query FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                    " AND state <> 'idle'"
                    " AND (query LIKE 'FETCH%%' OR query LIKE 'DECLARE%%')"
                ).scalars()
            )
    finally:
        engine.dispose()


@pytest.mark.reactorTimeout(60)
async def test_streaming(pooledURL: str, postgresqlURL: str, brokers: Any) -> None:
    """
    Rows stream through the pooler (a server-side cursor, inside one
    transaction: the server shows its backend in the transaction, having
    fetched a batch), in batches, while other transactions run between
    them.
    """
    broker = brokers(Pooled, pooledURL, pooled=True, batchSize=BATCH)
    await broker.fill(ROWS)
    seen = []
    async for row in await broker.rows():
        seen.append(row.n)
        if row.n == BATCH * 3:
            assert len(await deferToThread(cursorStatements, postgresqlURL)) == 1
        if row.n % 50 == 0:
            assert await broker.count() == ROWS
    assert seen == list(range(ROWS))
    assert broker.stats().rowsStreamed >= ROWS


@pytest.mark.reactorTimeout(60)
async def test_noServerPreparedStatements(pooledURL: str, brokers: Any) -> None:
    """
    The same statements run many times on 4 client connections sharing 2
    server connections: none fails because a statement prepared on one
    server connection is missing on another (psycopg 3 prepares after 5
    runs unless told not to).
    """
    broker = brokers(Pooled, pooledURL, pooled=True, connections=4)
    await broker.fill(20)
    found = await gatherResults([broker.lookUps(20) for _ in range(16)])
    assert found == [20] * 16


@pytest.mark.reactorTimeout(60)
async def test_conflictsRetried(pooledURL: str, brokers: Any) -> None:
    """
    Serializable transactions that conflict through the pooler run again
    until each has counted once.
    """
    broker = brokers(Pooled, pooledURL, pooled=True, connections=POOL_SIZE)
    await broker.fill(0)
    await gatherResults([broker.increment() for _ in range(6)])
    assert await broker.counterValue() == 6
    assert retriedCount(broker) > 0


@pytest.mark.reactorTimeout(90)
async def test_concurrentMigrate(pooledURL: str, brokers: Any, tmp_path: Any) -> None:
    """
    Three brokers migrate one database at once through the pooler (2
    server connections): each revision runs once, all see head, and the
    lock is let go (a session lock would stay on a server connection the
    pooler lends on, and the next migrate() would wait for it forever).
    """
    from tests.sasync.test_migrations import REVISIONS, Things, scriptDirectory

    scripts = scriptDirectory(tmp_path, REVISIONS)
    many = [
        brokers(Things, pooledURL, scripts, pooled=True, batchSize=50 + i)
        for i in range(3)
    ]
    await gatherResults([b.waitUntilRunning() for b in many])
    assert [b.migrated for b in many] == ["b2"] * 3
    assert await many[0].applied() == ["a1", "b2"]
    for broker in many:
        assert await broker.migrate(scripts) == "b2"


async def test_listenRefused(pooledURL: str, brokers: Any) -> None:
    """
    listen() behind a transaction-mode pooler fails with NotSupported,
    saying why and what to do; notify() works.
    """
    broker = brokers(Pooled, pooledURL, pooled=True)
    with pytest.raises(NotSupported, match="direct URL"):
        await broker.listen("news", print)
    await broker.notify("news", "hello")
