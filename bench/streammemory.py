"""
How memory grows with result size: the first C{n} rows of the C{stream}
table (L{bench.schema}) streamed and counted, for every C{n} of L{sizes}
(1,000, 10,000, ... up to 10 x C{--rows}: 10,000,000 at full scale), each
size in a fresh process of its own, so that each size's peak RSS (Linux's
C{VmHWM}, see L{bench.measure.peakRssMb}) is that size's alone.

A variant's child runs its sizes one after the other, each as
C{python -m bench.streammemory HOW ROWS CONFIG.json OUT.json}, and reports
every size's point (C{sweep}); its own figures are the largest size's. The
runner fills the table once, up to the largest size, before the first
variant, and every size reads C{LIMIT n} of it. A stream that holds only a
bounded window of rows peaks at the same RSS whatever the size: its target
(L{bench.targets}) bounds the peak at the largest size against the peak
at the smallest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

from bench.config import BenchConfig
from bench.consumer import CountingConsumer
from bench.harness import runTwisted, timedInReactor, timedSync
from bench.measure import peakRssMb
from bench.statements import STREAM_QUERY
from bench.stream_peers import BATCH

#: The smallest size, and the largest as a multiple of C{--rows}.
SMALLEST, SCALE = 1000, 10

FIRST_ROWS = STREAM_QUERY + " LIMIT %s"


def sizes(config: BenchConfig) -> list[int]:
    """
    The result sizes: powers of ten from L{SMALLEST} up to C{SCALE x
    config.rows} (10,000,000 at full scale, 10,000 under C{--smoke}).
    """
    largest = SCALE * config.rows
    if largest < SMALLEST:
        return [largest]
    out = [SMALLEST]
    while out[-1] * 10 <= largest:
        out.append(out[-1] * 10)
    return out


# One size, in its own process ------------------------------------------------


def sizePsycopg2(config: BenchConfig, rows: int) -> dict[str, Any]:
    """
    The peer: a psycopg2 named (server-side) cursor, C{BATCH} rows a fetch.
    """
    conn = psycopg2.connect(config.psycopg2Dsn)
    counted = [0]

    def work() -> None:
        with conn, conn.cursor(name="bench_memory") as cur:
            cur.itersize = BATCH
            cur.execute(FIRST_ROWS, (rows,))
            counted[0] = sum(1 for _row in cur)

    try:
        result = timedSync("rows", rows, work)
    finally:
        conn.close()
    return result | {"counted": counted[0]}


def sizeSasync(config: BenchConfig, rows: int, consumer: bool) -> dict[str, Any]:
    """
    sAsync on one connection: C{async for} over the Deferator, or (with
    C{consumer}) into a counting C{IConsumer}.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        from bench.growth_brokers import GrowthBroker

        broker = GrowthBroker(config.url("psycopg2"), connections=1)
        await broker.waitUntilRunning()
        await broker.selectOne()  # connect before the clock starts
        counted = [0]

        async def work() -> None:
            if consumer:
                sink = CountingConsumer()
                await broker.firstRows(rows, consumer=sink)
                counted[0] = sink.items
                return
            async for _row in await broker.firstRows(rows):
                counted[0] += 1

        try:
            result = await timedInReactor(reactor, "rows", rows, work)
        finally:
            await broker.shutdown()
        return result | {"counted": counted[0]}

    return runTwisted(main)


RUNNERS: dict[str, Callable[[BenchConfig, int], dict[str, Any]]] = {
    "psycopg2": sizePsycopg2,
    "deferator": lambda config, rows: sizeSasync(config, rows, consumer=False),
    "consumer": lambda config, rows: sizeSasync(config, rows, consumer=True),
}


def main(argv: list[str]) -> int:
    """
    The per-size process: run C{HOW} on C{ROWS} rows, write its record
    with this process's peak RSS (or its error); exit status 1 on error.
    """
    how, rows, configPath, outPath = argv
    config = BenchConfig.fromJson(Path(configPath).read_text())
    try:
        record = RUNNERS[how](config, int(rows))
        record["peakRssMb"] = round(peakRssMb(), 1)
    except BaseException:
        record = {"error": traceback.format_exc()}
    Path(outPath).write_text(json.dumps(record))
    return 1 if "error" in record else 0


# A variant: every size ------------------------------------------------------


def runSize(how: str, rows: int, config: BenchConfig) -> dict[str, Any]:
    """
    One size in a fresh process; its record, or C{RuntimeError}.
    """
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        configPath, outPath = Path(tmp, "config.json"), Path(tmp, "out.json")
        configPath.write_text(config.toJson())
        command = [sys.executable, "-m", "bench.streammemory", how, str(rows)]
        done = subprocess.run(
            [*command, str(configPath), str(outPath)],
            capture_output=True,
            text=True,
            check=False,
        )
        if not outPath.exists():
            raise RuntimeError(f"exit {done.returncode}: {done.stderr[-3000:]}")
        record: dict[str, Any] = json.loads(outPath.read_text())
    if "error" in record:
        raise RuntimeError(f"{how}, {rows:,} rows: {record['error']}")
    return record


def point(rows: int, record: dict[str, Any]) -> dict[str, Any]:
    """
    One size's figures for the sweep (RSS in MiB).
    """
    return {
        "rows": rows,
        "counted": record["counted"],
        "seconds": round(record["seconds"], 3),
        "rate": round(record["rate"], 1),
        "peakRssMb": record["peakRssMb"],
        "baselineRssMb": record["baselineRssMb"],
        "growthMb": round(record["peakRssMb"] - record["baselineRssMb"], 1),
    }


def runSizes(config: BenchConfig, how: str) -> dict[str, Any]:
    """
    Every size of L{sizes} through C{how}; the record's memory and lag are
    the largest size's, its rate all rows over all sizes' seconds.
    """
    points, last = [], {}
    for rows in sizes(config):
        last = runSize(how, rows, config)
        points.append(point(rows, last))
    seconds = sum(p["seconds"] for p in points)
    count = sum(p["rows"] for p in points)
    record = {
        "unit": "rows",
        "count": count,
        "counted": sum(p["counted"] for p in points),
        "seconds": round(seconds, 3),
        "rate": count / seconds,
        "peakRssMb": points[-1]["peakRssMb"],
        "baselineRssMb": points[-1]["baselineRssMb"],
        "sweep": points,
    }
    if last.get("lag"):
        record["lag"] = last["lag"]
    return record


def memoryPsycopg2(config: BenchConfig) -> dict[str, Any]:
    """
    psycopg2's named cursor at every size.
    """
    return runSizes(config, "psycopg2")


def memorySasyncDeferator(config: BenchConfig) -> dict[str, Any]:
    """
    sAsync's Deferator (C{async for}) at every size.
    """
    return runSizes(config, "deferator")


def memorySasyncConsumer(config: BenchConfig) -> dict[str, Any]:
    """
    sAsync's C{consumer=} at every size.
    """
    return runSizes(config, "consumer")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
