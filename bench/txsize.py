"""
How cost grows with transaction size: transactions of 1, 10 and 100
statements (L{SIZES}), one size after the other in one process, on
C{config.concurrency} connections.

Every statement is one single-row C{INSERT} into a table of its own
(L{CREATE}: a server-made key, no foreign key, no read), each its own
round trip: a batch write split into statements, the case where
transaction size is the user's choice. Blind inserts give PostgreSQL's
serializable mode nothing to conflict on, so what changes with size is
how often the per-transaction cost is paid (the hand-off to a thread,
C{BEGIN}, C{COMMIT} and its WAL flush, the result back to the reactor)
against the per-statement cost, not what the server does per statement.

Each size runs C{config.ops} statements (at least one transaction per
caller) by C{2 x concurrency} callers, each calling again as soon as its
last transaction is done (the closed-loop maximum of L{bench.openloop}):
throughput, and each transaction's latency from its call (which includes
waiting for a connection behind at most one other transaction). Every
size starts from an empty table, and the rows it left are counted: a
transaction run again after a conflict must not have written twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg2

from bench.config import BenchConfig
from bench.harness import adbapiPool, runTwisted
from bench.measure import Measurement, percentile
from bench.workload import Cursor

#: Statements per transaction.
SIZES = (1, 10, 100)

CREATE = (
    "CREATE TABLE IF NOT EXISTS txsize ("
    "id bigserial PRIMARY KEY, txn integer NOT NULL, seq integer NOT NULL, "
    "data text NOT NULL)"
)
INSERT = "INSERT INTO txsize (txn, seq, data) VALUES (%(txn)s, %(seq)s, %(data)s)"

#: A transaction: C{call(txn, size)} gives a Deferred.
Call = Callable[[int, int], Any]


def statementParams(txn: int, size: int) -> list[dict[str, object]]:
    """
    The parameters of the C{size} statements of transaction C{txn}.
    """
    return [{"txn": txn, "seq": seq, "data": f"{txn}:{seq}"} for seq in range(size)]


def insertRows(cursor: Cursor, txn: int, size: int) -> None:
    """
    Transaction C{txn} of C{size} statements on a DB-API cursor (the caller
    commits): what adbapi's C{runInteraction} and the raw-cursor sAsync
    variants run.
    """
    for params in statementParams(txn, size):
        cursor.execute(INSERT, params)


def transactions(config: BenchConfig, size: int) -> int:
    """
    How many transactions of C{size} statements one size runs:
    C{config.ops} statements, and at least one transaction per caller.
    """
    return max(2 * config.concurrency, config.ops // size)


def resetTable(config: BenchConfig) -> None:
    """
    Make the C{txsize} table if need be, and empty it.
    """
    conn = psycopg2.connect(config.psycopg2Dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(CREATE)
            cur.execute("TRUNCATE txsize RESTART IDENTITY")
    finally:
        conn.close()


def countRows(config: BenchConfig) -> int:
    """
    Rows now in C{txsize}.
    """
    conn = psycopg2.connect(config.psycopg2Dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM txsize")
            row = cur.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        conn.close()


async def closedLoop(call: Call, size: int, count: int, callers: int) -> dict[str, Any]:
    """
    Transactions C{0 .. count - 1} of C{size} statements by C{callers}
    callers, each calling again as soon as its last call is done; one point
    of the sweep.
    """
    from twisted.internet.defer import Deferred, gatherResults

    latencies: list[float] = []

    async def caller(txns: range) -> None:
        for txn in txns:
            began = time.perf_counter()
            await call(txn, size)
            latencies.append(time.perf_counter() - began)

    measurement = Measurement("stmts")
    measurement.start()
    await gatherResults(
        [
            Deferred.fromCoroutine(caller(range(i, count, callers)))
            for i in range(callers)
        ]
    )
    done = measurement.stop(count * size)
    return {
        "statements": size,
        "transactions": count,
        "seconds": round(done["seconds"], 3),
        "rate": round(done["rate"], 1),
        "txnRate": round(count / done["seconds"], 1),
        "p50Ms": round(1000 * percentile(latencies, 50), 3),
        "p99Ms": round(1000 * percentile(latencies, 99), 3),
        "cpuUsPerStatement": round(done["cpuUsPerUnit"], 2),
    }


#: A variant's set-up: its transaction call, what closes it, and (sAsync)
#: how many times its transactions ran again so far.
SetUp = Callable[[Any], Awaitable[tuple[Call, Callable[[], Any], Callable[[], int]]]]


def runTxSize(config: BenchConfig, setUp: SetUp) -> dict[str, Any]:
    """
    Every size of L{SIZES} through one variant; the record's rate is its
    statements per second over all sizes (the same statements at each), and
    C{sweep} holds each size's point.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        from twisted.internet.threads import deferToThread

        from bench.lag import ReactorLagProbe

        await deferToThread(resetTable, config)
        call, close, retries = await setUp(reactor)
        probe = ReactorLagProbe(reactor)
        callers = 2 * config.concurrency
        points = []
        try:
            await closedLoop(call, 1, callers, callers)  # open every connection
            probe.start()
            for size in SIZES:
                await deferToThread(resetTable, config)
                before = retries()
                point = await closedLoop(
                    call, size, transactions(config, size), callers
                )
                point["retries"] = retries() - before
                point["rows"] = await deferToThread(countRows, config)
                points.append(point)
        finally:
            lag = probe.stop()
            await close()
        count = sum(p["statements"] * p["transactions"] for p in points)
        seconds = sum(p["seconds"] for p in points)
        cpu = sum(
            p["cpuUsPerStatement"] * p["statements"] * p["transactions"] for p in points
        )
        return {
            "unit": "stmts",
            "count": count,
            "counted": sum(p["rows"] for p in points),
            "seconds": round(seconds, 3),
            "rate": count / seconds,
            "cpuUsPerUnit": cpu / count,
            "peakRssMb": None,  # not what this workload is about
            "lag": lag,
            "sweep": points,
        }

    return runTwisted(main)


def txsizeAdbapi(config: BenchConfig) -> dict[str, Any]:
    """
    C{twisted.enterprise.adbapi}: C{runInteraction} of L{insertRows}
    (the server's READ COMMITTED).
    """

    async def setUp(reactor: Any) -> tuple[Call, Callable[[], Any], Callable[[], int]]:
        from twisted.internet.defer import succeed

        pool = adbapiPool(config, reactor)

        def close() -> Any:
            pool.close()
            return succeed(None)

        def call(txn: int, size: int) -> Any:
            return pool.runInteraction(insertRows, txn, size)

        return call, close, lambda: 0

    return runTxSize(config, setUp)


def _sasync(config: BenchConfig, method: str, **kw: Any) -> dict[str, Any]:
    # A GrowthBroker's method on config.concurrency connections.
    async def setUp(reactor: Any) -> tuple[Call, Callable[[], Any], Callable[[], int]]:
        from bench.growth_brokers import GrowthBroker

        broker = GrowthBroker(
            config.url("psycopg2"), connections=config.concurrency, **kw
        )
        await broker.waitUntilRunning()
        return getattr(broker, method), broker.shutdown, broker.retries

    return runTxSize(config, setUp)


def txsizeSasync(config: BenchConfig) -> dict[str, Any]:
    """
    sAsync C{@transact} + C{self.conn} (SQLAlchemy Core), default
    SERIALIZABLE.
    """
    return _sasync(config, "insertConn")


def txsizeSasyncReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    The same with the READ COMMITTED opt-out (adbapi's isolation).
    """
    return _sasync(config, "insertConn", isolation_level="READ COMMITTED")


def txsizeSasyncDbapi(config: BenchConfig) -> dict[str, Any]:
    """
    sAsync C{@transact} on the raw DB-API cursor (what adbapi runs),
    default SERIALIZABLE.
    """
    return _sasync(config, "insertDbapi")


def txsizeSasyncDbapiReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    The raw DB-API cursor at READ COMMITTED: the very statements and
    isolation of C{txsize-adbapi}, so only the machinery differs.
    """
    return _sasync(config, "insertDbapi", isolation_level="READ COMMITTED")
