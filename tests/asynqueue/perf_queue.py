"""
Ad-hoc performance check for AsynQueue (not a test; pytest doesn't collect
it). Run from the repository root:

    .venv/bin/python -m tests.asynqueue.perf_queue [--rounds 5] [--calls 20000]

It prints, in the same run:
  - sequential dispatch: C{await ThreadQueue(1).call(noop)} one after another
    against C{await deferToThread(noop)};
  - burst dispatch: N calls at once on 8 threads, both ways;
  - 1,000,000 items of an iterator through C{call(..., consumer=)}.
Each figure is the median of the rounds, rounds interleaved so that both
sides see the same machine load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred, gatherResults


def noop() -> None:
    """
    The call being dispatched.
    """


class CountingConsumer:
    """
    An IConsumer that only counts what it gets.
    """

    def __init__(self) -> None:
        self.count = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: Any) -> None:
        self.count += 1


async def timed(work: Callable[[], Coroutine[Any, Any, None]]) -> float:
    t0 = time.perf_counter()
    await work()
    return time.perf_counter() - t0


async def main(reactor: Any, rounds: int, calls: int, items: int) -> None:
    from twisted.internet.interfaces import IConsumer
    from twisted.internet.threads import deferToThread
    from zope.interface import directlyProvides

    from asynqueue import ThreadQueue

    reactor.suggestThreadPoolSize(8)
    q1 = ThreadQueue(1)
    q8 = ThreadQueue(8)

    async def seqQueue() -> None:
        call = q1.call
        for _ in range(calls):
            await call(noop)

    async def seqThread() -> None:
        for _ in range(calls):
            await deferToThread(noop)

    async def burstQueue() -> None:
        await gatherResults([q8.call(noop) for _ in range(calls)])

    async def burstThread() -> None:
        await gatherResults([deferToThread(noop) for _ in range(calls)])

    # Warm up threads and code paths.
    for f in (seqQueue, seqThread, burstQueue, burstThread):
        await f()
    results: dict[str, list[float]] = {k: [] for k in ("sq", "st", "bq", "bt")}
    for _ in range(rounds):
        results["sq"].append(calls / await timed(seqQueue))
        results["st"].append(calls / await timed(seqThread))
        results["bq"].append(calls / await timed(burstQueue))
        results["bt"].append(calls / await timed(burstThread))
    med = {k: statistics.median(v) for k, v in results.items()}
    ratios = [q / t for q, t in zip(results["sq"], results["st"], strict=True)]
    bratios = [q / t for q, t in zip(results["bq"], results["bt"], strict=True)]
    print(f"sequential: ThreadQueue.call {med['sq']:9,.0f}/s  "
          f"deferToThread {med['st']:9,.0f}/s  ratio {statistics.median(ratios):.2f}x")
    print(f"burst(8):   ThreadQueue.call {med['bq']:9,.0f}/s  "
          f"deferToThread {med['bt']:9,.0f}/s  ratio {statistics.median(bratios):.2f}x")

    rates = []
    for _ in range(max(1, rounds // 2)):
        consumer = CountingConsumer()
        directlyProvides(consumer, IConsumer)

        async def stream(consumer: Any = consumer) -> None:
            await q1.call(lambda: iter(range(items)), consumer=consumer)

        rates.append(items / await timed(stream))
        assert consumer.count == items
    print(f"consumer=:  {items:,} items  {statistics.median(rates):12,.0f} items/s")
    await q1.shutdown()
    await q8.shutdown()


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--profile", choices=["seq", "burst"], default=None)
    args = parser.parse_args()
    from twisted.internet.task import react

    if args.profile:
        _profile(args)
        return
    react(
        lambda r: Deferred.fromCoroutine(main(r, args.rounds, args.calls, args.items))
    )


def _profile(args: Any) -> None:
    import cProfile
    import pstats

    from twisted.internet.task import react

    from asynqueue import ThreadQueue

    async def work(reactor: Any) -> None:
        q = ThreadQueue(8 if args.profile == "burst" else 1)
        await q.call(noop)
        profiler = cProfile.Profile()
        profiler.enable()
        if args.profile == "burst":
            await gatherResults([q.call(noop) for _ in range(args.calls)])
        else:
            for _ in range(args.calls):
                await q.call(noop)
        profiler.disable()
        await q.shutdown()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)

    react(lambda r: Deferred.fromCoroutine(work(r)))


if __name__ == "__main__":
    run()
