"""
Scheduling on real databases: priorities on one connection, cancellation
of queued and running transactions, timeouts, shutdown with pending writes.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet import defer

from asynqueue import TaskTimeout
from sasync import AccessBroker, transact
from tests.reliability.helpers import activeSleeps, sleepSQL, until


class Journal(AccessBroker):
    """
    A broker with one table of notes, and ways to hold its workers.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self._log: list[str] = []
        self._gate = threading.Event()
        self._inside = threading.Event()
        self._finished = threading.Event()

    async def startup(self) -> None:
        await self.table(
            "notes",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("text", SA.String(40)),
        )

    @transact
    def block(self) -> None:
        # Holds this worker until the test opens the gate.
        self._inside.set()
        self._gate.wait(30)

    @transact
    def note(self, text: str) -> None:
        self._log.append(text)
        self.conn.execute(self.notes.insert().values(text=text))

    @transact
    def texts(self) -> list[str]:
        return list(self.conn.execute(SA.select(self.notes.c.text)).scalars())

    @transact
    def noteThenSleep(self, text: str, sql: str) -> Any:
        try:
            self.conn.execute(self.notes.insert().values(text=text))
            self._inside.set()
            return self.conn.exec_driver_sql(sql).all()
        finally:
            self._finished.set()

    @transact
    def backendPID(self) -> int:
        return int(self.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def oneConnection(url: str) -> dict[str, Any]:
    """
    Broker options for a single connection (SQLite always has one).
    """
    return {} if url.startswith("sqlite") else {"connections": 1}


async def test_prioritiesOneConnection(dbURL: str, brokers: Any) -> None:
    """
    On one connection, queued transactions run doNext first, then by
    niceness (lower first), first in first out within a niceness, doLast
    last.
    """
    broker = brokers(Journal, dbURL, **oneConnection(dbURL))
    await broker.waitUntilRunning()
    blocked = broker.block()
    await until(broker._inside.is_set)
    calls = [
        ("n5-a", {"niceness": 5}),
        ("last", {"doLast": True}),
        ("n0-a", {}),
        ("n-10", {"niceness": -10}),
        ("n5-b", {"niceness": 5}),
        ("next", {"doNext": True}),
        ("n0-b", {"niceness": 0}),
        ("n20", {"niceness": 20}),
        ("n-20", {"niceness": -20}),
    ]
    ds = [broker.note(text, **kw) for text, kw in calls]
    broker._gate.set()
    await blocked
    await defer.gatherResults(ds)
    assert broker._log == [
        "next",
        "n-20",
        "n-10",
        "n0-a",
        "n0-b",
        "n5-a",
        "n5-b",
        "n20",
        "last",
    ]


async def test_cancelQueued(dbURL: str, brokers: Any) -> None:
    """
    A cancelled queued transaction never runs: CancelledError at once, and
    its write never lands.
    """
    broker = brokers(Journal, dbURL, **oneConnection(dbURL))
    await broker.waitUntilRunning()
    blocked = broker.block()
    await until(broker._inside.is_set)
    doomed = broker.note("doomed")
    kept = broker.note("kept")
    doomed.cancel()
    with pytest.raises(defer.CancelledError):
        await doomed
    broker._gate.set()
    await blocked
    await kept
    assert await broker.texts() == ["kept"]
    assert broker._log == ["kept"]


async def test_cancelBeforeStartup(sqliteURL: str, brokers: Any) -> None:
    """
    A transaction cancelled while it waits for startup never runs.
    """
    broker = brokers(Journal, sqliteURL)
    doomed = broker.note("doomed")
    doomed.cancel()
    with pytest.raises(defer.CancelledError):
        await doomed
    assert await broker.texts() == []


@pytest.mark.reactorTimeout(90)
async def test_cancelRunning(dbURL: str, brokers: Any) -> None:
    """
    Cancelling a running transaction interrupts its query at the driver;
    the caller sees CancelledError at once (COMMIT was not sent: it cannot
    commit), the worker rolls back in the background (its insert is gone),
    and the connection works afterwards.
    """
    broker = brokers(Journal, dbURL, **oneConnection(dbURL))
    await broker.waitUntilRunning()
    pid = await broker.backendPID() if dbURL.startswith("postgresql") else None
    d = broker.noteThenSleep("sleeper", sleepSQL(dbURL, 30))
    await until(broker._inside.is_set)
    if pid is not None or dbURL.startswith("mysql"):
        # The sleep runs in the server (on SQLite it starts right after
        # _inside, and the progress handler stops it whenever it started).
        await until(lambda: activeSleeps(dbURL) == 1)
    d.cancel()
    # At once: cancel() itself failed the Deferred.
    assert d.called
    with pytest.raises(defer.CancelledError):
        await d
    await until(broker._finished.is_set)
    assert await broker.texts() == []
    await broker.note("after")
    assert await broker.texts() == ["after"]
    if pid is not None:
        assert await broker.backendPID() == pid  # the same, healthy connection
    if not dbURL.startswith("sqlite"):
        assert activeSleeps(dbURL) == 0


@pytest.mark.reactorTimeout(90)
async def test_timeoutRunning(dbURL: str, brokers: Any) -> None:
    """
    timeout= on a running transaction interrupts it the same way and fails
    with TaskTimeout at the deadline; the worker rolls back in the
    background. (The sleep is 120 s: a call that failed only once it ended
    would run into the 90 s reactorTimeout; no wall-clock bound needed.)
    """
    broker = brokers(Journal, dbURL)
    await broker.waitUntilRunning()
    with pytest.raises(TaskTimeout):
        await broker.noteThenSleep("slow", sleepSQL(dbURL, 120), timeout=0.5)
    await until(broker._finished.is_set)
    assert await broker.texts() == []


@pytest.mark.reactorTimeout(120)
async def test_shutdownPendingWrites(dbURL: str, brokers: Any) -> None:
    """
    shutdown() right after queueing hundreds of writes lets all of them
    land, then refuses new ones.
    """
    broker = brokers(Journal, dbURL)
    ds = [broker.note(f"n{i}") for i in range(300)]
    stopping = broker.shutdown()
    await stopping
    results = await defer.DeferredList(ds, consumeErrors=True)
    assert all(ok for ok, _ in results)
    check = brokers(Journal, dbURL)
    assert sorted(await check.texts()) == sorted(f"n{i}" for i in range(300))


async def test_shutdownBeforeStartup(sqliteURL: str, brokers: Any) -> None:
    """
    shutdown() before startup even ran is fine, and idempotent.
    """
    broker = brokers(Journal, sqliteURL)
    await defer.gatherResults([broker.shutdown(), broker.shutdown()])
    assert not broker.running


async def test_shutdownEndsThreads(dbURL: str, brokers: Any) -> None:
    """
    After the last broker on an engine shuts down, its worker threads
    (regular and overflow) have ended and the engine is out of the registry.
    """
    from sasync.connection import openHandles

    def ours() -> set[threading.Thread]:
        return {
            t
            for t in threading.enumerate()
            if t.name.startswith("sasync-") and t.is_alive()
        }

    before = ours()
    broker = brokers(Journal, dbURL)
    await broker.note("x")
    handle = broker._handle
    assert ours() - before
    await broker.shutdown()
    assert handle not in openHandles()
    await until(lambda: not (ours() - before))


async def test_lostConnectionReplaced(postgresqlURL: str, brokers: Any) -> None:
    """
    A connection whose backend was terminated while idle is noticed before
    the next transaction starts on it (the server closed the socket): the
    worker gets a new connection and the transaction succeeds, without
    retries. (tests/reliability has the cases that need retries.)
    """
    broker = brokers(Journal, postgresqlURL, connections=1)
    pid = await broker.backendPID()
    engine = SA.create_engine(postgresqlURL)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")

        def gone() -> bool:
            query = f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
            count = conn.exec_driver_sql(query).scalar_one()
            conn.rollback()  # (A transaction sees one snapshot of it.)
            return count == 0

        await until(gone)
    engine.dispose()
    await broker.note("after")
    assert await broker.backendPID() != pid
    assert await broker.texts() == ["after"]
    assert broker._handle.replacedConnections() == 1
