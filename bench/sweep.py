"""
How cost grows with the number of connections: the SQL workload's plan,
every op at once, on pools of L{CONNECTIONS} connections in turn (a new
pool for each, in one process), with each op's latency from its
submission. sAsync runs its default SERIALIZABLE and READ COMMITTED (what
adbapi gets from the server), so that what conflicts cost as connections
grow shows apart from what the machinery costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.config import BenchConfig
from bench.database import resetOps
from bench.harness import adbapiPool, runTwisted
from bench.measure import percentile
from bench.workload import Op, opPlan

#: The pool sizes swept.
CONNECTIONS = (1, 2, 4, 8, 16, 32)


async def _timedPlan(call: Callable[[Op], Any], plan: list[Op]) -> dict[str, Any]:
    from twisted.internet.defer import gatherResults

    latencies: list[float] = []

    def timed(op: Op) -> Any:
        began = time.perf_counter()

        def done(result: object) -> object:
            latencies.append(time.perf_counter() - began)
            return result

        return call(op).addBoth(done)

    began = time.perf_counter()
    await gatherResults([timed(op) for op in plan])
    seconds = time.perf_counter() - began
    return {
        "rate": round(len(plan) / seconds, 1),
        "p50Ms": round(1000 * percentile(latencies, 50), 3),
        "p99Ms": round(1000 * percentile(latencies, 99), 3),
    }


def _sweep(
    config: BenchConfig,
    makePool: Callable[[int], Any],
) -> dict[str, Any]:
    """
    C{makePool(n)} gives a Deferred firing with (call, close) for a pool of
    C{n} connections.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        from twisted.internet.threads import deferToThread

        plan = opPlan(config.ops, config.seed)
        points = []
        began = time.perf_counter()
        for n in CONNECTIONS:
            call, close = await makePool(n)
            try:
                await _timedPlan(call, [None] * (2 * n))  # connect them all
                # Each size from the same tables (the reads scan what the
                # writes grow).
                await deferToThread(resetOps, config)
                point = await _timedPlan(call, plan)
            finally:
                await close()
            points.append({"connections": n, **point})
        best = max(point["rate"] for point in points)
        return {
            "unit": "ops",
            "count": len(plan) * len(CONNECTIONS),
            "seconds": round(time.perf_counter() - began, 3),
            "rate": best,
            "sweep": points,
        }

    return runTwisted(main)


def _sasyncPools(config: BenchConfig, **kw: Any) -> Callable[[int], Any]:
    async def makePool(n: int) -> tuple[Callable[[Op], Any], Callable[[], Any]]:
        from bench.sasync_variants import BenchBroker

        broker = BenchBroker(config.url("psycopg2"), connections=n, **kw)
        await broker.waitUntilRunning()
        return broker.sqlOp, broker.shutdown

    return makePool


def sweepSasync(config: BenchConfig) -> dict[str, Any]:
    """
    sAsync C{@transact} + C{self.conn} (default SERIALIZABLE), 1 to 32
    connections.
    """
    return _sweep(config, _sasyncPools(config))


def sweepSasyncReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    The same with the READ COMMITTED opt-out.
    """
    return _sweep(config, _sasyncPools(config, isolation_level="READ COMMITTED"))


def sweepAdbapi(config: BenchConfig) -> dict[str, Any]:
    """
    C{twisted.enterprise.adbapi}, 1 to 32 connections.
    """

    async def makePool(n: int) -> tuple[Callable[[Op], Any], Callable[[], Any]]:
        from twisted.internet.defer import succeed

        from bench.workload import sqlOp

        pool = adbapiPool(config, connections=n)

        def close() -> Any:
            pool.close()
            return succeed(None)

        return (lambda op: pool.runInteraction(sqlOp, op)), close

    return _sweep(config, makePool)
