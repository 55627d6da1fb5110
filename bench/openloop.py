"""
The open-loop workload: calls of the SQL workload arrive at fixed rates,
whether or not the earlier ones are done, and each call's latency is
measured from the moment it was meant to arrive (so a late driver or a
blocked loop counts against the variant: no coordinated omission).

Each run first measures the variant's closed-loop maximum (C{2 x
concurrency} callers, each calling again as soon as its last call is
done), then offers L{FRACTIONS} of it, one level after the other, for
C{config.openSeconds} each, every one from freshly seeded tables (as the
maximum: the reads scan tables that the writes grow). The sAsync variant
has C{maxPending} set, so that above its maximum it refuses calls at once
with C{Overloaded} instead of letting the queue (and every accepted call's
latency) grow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.config import BenchConfig
from bench.database import resetOps
from bench.harness import adbapiPool, runAsyncio, runTwisted
from bench.measure import percentile
from bench.workload import Op, opPlan

#: The offered loads, as fractions of the measured closed-loop maximum.
FRACTIONS = (0.25, 0.5, 0.75, 0.9, 1.1)
#: Calls queued beyond the connections before sAsync refuses new ones.
PENDING_PER_CONNECTION = 4


class Level:
    """
    What one offered rate gave: latencies from the intended arrival times
    of the calls accepted, and how many were refused.
    """

    def __init__(self, fraction: float, offered: float, count: int) -> None:
        self.fraction = fraction
        self.offered = offered
        self.count = count
        self.latencies: list[float] = []
        self.refusals: list[float] = []
        self.began = 0.0
        self.ended = 0.0

    def intended(self, i: int) -> float:
        """
        When call C{i} is meant to arrive.
        """
        return self.began + i / self.offered

    def record(self) -> dict[str, Any]:
        """
        The level's figures for the result record (latencies in ms).
        """

        def ms(values: list[float], p: float) -> float:
            return round(1000 * percentile(values, p), 3)

        seconds = self.ended - self.began
        return {
            "fraction": self.fraction,
            "offered": round(self.offered, 1),
            "achieved": round(len(self.latencies) / seconds, 1) if seconds else 0.0,
            "calls": self.count,
            "refused": len(self.refusals),
            "p50Ms": ms(self.latencies, 50),
            "p99Ms": ms(self.latencies, 99),
            "p999Ms": ms(self.latencies, 99.9),
            "refusalP99Ms": ms(self.refusals, 99),
        }


def levels(config: BenchConfig, maximum: float) -> list[Level]:
    """
    The levels to offer, given the measured closed-loop C{maximum} (ops/s).
    """
    out = []
    for fraction in FRACTIONS:
        offered = max(1.0, fraction * maximum)
        count = max(20, round(offered * config.openSeconds))
        out.append(Level(fraction, offered, count))
    return out


def result(
    maximum: float, seconds: float, done: list[Level], **extra: Any
) -> dict[str, Any]:
    """
    The run's record: its closed-loop maximum as the rate, and each level.
    """
    return extra | {
        "unit": "ops",
        "count": sum(level.count for level in done),
        "seconds": round(seconds, 3),
        "rate": maximum,
        "levels": [level.record() for level in done],
    }


def isRefusal(error: BaseException) -> bool:
    """
    Whether a call was refused for overload (sAsync's C{Overloaded}).
    """
    return type(error).__name__ == "Overloaded"


# Twisted ----------------------------------------------------------------------


async def closedLoopTwisted(
    call: Callable[[Op], Any], plan: list[Op], window: int
) -> float:
    """
    The ops of C{plan} by C{window} callers, each calling again as soon as
    its last call is done; ops per second. (A window, not every op at once,
    so that sAsync's C{maxPending} never refuses one.)
    """
    from twisted.internet.defer import Deferred, gatherResults

    async def caller(ops: list[Op]) -> None:
        for op in ops:
            await call(op)

    began = time.perf_counter()
    await gatherResults(
        [Deferred.fromCoroutine(caller(plan[i::window])) for i in range(window)]
    )
    return len(plan) / (time.perf_counter() - began)


def offerTwisted(
    reactor: Any, call: Callable[[Op], Any], plan: list[Op], level: Level
) -> Any:
    """
    Offer C{level}: issue each call at its intended time (or, if the reactor
    is late, at once); a Deferred that fires when every call has ended.
    """
    from twisted.internet.defer import Deferred

    finished: Deferred[None] = Deferred()
    issued = ended = 0
    failure: list[Any] = []

    def landed(outcome: Any, intended: float) -> None:
        nonlocal ended
        now = time.perf_counter()
        error = getattr(outcome, "value", None)
        if error is None:
            level.latencies.append(now - intended)
        elif isRefusal(error):
            level.refusals.append(now - intended)
        elif not failure:
            failure.append(outcome)
        ended += 1
        if ended == level.count:
            level.ended = now
            if failure:
                finished.errback(failure[0])
            else:
                finished.callback(None)

    def issue() -> None:
        nonlocal issued
        now = time.perf_counter()
        while issued < level.count and level.intended(issued) <= now:
            intended = level.intended(issued)
            op = plan[issued % len(plan)]
            issued += 1
            call(op).addBoth(landed, intended)
        if issued < level.count:
            reactor.callLater(max(0.0, level.intended(issued) - now), issue)

    level.began = time.perf_counter()
    issue()
    return finished


def runOpenTwisted(
    config: BenchConfig,
    setUp: Callable[[Any], Awaitable[tuple[Callable[[Op], Any], Callable[[], Any]]]],
) -> dict[str, Any]:
    """
    The open-loop run of a Twisted variant; C{setUp(reactor)} gives its
    call (one op, a Deferred) and what closes it.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        from twisted.internet.threads import deferToThread

        from bench.lag import ReactorLagProbe

        call, close = await setUp(reactor)
        plan = opPlan(config.ops, config.seed)
        probe = ReactorLagProbe(reactor)
        began = time.perf_counter()
        probe.start()
        try:
            window = 2 * config.concurrency
            await closedLoopTwisted(call, [None] * window, window)
            await deferToThread(resetOps, config)
            maximum = await closedLoopTwisted(call, plan, window)
            done = []
            for level in levels(config, maximum):
                # Every level starts from the same tables as the maximum.
                await deferToThread(resetOps, config)
                await offerTwisted(reactor, call, plan, level)
                done.append(level)
        finally:
            lag = probe.stop()
            await close()
        return result(maximum, time.perf_counter() - began, done, lag=lag)

    return runTwisted(main)


def openSasync(config: BenchConfig) -> dict[str, Any]:
    """
    sAsync: C{@transact} with C{self.conn} (as C{sql-sasync}), C{maxPending}
    set.
    """

    async def setUp(reactor: Any) -> tuple[Callable[[Op], Any], Callable[[], Any]]:
        from bench.sasync_variants import BenchBroker

        broker = BenchBroker(
            config.url("psycopg2"),
            connections=config.concurrency,
            maxPending=PENDING_PER_CONNECTION * config.concurrency,
        )
        await broker.waitUntilRunning()
        return broker.sqlOp, broker.shutdown

    return runOpenTwisted(config, setUp)


def openAdbapi(config: BenchConfig) -> dict[str, Any]:
    """
    C{twisted.enterprise.adbapi} (as C{sql-adbapi}): no admission control.
    """

    async def setUp(reactor: Any) -> tuple[Callable[[Op], Any], Callable[[], Any]]:
        from twisted.internet.defer import succeed

        from bench.workload import sqlOp

        pool = adbapiPool(config, reactor)

        def close() -> Any:
            pool.close()
            return succeed(None)

        return (lambda op: pool.runInteraction(sqlOp, op)), close

    return runOpenTwisted(config, setUp)


# asyncio ----------------------------------------------------------------------


def openAsyncpg(config: BenchConfig) -> dict[str, Any]:
    """
    An asyncpg pool (as C{sql-asyncpg}): no admission control.
    """
    import asyncpg

    from bench.sql_peers import asyncpgOp

    async def offer(pool: Any, plan: list[Op], level: Level) -> None:
        loop = asyncio.get_running_loop()
        tasks = []

        async def one(op: Op, intended: float) -> None:
            await asyncpgOp(pool, op)
            level.latencies.append(time.perf_counter() - intended)

        level.began = time.perf_counter()
        for i in range(level.count):
            delay = level.intended(i) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(one(plan[i % len(plan)], level.intended(i))))
        await asyncio.gather(*tasks)
        level.ended = time.perf_counter()

    async def main() -> dict[str, Any]:
        pool = await asyncpg.create_pool(
            config.asyncpgDsn, min_size=config.concurrency, max_size=config.concurrency
        )
        plan = opPlan(config.ops, config.seed)
        began = time.perf_counter()
        try:
            warm = [None] * (2 * config.concurrency)
            await asyncio.gather(*(asyncpgOp(pool, op) for op in warm))
            window = 2 * config.concurrency

            async def caller(ops: list[Op]) -> None:
                for op in ops:
                    await asyncpgOp(pool, op)

            await asyncio.to_thread(resetOps, config)
            t = time.perf_counter()
            await asyncio.gather(*(caller(plan[i::window]) for i in range(window)))
            maximum = len(plan) / (time.perf_counter() - t)
            done = []
            for level in levels(config, maximum):
                await asyncio.to_thread(resetOps, config)
                await offer(pool, plan, level)
                done.append(level)
        finally:
            await pool.close()
        return result(maximum, time.perf_counter() - began, done)

    return runAsyncio(main())
