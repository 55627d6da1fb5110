"""
What letting go of a connection costs an iteration (issue 14.3): the time
and the peak memory of reading N rows to a counting consumer, each in a
fresh process: streamed (C{stream=True}: the iteration holds its
connection); let go at its start (C{connections=1, overflowConnections=0}
forces that: its worker reads every row and commits, handing the rows over
as it reads them); the same with the consumer paused until every row has
been read (the worst case: every row in memory at once); and read whole by
the driver (C{stream=False}: committed before the iteration, which holds
nothing)::

    .venv/bin/python -m bench.letgo [--rows 1000000] [--url URL]

The URL names a server whose user may create and drop the database
C{sasync_letgo} (default: PostgreSQL on 127.0.0.1:5432, user postgres; a
C{mysql+pymysql://} URL measures MariaDB/MySQL).
"""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

import sqlalchemy as SA

from bench.cpu_per_op import _runInChild
from bench.harness import runTwisted
from bench.measure import currentRssMb, peakRssMb

DATABASE = "sasync_letgo"
DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def _admin(url: SA.URL, *statements: str) -> None:
    engine = SA.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(SA.text(statement))
    finally:
        engine.dispose()


def createTable(url: SA.URL, rows: int) -> SA.URL:
    """
    A fresh database with C{numbers(n, label)}, C{rows} rows; its URL.
    """
    postgres = url.get_backend_name() == "postgresql"
    quoted = f'"{DATABASE}"' if postgres else f"`{DATABASE}`"
    drop = f"DROP DATABASE IF EXISTS {quoted}" + (" WITH (FORCE)" if postgres else "")
    _admin(url, drop, f"CREATE DATABASE {quoted}")
    own = url.set(database=DATABASE)
    fill = (
        "INSERT INTO numbers SELECT g, md5(g::text) FROM generate_series(1, :rows) g"
        if postgres
        else "INSERT INTO numbers SELECT seq, md5(seq) FROM seq_1_to_1000000000"
        " WHERE seq <= :rows"
    )
    _admin(
        own,
        "CREATE TABLE numbers (n INTEGER PRIMARY KEY, label VARCHAR(40))",
    )
    engine = SA.create_engine(own)
    try:
        with engine.begin() as conn:
            conn.execute(SA.text(fill), {"rows": rows})
    finally:
        engine.dispose()
    return own


def dropDatabase(url: SA.URL) -> None:
    """
    Drop the database made by L{createTable}.
    """
    postgres = url.get_backend_name() == "postgresql"
    quoted = f'"{DATABASE}"' if postgres else f"`{DATABASE}`"
    _admin(
        url, f"DROP DATABASE IF EXISTS {quoted}" + (" WITH (FORCE)" if postgres else "")
    )


def measure(
    url: str, options: dict[str, Any], stream: bool, paused: bool = False
) -> dict[str, Any]:
    """
    In this (fresh) process: every row to a counting consumer, with the
    broker C{options} and the call keyword C{stream}; the time, the peak
    RSS growth and how many iterations let go. C{paused}: the consumer
    pauses at the first row, until no iteration holds a connection (the
    one that let go has read all its rows).
    """
    from twisted.internet.task import deferLater

    from bench.consumer import CountingConsumer
    from sasync import AccessBroker, transact

    class Numbers(AccessBroker):
        @transact
        def everyRow(self) -> Any:
            return self.conn.execute(SA.text("SELECT n, label FROM numbers ORDER BY n"))

    async def main(reactor: Any) -> dict[str, Any]:
        broker = Numbers(url, **options)
        await broker.waitUntilRunning()
        consumer = CountingConsumer()
        baseline = currentRssMb()
        started = time.perf_counter()
        d = broker.everyRow(consumer=consumer, stream=stream)
        if paused:
            while consumer.producer is None:
                await deferLater(reactor, 0.001, lambda: None)
            consumer.producer.pauseProducing()
            while broker._handle._holders:
                await deferLater(reactor, 0.01, lambda: None)
            consumer.producer.resumeProducing()
        await d
        out = {
            "seconds": time.perf_counter() - started,
            "peakMB": peakRssMb() - baseline,
            "rows": consumer.items,
            "letGo": broker._handle.iterationsLetGo,
        }
        await broker.shutdown()
        return out

    try:
        return runTwisted(main)
    finally:
        # The pool ends this process with SIGTERM, which the handler the
        # reactor installed would swallow (the parent would wait forever).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    """
    Measure both ways and print one line each.
    """
    p = argparse.ArgumentParser(prog="bench.letgo", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--url", default=DEFAULT_URL)
    args = p.parse_args(argv)
    url = SA.make_url(args.url)
    own = createTable(url, args.rows)
    letGo = {"connections": 1, "overflowConnections": 0}
    runs: list[tuple[str, dict[str, Any], bool, bool]] = [
        ("streamed (holds its connection)", {}, True, False),
        ("let go at once", letGo, True, False),
        ("let go at once, consumer paused", letGo, True, True),
        ("read whole (stream=False)", {}, False, False),
    ]
    try:
        for name, options, stream, paused in runs:
            result = _runInChild(
                measure,
                own.render_as_string(hide_password=False),
                options,
                stream,
                paused,
            )
            assert result["rows"] == args.rows, result
            rate = result["rows"] / result["seconds"]
            print(
                f"{url.get_backend_name():<10} {name:<33} {result['rows']:,} rows"
                f" in {result['seconds']:.2f} s ({rate:,.0f} rows/s),"
                f" peak RSS +{result['peakMB']:.0f} MB,"
                f" iterations let go: {result['letGo']}",
                flush=True,
            )
    finally:
        dropDatabase(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
