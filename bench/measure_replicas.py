"""
Replica figures on this machine, with a primary and two standbys of its own
(see L{tests.replicas.cluster}; the second standby replays 300 ms late):

  - read throughput (eventual consistency, 8 reads in flight) with 0, 1
    and 2 standbys;
  - the latency of a read made right after a write, session consistency
    against eventual (p50/p99), and how many of those reads were stale;
  - what learning C{writePosition} costs a write transaction.

    .venv/bin/python -m bench.measure_replicas [--reads N]

All servers share this machine's cores, so throughput does not grow with
standbys here: see docs/scaling.md for how it scales on separate machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults

from tests.replicas.cluster import ReplicatedCluster
from tests.replicas.test_replicas import Notes


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def allHealthy(broker: Notes, count: int) -> None:
    from twisted.internet import reactor

    while sum(r.healthy for r in broker._replicas.replicas) != count:  # type: ignore[union-attr]
        await task.deferLater(reactor, 0.05, lambda: None)


async def readThroughput(url: str, standbys: list[str], ID: int, reads: int) -> float:
    broker = (
        Notes(url, replicas=standbys, consistency="eventual")
        if standbys
        else Notes(url)
    )
    await broker.waitUntilRunning()
    if standbys:
        await allHealthy(broker, len(standbys))

    async def reader(n: int) -> None:
        for _ in range(n):
            await broker.get(ID)

    start = time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(reader(reads // 8)) for _ in range(8)])
    elapsed = time.perf_counter() - start
    await broker.shutdown()
    return (reads // 8) * 8 / elapsed


async def readAfterWrite(
    url: str, standbys: list[str], consistency: str, pairs: int
) -> tuple[list[float], int]:
    broker = Notes(url, replicas=standbys, consistency=consistency)
    await broker.waitUntilRunning()
    await allHealthy(broker, len(standbys))
    latencies = []
    stale = 0
    for i in range(pairs):
        ID = await broker.add(i)
        start = time.perf_counter()
        n, _ = await broker.get(ID)
        latencies.append(time.perf_counter() - start)
        stale += n != i
    await broker.shutdown()
    return latencies, stale


async def writeCost(url: str, writes: int, track: bool) -> float:
    broker = Notes(url)
    await broker.waitUntilRunning()
    broker._engine.tracksWritePosition = track  # type: ignore[union-attr]
    start = time.perf_counter()
    for i in range(writes):
        await broker.add(i)
    elapsed = time.perf_counter() - start
    await broker.shutdown()
    return elapsed / writes


async def measure(reactor: Any, args: argparse.Namespace) -> None:
    cluster = ReplicatedCluster()
    try:
        url, standbys = cluster.createDatabase()
        setup = Notes(url)
        ID = await setup.add(1)
        await setup.shutdown()
        cluster.waitForReplay()
        for count in (0, 1, 2):
            rate = await readThroughput(url, standbys[:count], ID, args.reads)
            print(f"reads/s with {count} standbys: {rate:.0f}")
        for consistency in ("eventual", "session"):
            latencies, stale = await readAfterWrite(
                url, standbys, consistency, args.pairs
            )
            print(
                f"read right after a write, {consistency}: p50"
                f" {percentile(latencies, 50) * 1000:.2f} ms, p99"
                f" {percentile(latencies, 99) * 1000:.2f} ms, mean"
                f" {statistics.mean(latencies) * 1000:.2f} ms;"
                f" {stale} stale of {args.pairs}"
            )
        for track in (False, True) * 3:
            cost = await writeCost(url, args.pairs, track)
            print(
                f"write transaction, writePosition {'on' if track else 'off'}:"
                f" {cost * 1000:.3f} ms"
            )
    finally:
        cluster.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--pairs", type=int, default=500)
    args = parser.parse_args(argv)
    task.react(lambda reactor: Deferred.fromCoroutine(measure(reactor, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
