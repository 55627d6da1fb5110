"""
Workload 3, the peers: stream every row of the C{stream} table, counting
rows. Each runs in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

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
from bench.statements import STREAM_QUERY

# Rows fetched per round trip by the cursor-based variants.
BATCH = 2000


def streamPsycopg2(config: BenchConfig) -> dict[str, Any]:
    """
    A psycopg2 named (server-side) cursor, C{itersize} rows per fetch.
    """
    conn = psycopg2.connect(config.psycopg2Dsn)
    counted = [0]

    def work() -> None:
        with conn, conn.cursor(name="bench_stream") as cur:
            cur.itersize = BATCH
            cur.execute(STREAM_QUERY)
            n = 0
            for _row in cur:
                n += 1
            counted[0] = n

    try:
        result = timedSync("rows", config.rows, work)
    finally:
        conn.close()
    result["counted"] = counted[0]
    return result


def streamAsyncpg(config: BenchConfig) -> dict[str, Any]:
    """
    An asyncpg cursor (server-side, C{prefetch} rows per fetch) in a transaction.
    """
    import asyncpg

    async def main() -> dict[str, Any]:
        conn = await asyncpg.connect(config.asyncpgDsn)
        counted = [0]

        async def work() -> None:
            async with conn.transaction():
                n = 0
                async for _row in conn.cursor(STREAM_QUERY, prefetch=BATCH):
                    n += 1
                counted[0] = n

        try:
            result = await timedInLoop("rows", config.rows, work)
        finally:
            await conn.close()
        result["counted"] = counted[0]
        return result

    return runAsyncio(main())


def streamAdbapi(config: BenchConfig) -> dict[str, Any]:
    """
    C{adbapi.ConnectionPool.runQuery}: the whole result as one list (what
    adbapi offers), then iterated in the reactor.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        pool = adbapiPool(config, reactor, 1)
        await pool.runQuery("SELECT 1")  # connect before the clock starts
        counted = [0]

        async def work() -> None:
            rows = await pool.runQuery(STREAM_QUERY)
            n = 0
            for _row in rows:
                n += 1
            counted[0] = n

        try:
            result = await timedInReactor(reactor, "rows", config.rows, work)
        finally:
            pool.close()
        result["counted"] = counted[0]
        return result

    return runTwisted(main)


def streamThreadPsycopg2(config: BenchConfig) -> dict[str, Any]:
    """
    The psycopg2 named cursor run in C{deferToThread}, rows counted in the
    thread: no hand-off at all, so its reactor lag is what merely having a
    thread fetch and parse rows (the GIL) costs a Twisted program.
    """
    from twisted.internet.threads import deferToThread

    conn = psycopg2.connect(config.psycopg2Dsn)
    counted = [0]

    def fetchAll() -> None:
        # Runs in one pool thread; the connection is used by it alone.
        with conn, conn.cursor(name="bench_stream") as cur:
            cur.itersize = BATCH
            cur.execute(STREAM_QUERY)
            n = 0
            for _row in cur:
                n += 1
            counted[0] = n

    async def main(reactor: Any) -> dict[str, Any]:
        async def work() -> None:
            await deferToThread(fetchAll)

        return await timedInReactor(reactor, "rows", config.rows, work)

    try:
        result = runTwisted(main)
    finally:
        conn.close()
    result["counted"] = counted[0]
    return result


def streamThreadSqlalchemy(config: BenchConfig) -> dict[str, Any]:
    """
    SQLAlchemy Core streaming (C{stream_results}, C{fetchmany}) in
    C{deferToThread}, counted there: the ceiling of any thread-based
    SQLAlchemy streamer before it hands a single row to the reactor.
    """
    import sqlalchemy as SA
    from twisted.internet.threads import deferToThread

    engine = SA.create_engine(config.url("psycopg2"), pool_size=1)
    query = SA.text(STREAM_QUERY)
    counted = [0]

    def fetchAll() -> None:
        # Runs in one pool thread, which alone uses the connection.
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(query)
            n = 0
            while rows := result.fetchmany(BATCH):
                n += len(rows)
            counted[0] = n

    async def main(reactor: Any) -> dict[str, Any]:
        await deferToThread(lambda: engine.connect().close())  # connect first

        async def work() -> None:
            await deferToThread(fetchAll)

        return await timedInReactor(reactor, "rows", config.rows, work)

    try:
        result = runTwisted(main)
    finally:
        engine.dispose()
    result["counted"] = counted[0]
    return result
