"""
Ad hoc measurements of the sasync core (not a test; the numbers go into
the notes). Needs the PostgreSQL test server::

    .venv/bin/python -m bench.measure_core [URL]

1. Sequential trivial transactions (SELECT 1) per second: through a broker
   (sql(), and a @transact method) against Twisted's adbapi ConnectionPool
   runQuery, in the same run, alternating rounds.
2. 1,000,000 rows to an IConsumer through a broker against a raw psycopg2
   named cursor read with fetchmany: rows per second and peak RSS growth
   (sampled every 5 ms).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import Any

import psutil
import sqlalchemy as SA
from sqlalchemy.engine import make_url
from twisted.enterprise import adbapi
from twisted.internet import defer, reactor

from bench.consumer import CountingConsumer
from sasync import AccessBroker, transact

ROUNDS = 5
CALLS = 2000
ROWS = 1_000_000


class Bench(AccessBroker):
    async def startup(self) -> None:
        await self.table(
            "big",
            SA.Column("n", SA.Integer, primary_key=True, autoincrement=False),
            SA.Column("label", SA.String(40)),
        )

    @transact
    def one(self) -> Any:
        return self.conn.exec_driver_sql("SELECT 1").scalar()

    @transact
    def everything(self) -> Any:
        return self.conn.execute(SA.select(self.big))


class PeakRSS:
    """
    Samples this process's RSS in a thread; C{grown} is the peak over the
    value at start, in MB.
    """

    def __enter__(self) -> PeakRSS:
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self.grown = (self.peak - self.base) / 2**20


CPU: dict[str, list[float]] = {}


async def perSecond(call: Any, n: int = CALLS, name: str = "") -> float:
    """
    Calls per second of C{n} sequential calls; also records the process CPU
    time per call (all threads), which a loaded machine distorts less.
    """
    cpu = time.process_time()
    started = time.perf_counter()
    for _ in range(n):
        await call()
    CPU.setdefault(name, []).append((time.process_time() - cpu) / n * 1e6)
    return n / (time.perf_counter() - started)


def rawNamedCursor(url: str, consumer: Any = None) -> tuple[float, float]:
    """
    The baseline: a psycopg2 named cursor read with fetchmany(1000), in a
    thread of its own; with C{consumer}, each row is written to it too.
    """
    import psycopg2

    u = make_url(url)
    conn = psycopg2.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database
    )
    with PeakRSS() as rss:
        started = time.perf_counter()
        cursor = conn.cursor(name="measure")
        cursor.itersize = 1000
        cursor.execute("SELECT n, label FROM big")
        count = 0
        while True:
            rows = cursor.fetchmany(1000)
            if not rows:
                break
            count += len(rows)
            if consumer is not None:
                write = consumer.write
                for row in rows:
                    write(row)
        elapsed = time.perf_counter() - started
        cursor.close()
        conn.rollback()
    conn.close()
    assert count == ROWS, count
    return ROWS / elapsed, rss.grown


def ensureDatabase(url: str) -> None:
    """
    Make the database of C{url} if it does not exist (via the server's
    C{postgres} database).
    """
    target = make_url(url)
    admin = SA.create_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            exists = conn.exec_driver_sql(
                "SELECT 1 FROM pg_database WHERE datname = %(name)s",
                {"name": target.database},
            ).scalar()
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    finally:
        admin.dispose()


async def main(url: str) -> None:
    ensureDatabase(url)
    broker = Bench(url)
    await broker.waitUntilRunning()
    if (await broker.sql("SELECT count(*) AS n FROM big"))[0].n != ROWS:
        await broker.execute("DELETE FROM big")
        await broker.execute(
            "INSERT INTO big (n, label) SELECT g, md5(g::text)"
            f" FROM generate_series(1, {ROWS}) g"
        )
    u = make_url(url)
    pool = adbapi.ConnectionPool(
        "psycopg2",
        host=u.host,
        port=u.port or 5432,
        user=u.username,
        dbname=u.database,
        cp_noisy=False,
    )
    await perSecond(lambda: pool.runQuery("SELECT 1"), 200)
    await perSecond(lambda: broker.sql("SELECT 1"), 200)
    rates: dict[str, list[float]] = {
        "adbapi runQuery": [],
        "broker.sql": [],
        "@transact": [],
    }
    for _ in range(ROUNDS):
        rates["adbapi runQuery"].append(
            await perSecond(lambda: pool.runQuery("SELECT 1"), name="adbapi runQuery")
        )
        rates["broker.sql"].append(
            await perSecond(lambda: broker.sql("SELECT 1"), name="broker.sql")
        )
        rates["@transact"].append(await perSecond(broker.one, name="@transact"))
    print(f"Sequential SELECT 1 transactions/s ({ROUNDS} x {CALLS}, median/best):")
    base = statistics.median(rates["adbapi runQuery"])
    for name, values in rates.items():
        median = statistics.median(values)
        best = max(values)
        cpu = statistics.median(CPU[name])
        print(
            f"  {name:16s} {median:6,.0f}/s best {best:6,.0f} ({median / base:.2f}x),"
            f" CPU {cpu:4.0f} us/call"
        )
    pool.close()

    print(f"{ROWS:,} rows (n, label) streamed:")
    results: dict[str, list[tuple[float, float]]] = {
        "psycopg2 named cursor": [],
        "  + consumer.write": [],
        "broker consumer": [],
    }
    for _ in range(3):
        results["psycopg2 named cursor"].append(
            await defer.Deferred.fromCoroutine(_inThread(rawNamedCursor, url))
        )
        results["  + consumer.write"].append(
            await defer.Deferred.fromCoroutine(
                _inThread(rawNamedCursor, url, CountingConsumer())
            )
        )
        with PeakRSS() as rss:
            started = time.perf_counter()
            consumer = await broker.everything(consumer=CountingConsumer())
            elapsed = time.perf_counter() - started
        assert consumer.writes == ROWS
        results["broker consumer"].append((ROWS / elapsed, rss.grown))
    base = statistics.median(r for r, _ in results["psycopg2 named cursor"])
    for name, values in results.items():
        rate = statistics.median(r for r, _ in values)
        peak = max(g for _, g in values)
        ratio = rate / base
        print(
            f"  {name:22s} {rate:10,.0f} rows/s ({ratio:.2f}x), peak RSS +{peak:.1f} MB"
        )
    await broker.shutdown()


async def _inThread(f: Any, *args: Any) -> Any:
    from twisted.internet.threads import deferToThread

    return await deferToThread(f, *args)


def run() -> None:
    url = (
        sys.argv[1]
        if len(sys.argv) > 1
        else ("postgresql+psycopg2://postgres@127.0.0.1:5432/sasync_core_scratch")
    )
    d = defer.Deferred.fromCoroutine(main(url))
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())


if __name__ == "__main__":
    reactor.callWhenRunning(run)
    reactor.run()
