"""
What letting go of a connection costs an iteration (issue 14.3): the time
and the peak memory of reading N rows to a counting consumer, streamed (the
iteration holds its connection) and let go at its start (its worker reads
every row into memory and commits; C{connections=1, overflowConnections=0}
forces that), each in a fresh process::

    .venv/bin/python -m bench.letgo [--rows 1000000] [--url URL]

The URL names a server whose user may create and drop the database
C{sasync_letgo} (default: PostgreSQL on 127.0.0.1:5432, user postgres; a
C{mysql+pymysql://} URL measures MariaDB/MySQL).
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import sqlalchemy as SA

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


def measure(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """
    In this (fresh) process: every row to a counting consumer, with the
    broker C{options}; the time, the peak RSS growth and whether the
    iteration let go.
    """
    import psutil
    from twisted.internet import defer, task

    from bench.consumer import CountingConsumer
    from sasync import AccessBroker, transact

    class Numbers(AccessBroker):
        @transact
        def everyRow(self) -> Any:
            return self.conn.execute(SA.text("SELECT n, label FROM numbers ORDER BY n"))

    out: dict[str, Any] = {}

    async def main(reactor: Any) -> None:
        broker = Numbers(url, **options)
        await broker.waitUntilRunning()
        process = psutil.Process()
        baseline = process.memory_info().rss
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        consumer = CountingConsumer()
        started = time.perf_counter()
        try:
            await broker.everyRow(consumer=consumer)
        finally:
            done.set()
            sampler.join()
        out["seconds"] = time.perf_counter() - started
        out["peakMB"] = (peak[0] - baseline) / 2**20
        out["rows"] = consumer.items
        out["letGo"] = broker._handle.iterationsLetGo
        await broker.shutdown()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code:
            raise
    return out


def _inChild(url: str, options: dict[str, Any]) -> dict[str, Any]:
    # A fresh process each: a reactor runs once per process, and the
    # memory of one run must not hide the next one's.
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(measure, (url, options))
        return result


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
    runs = [
        ("streamed (holds its connection)", {}),
        (
            "let go at once (rows in memory)",
            {"connections": 1, "overflowConnections": 0},
        ),
    ]
    try:
        for name, options in runs:
            result = _inChild(own.render_as_string(hide_password=False), options)
            assert result["rows"] == args.rows, result
            rate = result["rows"] / result["seconds"]
            print(
                f"{url.get_backend_name():<10} {name:<32} {result['rows']:,} rows"
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
