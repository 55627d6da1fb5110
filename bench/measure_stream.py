"""
What streaming rows costs the client, per row and per batch, in the two
forms of workload 3: C{async for} over the Deferator, and C{consumer=}::

    python -m bench.measure_stream [--database D] [--rows N] [--bytecodes]
        [--top 20] [--only deferator,consumer]

The database is created, filled with C{--rows} rows, and dropped. Each form
runs in a child process of its own, and prints: per batch, the reactor's
wake-ups from threads (hand-offs), the fetches started, the batches that
landed with no other fetch on its way (the worker thread idle until the
reactor asks again), the producer's runs, lends, pauses and resumes; the
seconds of wall, of CPU (the process's, the reactor thread's), of the
worker thread in C{BatchTaker.take} (wall and CPU), the reactor's idle
share, garbage collections by generation; and with C{--bytecodes}, the
bytecodes per row of all threads, and the functions that run most.
The counts are deterministic; the seconds vary from run to run.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import subprocess
import sys
import time
from typing import Any

from bench.config import BenchConfig
from bench.measure_machinery import _BytecodeCounter, _countHandOffs, _shortName

FORMS = ("deferator", "consumer")


def _patch(name: str, cls: Any, counts: collections.Counter[str]) -> None:
    # Count the calls of cls.name.
    original = getattr(cls, name)

    def counted(self: Any, *args: Any, **kw: Any) -> Any:
        counts[f"{cls.__name__}.{name}"] += 1
        return original(self, *args, **kw)

    setattr(cls, name, counted)


def _instrument(counts: collections.Counter[str]) -> None:
    from asynqueue.deferator import Deferator
    from asynqueue.producer import IterationProducer

    for name in ("_startFetch", "lend", "pause", "resume"):
        _patch(name, Deferator, counts)
    for name in ("_produce", "pauseProducing", "resumeProducing"):
        _patch(name, IterationProducer, counts)
    gotBatch = Deferator._gotBatch

    def landed(self: Deferator[Any], batch: Any) -> None:
        counts["batches"] += 1
        if self._inFlight == 1:
            # The last fetch on its way lands: the worker has nothing to
            # read until the reactor asks again.
            counts["landedLast"] += 1
        gotBatch(self, batch)

    Deferator._gotBatch = landed  # type: ignore[method-assign]


def _takeClock(times: list[float]) -> None:
    # Wall and CPU seconds the worker thread spends taking batches.
    from asynqueue.deferator import BatchTaker

    take = BatchTaker.take

    def timed(self: BatchTaker[Any]) -> Any:
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return take(self)
        finally:
            times[0] += time.perf_counter() - w0
            times[1] += time.thread_time() - c0

    BatchTaker.take = timed  # type: ignore[method-assign]


def _idleClock(reactor: Any) -> list[float]:
    # Seconds the reactor spends waiting in its poll (nothing to run).
    idle = [0.0]
    original = reactor.doIteration

    def timed(timeout: float | None) -> None:
        t0 = time.perf_counter()
        original(timeout)
        idle[0] += time.perf_counter() - t0

    reactor.doIteration = timed
    return idle


def child(config: BenchConfig, form: str, top: int) -> None:
    """
    Stream every row once in C{form}; print the counts as JSON.
    """
    from bench.consumer import CountingConsumer
    from bench.harness import runTwisted
    from bench.sasync_variants import _makeBroker

    counter = _BytecodeCounter() if top else None
    if counter is not None:
        counter.install()
    counts: collections.Counter[str] = collections.Counter()

    async def main(reactor: Any) -> dict[str, Any]:
        broker = _makeBroker(config)
        await broker.waitUntilRunning()
        await broker.selectOne()
        _instrument(counts)
        handOffs = _countHandOffs(reactor)
        idle = _idleClock(reactor)
        taking = [0.0, 0.0]
        _takeClock(taking)
        collections0 = [g["collections"] for g in gc.get_stats()]
        rows = 0
        if counter is not None:
            counter.on = True
        t0, cpu0, rcpu0 = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            if form == "consumer":
                consumer = CountingConsumer()
                await broker.streamRows(consumer=consumer)
                rows = consumer.items
            else:
                async for _row in await broker.streamRows():
                    rows += 1
        finally:
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            reactorCpu = time.thread_time() - rcpu0
            if counter is not None:
                counter.on = False
            await broker.shutdown()
        batches = max(1, counts["batches"])
        figures: dict[str, Any] = {
            "form": form,
            "rows": rows,
            "batches": counts["batches"],
            "wall": round(wall, 3),
            "cpu": round(cpu, 3),
            "reactorCpu": round(reactorCpu, 3),
            "takeWall": round(taking[0], 3),
            "takeCpu": round(taking[1], 3),
            "gcCollections": [
                g["collections"] - n
                for g, n in zip(gc.get_stats(), collections0, strict=True)
            ],
            "idleShare": round(idle[0] / wall, 3),
            "handOffsPerBatch": round(handOffs[0] / batches, 3),
        }
        for key, n in sorted(counts.items()):
            if key != "batches":
                figures[f"{key}/batch"] = round(n / batches, 3)
        return figures

    figures = runTwisted(main)
    if counter is not None:
        rows = max(1, figures["rows"])
        figures["bytecodesPerRow"] = round(sum(counter.counts.values()) / rows, 2)
        for key, n in counter.counts.most_common(top):
            print(f"{n / rows:8.2f}  {_shortName(key)}")
    print(json.dumps(figures))


def main(argv: list[str] | None = None) -> None:
    """
    Measure each form in a child process.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.measure_stream")
    parser.add_argument("--database", default="bench_stream")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--only", default=",".join(FORMS))
    parser.add_argument("--bytecodes", action="store_true")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = BenchConfig(database=args.database)
    top = args.top if args.bytecodes else 0
    if args.rest:
        child(config, args.rest[1], top)
        return
    from bench import database

    database.createDatabase(config)
    try:
        database.fillStream(config, args.rows)
        for form in args.only.split(","):
            print(f"== {form}", flush=True)
            command = [sys.executable, "-m", "bench.measure_stream", "--database"]
            command += [args.database, "--top", str(args.top)]
            command += ["--bytecodes"] if top else []
            command += ["child", form]
            subprocess.run(command, check=True)
    finally:
        database.dropDatabase(config)


if __name__ == "__main__":
    main()
