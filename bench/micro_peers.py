"""
Micro benchmarks, the peers: plain Twisted thread dispatch, a plain Twisted
iterator hand-off, and C{adbapi}/psycopg2 trivial transactions.
"""

from __future__ import annotations

from typing import Any

import psycopg2

from bench.config import BenchConfig
from bench.consumer import CountingConsumer
from bench.harness import adbapiPool, runTwisted, timedInReactor, timedSync


def noop() -> None:
    """
    The task dispatched: nothing, so only the dispatch is timed.
    """


def dispatchDeferToThread(config: BenchConfig) -> dict[str, Any]:
    """
    C{threads.deferToThread(noop)} x calls, all at once, N reactor threads.
    """
    from twisted.internet.defer import gatherResults
    from twisted.internet.threads import deferToThread

    async def main(reactor: Any) -> dict[str, Any]:
        reactor.suggestThreadPoolSize(config.concurrency)

        async def burst(n: int) -> None:
            await gatherResults([deferToThread(noop) for _ in range(n)])

        await burst(1000)  # start the pool's threads
        return await timedInReactor(
            reactor, "calls", config.calls, lambda: burst(config.calls)
        )

    return runTwisted(main)


def iterateDeferToThreadList(config: BenchConfig) -> dict[str, Any]:
    """
    Plain Twisted: build the whole list in a thread, then write each item to
    a consumer in the reactor (fast, but memory grows with the items).
    """
    from twisted.internet.threads import deferToThread

    async def main(reactor: Any) -> dict[str, Any]:
        consumer = CountingConsumer()

        async def work() -> None:
            items = await deferToThread(list, iter(range(config.items)))
            for item in items:
                consumer.write(item)

        result = await timedInReactor(reactor, "items", config.items, work)
        result["counted"] = consumer.items
        return result

    return runTwisted(main)


def select1Adbapi(config: BenchConfig) -> dict[str, Any]:
    """
    Sequential C{runQuery("SELECT 1")}: per-transaction overhead of adbapi.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        pool = adbapiPool(config, reactor)

        async def work(n: int) -> None:
            for _ in range(n):
                await pool.runQuery("SELECT 1")

        await work(2 * config.concurrency)
        try:
            return await timedInReactor(
                reactor, "txns", config.selects, lambda: work(config.selects)
            )
        finally:
            pool.close()

    return runTwisted(main)


def select1Psycopg2(config: BenchConfig) -> dict[str, Any]:
    """
    Sequential C{SELECT 1} transactions on one psycopg2 connection, no
    Twisted at all: the floor under every threaded variant.
    """
    conn = psycopg2.connect(config.psycopg2Dsn)

    def work() -> None:
        for _ in range(config.selects):
            with conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()

    try:
        return timedSync("txns", config.selects, work)
    finally:
        conn.close()


def idleReactor(config: BenchConfig) -> dict[str, Any]:
    """
    The lag probe alone for C{config.idle} seconds: the noise floor of
    workload 4 on this machine (scheduling, other tenants), not a variant.
    """
    from twisted.internet.task import deferLater

    async def main(reactor: Any) -> dict[str, Any]:
        async def work() -> None:
            await deferLater(reactor, config.idle, lambda: None)

        return await timedInReactor(reactor, "s", 1, work)

    return runTwisted(main)
