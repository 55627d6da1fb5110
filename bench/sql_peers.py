"""
Workload 2, the peers: the same workload at SQL level (see L{bench.statements}).

Identical statements everywhere; concurrent variants get
C{config.concurrency} connections, and run every op at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg2

from bench.config import BenchConfig
from bench.harness import (
    adbapiPool,
    runAsyncio,
    runTwisted,
    timedInLoop,
    timedInReactor,
    timedSync,
)
from bench.statements import (
    INSERT_A,
    INSERT_B,
    NEXTVAL,
    READ_A,
    READ_B,
    numbered,
    writeParams,
)
from bench.workload import Op, opPlan, sqlOp


def _warm(config: BenchConfig) -> list[Op]:
    # Untimed reads that open every pooled connection first.
    return [None] * (2 * config.concurrency)


def sqlPsycopg2(config: BenchConfig) -> dict[str, Any]:
    """
    psycopg2, one connection, one op after another.
    """
    conn = psycopg2.connect(config.psycopg2Dsn)
    plan = opPlan(config.ops, config.seed)

    def runOps(ops: list[Op]) -> None:
        for op in ops:
            with conn, conn.cursor() as cur:  # one transaction per op
                sqlOp(cur, op)

    runOps(_warm(config))
    try:
        return timedSync("ops", len(plan), lambda: runOps(plan))
    finally:
        conn.close()


def sqlAdbapi(config: BenchConfig) -> dict[str, Any]:
    """
    C{twisted.enterprise.adbapi.ConnectionPool} on psycopg2, all ops at once.
    """
    from twisted.internet.defer import gatherResults

    async def main(reactor: Any) -> dict[str, Any]:
        pool = adbapiPool(config, reactor)
        plan = opPlan(config.ops, config.seed)

        async def runAll(ops: list[Op]) -> None:
            await gatherResults([pool.runInteraction(sqlOp, op) for op in ops])

        await runAll(_warm(config))
        try:
            return await timedInReactor(reactor, "ops", len(plan), lambda: runAll(plan))
        finally:
            pool.close()

    return runTwisted(main)


def sqlTxpostgres(config: BenchConfig) -> dict[str, Any]:
    """
    txpostgres (psycopg2's async mode, no threads): a pool, all ops at once.
    """
    from twisted.internet.defer import Deferred, gatherResults
    from txpostgres import txpostgres

    async def body(cur: Any, op: Op) -> None:
        if op is None:
            await cur.execute(READ_A)
            cur.fetchall()
            await cur.execute(READ_B)
            cur.fetchall()
            return
        await cur.execute(NEXTVAL)
        row = cur.fetchone()
        params = writeParams((row[0], row[1], row[2]), op)
        await cur.execute(INSERT_A, params)
        await cur.execute(INSERT_B, params)

    def interaction(cur: Any, op: Op) -> Deferred[None]:
        return Deferred.fromCoroutine(body(cur, op))

    async def main(reactor: Any) -> dict[str, Any]:
        pool = txpostgres.ConnectionPool(
            None, config.psycopg2Dsn, min=config.concurrency
        )
        await pool.start()
        plan = opPlan(config.ops, config.seed)

        async def runAll(ops: list[Op]) -> None:
            await gatherResults([pool.runInteraction(interaction, op) for op in ops])

        await runAll(_warm(config))
        try:
            return await timedInReactor(reactor, "ops", len(plan), lambda: runAll(plan))
        finally:
            pool.close()

    return runTwisted(main)


_INSERT_A_NUMBERED, _NAMES_A = numbered(INSERT_A)
_INSERT_B_NUMBERED, _NAMES_B = numbered(INSERT_B)


async def asyncpgOp(pool: Any, op: Op) -> None:
    """
    One op of the plan on a connection of asyncpg pool C{pool}, in a
    transaction.
    """
    async with pool.acquire() as conn, conn.transaction():
        if op is None:
            await conn.fetch(READ_A)
            await conn.fetch(READ_B)
            return
        row = await conn.fetchrow(NEXTVAL)
        params = writeParams((row[0], row[1], row[2]), op)
        await conn.execute(_INSERT_A_NUMBERED, *(params[n] for n in _NAMES_A))
        await conn.execute(_INSERT_B_NUMBERED, *(params[n] for n in _NAMES_B))


def sqlAsyncpg(config: BenchConfig) -> dict[str, Any]:
    """
    An asyncpg pool under asyncio, all ops at once.
    """
    import asyncpg

    async def main() -> dict[str, Any]:
        pool = await asyncpg.create_pool(
            config.asyncpgDsn, min_size=config.concurrency, max_size=config.concurrency
        )
        plan = opPlan(config.ops, config.seed)

        async def runAll(ops: list[Op]) -> None:
            await asyncio.gather(*(asyncpgOp(pool, op) for op in ops))

        await runAll(_warm(config))
        try:
            return await timedInLoop("ops", len(plan), lambda: runAll(plan))
        finally:
            await pool.close()

    return runAsyncio(main())


def sqlThreadPool(config: BenchConfig) -> dict[str, Any]:
    """
    What a Twisted user writes without sAsync at Core level:
    C{deferToThreadPool} + SQLAlchemy Core, N threads, C{engine.begin()}
    per op, running the very body the sAsync variant runs.
    """
    import sqlalchemy as SA
    from twisted.internet.defer import gatherResults
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    from bench.core_ops import coreOp

    async def main(reactor: Any) -> dict[str, Any]:
        engine = SA.create_engine(
            config.url("psycopg2"), pool_size=config.concurrency, max_overflow=0
        )
        pool = ThreadPool(config.concurrency, config.concurrency, "bench-core")
        pool.start()
        plan = opPlan(config.ops, config.seed)

        def oneOp(op: Op) -> None:
            # Runs in a pool thread; the Connection lives and dies in it.
            with engine.begin() as conn:
                coreOp(conn, op)

        async def runAll(ops: list[Op]) -> None:
            await gatherResults(
                [deferToThreadPool(reactor, pool, oneOp, op) for op in ops]
            )

        await runAll(_warm(config))
        try:
            return await timedInReactor(reactor, "ops", len(plan), lambda: runAll(plan))
        finally:
            pool.stop()
            engine.dispose()

    return runTwisted(main)
