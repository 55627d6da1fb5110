"""
C{idleTimeout}: a connection left idle that long is closed in its worker
thread and opened again by the next transaction; one that an open
iteration still reads on, or that is inside a transaction, is not.

The unit tests drive a L{ConnectionWorker} on a SQLite file with a
L{Clock} and a L{MemoryJobRunner}; the integration tests run real brokers
on every database, with real time and generous bounds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.pool import NullPool
from twisted.internet.task import Clock, deferLater

from asynqueue.task import Task
from asynqueue.workers import MemoryJobRunner
from sasync import AccessBroker, transact
from sasync.connection._threadstate import state
from sasync.connection._workers import ConnectionWorker

# Unit tests ------------------------------------------------------------------


class Rig:
    """
    A worker on a SQLite file, its jobs run by hand, its time a L{Clock}.
    """

    def __init__(self, path: Path, idleTimeout: float | None = 10.0) -> None:
        self.engine = SA.create_engine(f"sqlite:///{path}", poolclass=NullPool)
        self.runner = MemoryJobRunner()
        self.clock = Clock()
        self.worker = ConnectionWorker(
            self.engine,
            holdIterations=False,
            batchSize=10,
            name="idle",
            idleTimeout=idleTimeout,
            clock=self.clock,
            runner=self.runner,
            callFromThread=lambda f, *a: f(*a),
        )
        self.runner.performAll()

    def run(self, f: Any = None) -> Any:
        """
        Run a task that uses the connection (C{f(connection)}), to its end.
        """
        done: list[Any] = []

        def job() -> Any:
            connection = self.worker.connection()
            return connection if f is None else f(connection)

        task: Task[Any] = Task(job, (), {})
        task.d.addCallback(done.append)
        self.worker.give(task, lambda worker, task: None)
        self.runner.performAll()
        return done[0]

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.runner.performAll()

    def close(self) -> None:
        self.worker.stop()
        self.runner.performAll()
        state.worker = None
        self.engine.dispose()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path / "idle.db")
    yield made
    made.close()


def test_closedAfterIdleTimeout(rig: Rig) -> None:
    """
    A connection idle for C{idleTimeout} is closed in the worker's thread;
    the next task gets a new one.
    """
    first = rig.run()
    rig.advance(9.9)
    assert not first.closed
    rig.advance(0.1)
    assert first.closed
    assert rig.worker.idleClosed == 1
    second = rig.run()
    assert second is not first and not second.closed
    assert rig.run(lambda c: c.execute(SA.text("SELECT 1")).scalar()) == 1


def test_workPushesItOn(rig: Rig) -> None:
    """
    Each task starts the idle time again: a connection used every 5 s with
    C{idleTimeout=10} stays open, and closes 10 s after the last task.
    """
    first = rig.run()
    for _ in range(5):
        rig.advance(5)
        assert rig.run() is first
    rig.advance(9)
    assert not first.closed
    rig.advance(1)
    assert first.closed
    assert len(rig.clock.getDelayedCalls()) == 0


def test_openRowsKeepIt(rig: Rig) -> None:
    """
    While a result is read on the connection after its COMMIT (SQLite
    iterations), the connection stays open; once it is closed, the
    connection closes C{idleTimeout} later.
    """
    connection = rig.run()
    rowsClosed = rig.run(lambda c: rig.worker.rowsOpened())
    rig.advance(10)
    rig.advance(10)
    assert not connection.closed
    rig.run(lambda c: rowsClosed())
    rig.advance(10)
    assert connection.closed


def test_neverInsideTransaction(rig: Rig) -> None:
    """
    A connection left inside a transaction is not closed by the idle check
    (the next transaction rolls it back first).
    """
    connection = rig.run(lambda c: (c.begin(), c)[1])
    rig.advance(10)
    rig.advance(10)
    assert not connection.closed and connection.in_transaction()
    assert rig.worker.idleClosed == 0


def test_heldWorkerKeepsIt(rig: Rig) -> None:
    """
    While an iteration holds the worker (server databases), no idle check
    runs; when it lets go, the idle time starts.
    """
    connection = rig.run()
    rig.worker.holdChanged(True)
    rig.advance(10)
    assert not connection.closed
    rig.advance(50)
    rig.worker.holdChanged(False)
    rig.advance(9)
    assert not connection.closed
    rig.advance(1)
    assert connection.closed


def test_noTimeoutNoTimer(tmp_path: Path) -> None:
    """
    Without C{idleTimeout} the connection is kept, and no timer is set.
    """
    rig = Rig(tmp_path / "kept.db", idleTimeout=None)
    try:
        connection = rig.run()
        rig.advance(3600)
        assert not connection.closed
        assert rig.clock.getDelayedCalls() == []
    finally:
        rig.close()


def test_stopCancelsTimer(rig: Rig) -> None:
    """
    Stopping the worker cancels its idle check.
    """
    rig.run()
    assert len(rig.clock.getDelayedCalls()) == 1
    rig.worker.stop()
    rig.runner.performAll()
    assert rig.clock.getDelayedCalls() == []


# Integration -------------------------------------------------------------------


class Numbers(AccessBroker):
    """
    A table of numbers.
    """

    async def startup(self) -> None:
        await self.table(
            "numbers",
            SA.Column("n", SA.Integer, primary_key=True, autoincrement=False),
        )

    @transact
    def fill(self, count: int) -> None:
        self.conn.execute(self.numbers.insert(), [{"n": n} for n in range(count)])

    @transact
    def numbersIn(self) -> Any:
        return self.conn.execute(SA.select(self.numbers.c.n).order_by("n"))

    @transact
    def total(self) -> int:
        return int(
            self.conn.execute(SA.select(SA.func.sum(self.numbers.c.n))).scalar_one()
        )


def backends(url: str) -> int | None:
    """
    PostgreSQL: how many sessions are connected to C{url}'s database (from
    another connection); None elsewhere.
    """
    if not url.startswith("postgresql"):
        return None
    engine = SA.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    SA.text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


async def waitFor(check: Any, seconds: float = 20.0) -> None:
    from twisted.internet import reactor

    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await deferLater(reactor, 0.05, lambda: None)


async def test_idleConnectionClosedAndReopened(dbURL: str, brokers: Any) -> None:
    """
    With C{idleTimeout}, a broker's idle connection is closed (PostgreSQL:
    its backend is gone) and the next transaction opens a new one.
    """
    broker = brokers(Numbers, dbURL, connections=1, idleTimeout=0.3)
    await broker.fill(10)
    handle = broker._engine
    await waitFor(lambda: handle.idleClosedConnections() >= 1)
    if dbURL.startswith("postgresql"):
        # The backend ends after the client closed: wait for it (a loaded
        # server may list it for a moment longer).
        await waitFor(lambda: backends(dbURL) == 0)
    assert await broker.total() == 45  # 0 + 1 + ... + 9


async def test_openIterationKeepsConnection(dbURL: str, brokers: Any) -> None:
    """
    A result read slowly (longer than C{idleTimeout} between batches)
    keeps its connection: every row arrives, none is lost.
    """
    from twisted.internet import reactor

    broker = brokers(Numbers, dbURL, connections=1, idleTimeout=0.2, batchSize=5)
    await broker.fill(30)
    handle = broker._engine
    closedBefore = handle.idleClosedConnections()
    seen = []
    async for row in await broker.numbersIn():
        seen.append(row.n)
        if len(seen) in (3, 12):
            await deferLater(reactor, 0.8, lambda: None)
    assert seen == list(range(30))
    if not dbURL.startswith("mysql"):
        # (MySQL lists such a result whole and commits first: its
        # connection may close while the loop waits.)
        assert handle.idleClosedConnections() == closedBefore
    await waitFor(lambda: handle.idleClosedConnections() > closedBefore)
