"""
Workload 1, the peers: the article's ORM workload without sAsync.

Every concurrent variant gets a pool of C{config.concurrency} connections
(the article used up to 3000; this server allows 100, and 2 cores gain
nothing from more), and all of them warm up with the same untimed reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as SA
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, selectinload

from bench.config import BenchConfig
from bench.harness import runAsyncio, runTwisted, timedInLoop, timedInReactor, timedSync
from bench.orm_ops import newEntities, ormOp
from bench.schema import A
from bench.workload import Op, opPlan


def _warmCount(config: BenchConfig) -> int:
    # Enough untimed reads to open every pooled connection and fill caches.
    return 2 * config.concurrency


def ormSync(config: BenchConfig) -> dict[str, Any]:
    """
    The article's sync story: SQLAlchemy + psycopg2, one op after another.
    """
    engine = SA.create_engine(config.url("psycopg2"), pool_size=1)
    plan = opPlan(config.ops, config.seed)

    def runOps(ops: list[Op]) -> None:
        for op in ops:
            with Session(engine) as session, session.begin():
                ormOp(session, op)

    runOps([None] * _warmCount(config))
    try:
        return timedSync("ops", len(plan), lambda: runOps(plan))
    finally:
        engine.dispose()


# The asyncio stories, as the article wrote them (but with execute() for the
# 10-row read: stream() would open a server-side cursor for 10 rows).

READ_STMT = SA.select(A).options(selectinload(A.bs)).limit(10)


async def _asyncOp(maker: async_sessionmaker[AsyncSession], op: Op) -> None:
    async with maker() as session, session.begin():
        if op is None:
            result = await session.execute(READ_STMT)
            for a in result.scalars():
                for b in a.bs:
                    b.id  # noqa: B018 - touch each child, as the article did
        else:
            session.add_all(newEntities(op))  # flushed by the commit


def _asyncEngine(config: BenchConfig) -> Any:
    return create_async_engine(
        config.url("asyncpg"),
        pool_size=config.concurrency,
        max_overflow=0,
        pool_timeout=3600,  # tens of thousands of tasks queue for the pool
    )


def ormAsyncioTasks(config: BenchConfig) -> dict[str, Any]:
    """
    The article's async story one: every op a task at once (sleep(0) trick).
    """

    async def main() -> dict[str, Any]:
        engine = _asyncEngine(config)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        plan = opPlan(config.ops, config.seed)

        async def runAll(ops: list[Op]) -> None:
            tasks = []
            for op in ops:
                tasks.append(asyncio.create_task(_asyncOp(maker, op)))
                await asyncio.sleep(0)  # the article's trick
            await asyncio.gather(*tasks)

        await runAll([None] * _warmCount(config))
        try:
            return await timedInLoop("ops", len(plan), lambda: runAll(plan))
        finally:
            await engine.dispose()

    return runAsyncio(main())


def ormAsyncioChunked(config: BenchConfig) -> dict[str, Any]:
    """
    The article's async story two: gather the ops in chunks of 40.
    """

    async def main() -> dict[str, Any]:
        engine = _asyncEngine(config)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        plan = opPlan(config.ops, config.seed)

        async def runChunks(ops: list[Op]) -> None:
            for i in range(0, len(ops), config.chunk):
                await asyncio.gather(
                    *(_asyncOp(maker, op) for op in ops[i : i + config.chunk])
                )

        await runChunks([None] * _warmCount(config))
        try:
            return await timedInLoop("ops", len(plan), lambda: runChunks(plan))
        finally:
            await engine.dispose()

    return runAsyncio(main())


def ormThreadPool(config: BenchConfig) -> dict[str, Any]:
    """
    What a Twisted user writes without sAsync: C{deferToThreadPool} + sync
    ORM, a pool of N threads, a new Session per op.
    """
    from twisted.internet.defer import gatherResults
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    async def main(reactor: Any) -> dict[str, Any]:
        engine = SA.create_engine(
            config.url("psycopg2"), pool_size=config.concurrency, max_overflow=0
        )
        pool = ThreadPool(config.concurrency, config.concurrency, "bench-orm")
        pool.start()
        plan = opPlan(config.ops, config.seed)

        def oneOp(op: Op) -> None:
            # Runs in a pool thread; the Session lives and dies in it.
            with Session(engine) as session, session.begin():
                ormOp(session, op)

        async def runAll(ops: list[Op]) -> None:
            await gatherResults(
                [deferToThreadPool(reactor, pool, oneOp, op) for op in ops]
            )

        await runAll([None] * _warmCount(config))
        try:
            return await timedInReactor(reactor, "ops", len(plan), lambda: runAll(plan))
        finally:
            pool.stop()
            engine.dispose()

    return runTwisted(main)
