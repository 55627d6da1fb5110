"""Running a variant's coroutine under a fresh Twisted reactor or asyncio loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from bench.config import BenchConfig
from bench.lag import AsyncioLagProbe, ReactorLagProbe
from bench.measure import Measurement

T = TypeVar("T")


def adbapiPool(
    config: BenchConfig, reactor: Any = None, connections: int | None = None
) -> Any:
    """
    The peer every adbapi variant runs: a C{twisted.enterprise.adbapi}
    C{ConnectionPool} on psycopg2 of C{connections} connections
    (C{--concurrency} by default), quiet.
    """
    from twisted.enterprise import adbapi

    n = config.concurrency if connections is None else connections
    options: dict[str, Any] = {"cp_min": n, "cp_max": n, "cp_noisy": False}
    if reactor is not None:
        options["cp_reactor"] = reactor
    return adbapi.ConnectionPool("psycopg2", config.psycopg2Dsn, **options)


def runTwisted(main: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """
    Run C{main(reactor)} under the global reactor and return its result.

    Each variant runs in its own process, so running (and stopping) the
    non-restartable global reactor once here is fine.
    """
    # Imported here so sync and asyncio variants never load Twisted at all.
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    outcome: list[Any] = []

    def go() -> None:
        d = Deferred.fromCoroutine(main(reactor))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if not outcome:
        raise RuntimeError("reactor stopped before the benchmark finished")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    result: T = outcome[0]
    return result


async def timedInReactor(
    reactor: Any, unit: str, count: int, work: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    """
    Time C{await work()} with the reactor lag probe running alongside.
    """
    probe = ReactorLagProbe(reactor)
    measurement = Measurement(unit)
    probe.start()
    measurement.start()
    await work()
    return measurement.stop(count, lag=probe.stop())


async def timedInLoop(
    unit: str, count: int, work: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    """
    Time C{await work()} with the asyncio lag probe running alongside.
    """
    probe = AsyncioLagProbe()
    measurement = Measurement(unit)
    probe.start()
    measurement.start()
    await work()
    return measurement.stop(count, lag=probe.stop())


def runAsyncio(main: Coroutine[Any, Any, T]) -> T:
    """
    Run C{main} in a fresh asyncio loop.
    """
    return asyncio.run(main)


def timedSync(unit: str, count: int, work: Callable[[], object]) -> dict[str, Any]:
    """
    Time a blocking C{work()} (no event loop, so no lag to probe).
    """
    measurement = Measurement(unit)
    measurement.start()
    work()
    return measurement.stop(count)
