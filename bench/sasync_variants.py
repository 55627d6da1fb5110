"""
The sAsync variants of workloads 1-3 and the SELECT 1 micro benchmark,
written only against the public API in DESIGN.md::

    from sasync import AccessBroker, transact

Imported only in a child process, and only when L{bench.availability}
found C{sasync} importable.
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, Any

import sqlalchemy as SA

from bench.config import BenchConfig
from bench.consumer import CountingConsumer
from bench.core_ops import coreOp, coreOpTyped, driverSqlOp
from bench.harness import runTwisted, timedInReactor
from bench.statements import STREAM_QUERY
from bench.workload import Op, opPlan
from bench.workload import sqlOp as dbapiOp
from sasync import AccessBroker, transact

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_STREAM = SA.text(STREAM_QUERY)


def ormOp(session: Session, op: Op) -> None:
    """
    L{bench.orm_ops.ormOp}, imported on the first call: the ORM and the
    models (about 5 MB) load in the ORM variants' processes only (in their
    warm-up, before the clock), not in the streaming and SQL ones, whose
    peers don't load them either.
    """
    from bench.orm_ops import ormOp

    ormOp(session, op)


class BenchBroker(AccessBroker):
    """
    One broker for every sAsync variant; the tables already exist.
    """

    @transact
    def ormOp(self, op: Op) -> None:
        """
        Workload 1: the article's op through the transaction's ORM Session.
        """
        ormOp(self.session, op)

    @transact
    def sqlOp(self, op: Op) -> None:
        """
        Workload 2: the same statements as every SQL-level variant.
        """
        coreOp(self.conn, op)

    @transact
    def sqlTypedOp(self, op: Op) -> None:
        """
        Workload 2 with the SELECTs' result columns declared
        (C{text().columns()}).
        """
        coreOpTyped(self.conn, op)

    @transact
    def sqlDriverOp(self, op: Op) -> None:
        """
        Workload 2 through C{self.conn.exec_driver_sql}: no compilation.
        """
        driverSqlOp(self.conn, op)

    @transact
    def dbapiOp(self, op: Op) -> None:
        """
        Workload 2 on the transaction's raw DB-API cursor: what adbapi's
        C{runInteraction} runs, so that only the machinery differs.
        """
        cursor = self.conn.connection.dbapi_connection.cursor()
        try:
            dbapiOp(cursor, op)
        finally:
            cursor.close()

    @transact
    def ormRead(self) -> None:
        """
        Workload 1's read op alone: a method that only reads runs READ ONLY
        under the default SERIALIZABLE (PostgreSQL).
        """
        ormOp(self.session, None)

    @transact
    def ormWrite(self, op: Op) -> None:
        """
        Workload 1's write op alone.
        """
        ormOp(self.session, op)

    @transact
    def sqlRead(self) -> None:
        """
        Workload 2's read op alone (see L{ormRead}).
        """
        coreOp(self.conn, None)

    @transact
    def sqlWrite(self, op: Op) -> None:
        """
        Workload 2's write op alone.
        """
        coreOp(self.conn, op)

    @transact
    def selectOne(self) -> Any:
        """
        The trivial transaction: per-transaction overhead.
        """
        return self.conn.execute(SA.text("SELECT 1")).scalar()

    @transact
    def streamRows(self) -> Any:
        """
        Workload 3: every row of C{stream}, as a Deferator or to a consumer.
        """
        return self.conn.execute(_STREAM)


def brokerOptions(config: BenchConfig) -> dict[str, Any]:
    """
    Broker options: as many connections (worker threads) as the peers get.
    """
    return {"connections": config.concurrency}


def _makeBroker(config: BenchConfig, **kw: Any) -> BenchBroker:
    return BenchBroker(config.url("psycopg2"), **brokerOptions(config), **kw)


async def _allAtOnce(broker: BenchBroker, method: str, ops: list[Op]) -> None:
    from twisted.internet.defer import gatherResults

    if method.endswith("Split"):
        # Reads and writes in methods of their own ("orm" + "Read"/"Write").
        read = getattr(broker, method[: -len("Split")] + "Read")
        write = getattr(broker, method[: -len("Split")] + "Write")
        await gatherResults([read() if op is None else write(op) for op in ops])
        return
    call = getattr(broker, method)
    await gatherResults([call(op) for op in ops])


def _opsVariant(
    config: BenchConfig, method: str, tuned: bool = False, **kw: Any
) -> dict[str, Any]:
    # tuned: the process-wide settings docs/latency.md recommends for
    # reactor latency, which the library never makes itself.
    async def main(reactor: Any) -> dict[str, Any]:
        broker = _makeBroker(config, **kw)
        await broker.waitUntilRunning()
        plan = opPlan(config.ops, config.seed)
        await _allAtOnce(broker, method, [None] * (2 * config.concurrency))
        if tuned:
            sys.setswitchinterval(0.001)
            gc.collect()
            gc.freeze()
        try:
            return await timedInReactor(
                reactor, "ops", len(plan), lambda: _allAtOnce(broker, method, plan)
            )
        finally:
            await broker.shutdown()

    return runTwisted(main)


def ormSasync(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 1 through C{@transact} with C{self.session}, all ops at once.
    """
    return _opsVariant(config, "ormOp")


def sqlSasync(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 2 through C{@transact} with C{self.conn}, all ops at once.
    """
    return _opsVariant(config, "sqlOp")


def sqlSasyncDbapi(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 2 through C{@transact} on the raw DB-API cursor, all ops at once.
    """
    return _opsVariant(config, "dbapiOp")


def sqlSasyncDbapiReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 2 as L{sqlSasyncDbapi}, at READ COMMITTED as adbapi runs: only
    the machinery differs (no conflicts, no retries, no writer gate).
    """
    return _opsVariant(config, "dbapiOp", isolation_level="READ COMMITTED")


def ormSasyncReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 1 as L{ormSasync}, opting out of the default SERIALIZABLE.
    """
    return _opsVariant(config, "ormOp", isolation_level="READ COMMITTED")


def ormSasyncSplit(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 1 with reads and writes in methods of their own: the reads run
    READ ONLY under the default SERIALIZABLE.
    """
    return _opsVariant(config, "ormSplit")


def ormSasyncTuned(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 1 as L{ormSasync}, with docs/latency.md's process-wide
    settings: a 1 ms GIL switch interval, and C{gc.freeze()} once the broker
    has started (full collections then skip what start-up made).
    """
    return _opsVariant(config, "ormOp", tuned=True)


def sqlSasyncSplit(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 2 with reads and writes in methods of their own (see
    L{ormSasyncSplit}).
    """
    return _opsVariant(config, "sqlSplit")


def ormSasyncNoGate(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 1 as L{ormSasync}, SERIALIZABLE without the writer gate
    (C{writers=0}): every writer runs as soon as a connection is free.
    """
    return _opsVariant(config, "ormOp", writers=0)


def sqlSasyncNoGate(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 2 as L{sqlSasync}, without the writer gate (C{writers=0}).
    """
    return _opsVariant(config, "sqlOp", writers=0)


def sqlSasyncReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 2 as L{sqlSasync}, opting out of the default SERIALIZABLE.
    """
    return _opsVariant(config, "sqlOp", isolation_level="READ COMMITTED")


def sqlSasyncTypedReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 2 as L{sqlSasyncReadCommitted}, the SELECTs' result columns
    declared with C{text().columns()}.
    """
    return _opsVariant(config, "sqlTypedOp", isolation_level="READ COMMITTED")


def sqlSasyncDriverReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 2 as L{sqlSasyncReadCommitted}, through C{exec_driver_sql}.
    """
    return _opsVariant(config, "sqlDriverOp", isolation_level="READ COMMITTED")


def select1Sasync(config: BenchConfig) -> dict[str, Any]:
    """
    Sequential C{SELECT 1} transactions through the broker.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        broker = _makeBroker(config)
        await broker.waitUntilRunning()

        async def work(n: int) -> None:
            for _ in range(n):
                await broker.selectOne()

        await work(2 * config.concurrency)
        try:
            return await timedInReactor(
                reactor, "txns", config.selects, lambda: work(config.selects)
            )
        finally:
            await broker.shutdown()

    return runTwisted(main)


def streamSasyncDeferator(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 3: C{async for row in (await broker.streamRows())}.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        broker = _makeBroker(config)
        await broker.waitUntilRunning()
        await broker.selectOne()  # connect before the clock starts
        counted = [0]

        async def work() -> None:
            n = 0
            async for _row in await broker.streamRows():
                n += 1
            counted[0] = n

        try:
            result = await timedInReactor(reactor, "rows", config.rows, work)
        finally:
            await broker.shutdown()
        result["counted"] = counted[0]
        return result

    return runTwisted(main)


def streamSasyncConsumer(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 3: C{broker.streamRows(consumer=...)} into a counting IConsumer.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        broker = _makeBroker(config)
        await broker.waitUntilRunning()
        await broker.selectOne()
        consumer = CountingConsumer()

        async def work() -> None:
            await broker.streamRows(consumer=consumer)

        try:
            result = await timedInReactor(reactor, "rows", config.rows, work)
        finally:
            await broker.shutdown()
        result["counted"] = consumer.items
        return result

    return runTwisted(main)
