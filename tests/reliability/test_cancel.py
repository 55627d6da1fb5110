"""
Cancelling and timing out running sleep queries on the servers: the
queries are gone from the server (C{pg_stat_activity}, MariaDB's process
list), nothing they wrote stays, the callers hear promptly, and the same
connections go on working.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet import defer

from asynqueue import OutcomeUnknown
from sasync import TransactionTimeout, transact
from sasync.connection import _cancel
from sasync.connection._cancel import Canceller
from tests.reliability.helpers import (
    FIGURES,
    Figures,
    Ledger,
    activeSleeps,
    sleepSQL,
    until,
)

CONNECTIONS = 4


class Sleepers(Ledger):
    """
    A ledger that can tell the server's IDs of all its connections.
    """

    @transact
    def connectionID(self, together: threading.Barrier) -> int:
        sql = (
            "SELECT pg_backend_pid()"
            if self.conn.dialect.name == "postgresql"
            else "SELECT CONNECTION_ID()"
        )
        found = int(self.conn.exec_driver_sql(sql).scalar_one())
        # Held until every call runs: each on a connection of its own.
        together.wait()
        return found


async def connectionIDs(broker: Sleepers) -> set[int]:
    """
    The server's IDs of the broker's connections: one call per connection,
    all running at once (each waits for the others, so that no worker takes
    two, however slow the others are to start theirs).
    """
    together = threading.Barrier(CONNECTIONS, timeout=60)
    ids = await defer.gatherResults(
        [broker.connectionID(together) for _ in range(CONNECTIONS)]
    )
    return set(ids)


@pytest.mark.reactorTimeout(90)
async def test_cancelRunningSleeps(
    serverURL: str, brokers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Four running 30 s sleeps (each after an INSERT) and four queued writes
    are cancelled: all fail with CancelledError at once, the sleeps are
    gone from the server, nothing was written, and the four connections
    are the same healthy ones afterwards. A call with retries is not run
    again after a cancel.

    The sleeps run on the server when they are cancelled, so the first
    cancel of each stops it: the repeated cancels and the cut of a
    connection still busy CUT_AFTER seconds later are turned off, as they
    would make the outcome depend on how fast a loaded machine sends the
    cancels (MariaDB's KILL QUERY each opens a connection, one after the
    other) and stops the statements (see test_cancelResent and
    test_frozen.py for those).
    """
    monkeypatch.setattr(_cancel, "RESEND_INTERVAL", 3600.0)
    monkeypatch.setattr(_cancel, "CUT_AFTER", 3600.0)
    broker = brokers(Sleepers, serverURL, connections=CONNECTIONS)
    before = await connectionIDs(broker)
    assert len(before) == CONNECTIONS
    sleeps = [
        broker.writeThenSleep(f"s{i}", sleepSQL(serverURL, 30), retries=3)
        for i in range(CONNECTIONS)
    ]
    queued = [broker.write(f"q{i}") for i in range(CONNECTIONS)]
    await until(lambda: activeSleeps(serverURL) == CONNECTIONS)
    started = time.monotonic()
    for d in sleeps + queued:
        d.cancel()
    # The callers heard at once: cancel() itself failed each Deferred.
    assert all(d.called for d in sleeps + queued)
    results = await defer.DeferredList(sleeps + queued, consumeErrors=True)
    seconds = time.monotonic() - started
    assert all(not ok and r.check(defer.CancelledError) for ok, r in results), results
    # The workers roll back in the background.
    await until(lambda: activeSleeps(serverURL) == 0)
    assert await broker.tokens() == []
    assert await connectionIDs(broker) == before
    assert broker._handle.replacedConnections() == 0
    assert sum(broker._handle.retries.values()) == 0
    FIGURES.append(
        Figures(
            "cancel 4 running sleeps + 4 queued"
            f" ({'postgresql' if serverURL.startswith('postgresql') else 'mariadb'})",
            operations=2 * CONNECTIONS,
            faults=2 * CONNECTIONS,
            failed=2 * CONNECTIONS,
            seconds=seconds,
            notes=["left running on the server 0"],
        )
    )


@pytest.mark.reactorTimeout(90)
async def test_timeOutRunningSleeps(serverURL: str, brokers: Any) -> None:
    """
    Four running 120 s sleeps with a 0.5 s timeout fail with
    TransactionTimeout at the deadline, and the server soon runs none of
    them.

    (No wall-clock bound on when the callers hear: calls that failed only
    once their sleeps ended would run into the 90 s reactorTimeout.)
    """
    broker = brokers(Ledger, serverURL, connections=CONNECTIONS)
    await broker.waitUntilRunning()
    results = await defer.DeferredList(
        [
            broker.writeThenSleep(f"t{i}", sleepSQL(serverURL, 120), timeout=0.5)
            for i in range(CONNECTIONS)
        ],
        consumeErrors=True,
    )
    assert all(not ok and r.check(TransactionTimeout) for ok, r in results)
    await until(lambda: activeSleeps(serverURL) == 0)
    assert await broker.tokens() == []
    await broker.write("after")
    assert await broker.tokens() == ["after"]
    assert broker._handle.replacedConnections() == 0


class CancelBeforeStatement:
    """
    Holds the worker between the moment its sleep statement has passed the
    stop check (its cursor made) and the moment it is sent, until the first
    driver-level cancel of the call has been sent: that cancel finds no
    statement running (the server drops it), and only a repeated one can
    stop the sleep.
    """

    def __init__(self, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.engine = engine
        self.inWindow = threading.Event()
        self.firstCancelSent = threading.Event()
        self.cancels = 0
        original = Canceller.sendCancel

        def sendCancel(canceller: Canceller, task: Any) -> None:
            # Pool thread.
            original(canceller, task)
            self.cancels += 1
            self.firstCancelSent.set()

        monkeypatch.setattr(Canceller, "sendCancel", sendCancel)
        SA.event.listen(engine, "before_cursor_execute", self._beforeExecute)

    def stop(self) -> None:
        """
        Stop holding statements.
        """
        SA.event.remove(self.engine, "before_cursor_execute", self._beforeExecute)

    def _beforeExecute(self, conn: Any, cursor: Any, statement: str, *a: Any) -> None:
        # Worker thread.
        if "sleep(" in statement.lower():
            self.inWindow.set()
            if not self.firstCancelSent.wait(20):
                raise RuntimeError("no cancel was sent")


@pytest.mark.reactorTimeout(90)
async def test_cancelResent(
    serverURL: str, brokers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A cancel that arrives just before the statement reaches the server is
    lost (nothing runs yet), so it is sent again until the call ends: the
    sleep that started after the first cancel is stopped, and the caller
    gets CancelledError.

    The cut of a connection still busy CUT_AFTER seconds after the first
    cancel is turned off (a loaded machine can take that long over
    MariaDB's repeated KILL QUERYs, each on a connection of its own), and
    the sleep is 120 s: only a repeated cancel can end it within the 90 s
    reactorTimeout.
    """
    monkeypatch.setattr(_cancel, "CUT_AFTER", 3600.0)
    broker = brokers(Ledger, serverURL, connections=1)
    await broker.waitUntilRunning()
    window = CancelBeforeStatement(broker._handle.engine, monkeypatch)
    try:
        d = broker.writeThenSleep("lost", sleepSQL(serverURL, 120))
        await until(window.inWindow.is_set)
        d.cancel()
        # The caller heard at once: cancel() itself failed the Deferred.
        assert d.called
        with pytest.raises(defer.CancelledError):
            await d
        # The caller hears at once (COMMIT was not sent); the worker goes on
        # until a repeated cancel stops the sleep. The next call on the one
        # connection runs only once the worker is done with it.
        await until(lambda: window.cancels >= 1)
        assert await broker.tokens() == []
        assert activeSleeps(serverURL) == 0
    finally:
        window.stop()
    # PostgreSQL drops a cancel that finds nothing running, so only the
    # repeat stops the sleep; MariaDB may keep a KILL QUERY that arrived
    # between statements for the next one, so one may be enough there.
    assert window.cancels >= (2 if serverURL.startswith("postgresql") else 1)
    # Stopped by a cancel, not by cutting the connection (turned off here).
    assert broker._handle.replacedConnections() == 0
    assert await broker.tokens() == []


def test_noThreadLeftAfterKillQuery(mysqlURL: str) -> None:
    """
    MySQL/MariaDB cancels (KILL QUERY on a connection of their own) run on a
    thread sAsync owns and ends at shutdown: in a fresh process, after
    cancelling running queries and shutting down, no thread started since
    the broker was made is left (the reactor's thread pool once kept its
    threads, one per concurrent cancel).
    """
    child = subprocess.run(
        [sys.executable, "-m", "tests.reliability.cancelthreads", mysqlURL],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    lines = [line for line in child.stdout.splitlines() if line.startswith("left")]
    assert lines == ["left "], child.stdout + child.stderr


@pytest.mark.reactorTimeout(120)
@pytest.mark.parametrize("processes", [None, 2], ids=["threads", "processes"])
async def test_cancelsAtRandomNeverLieAboutCommits(
    serverURL: str, brokers: Any, processes: int | None
) -> None:
    """
    Hundreds of short writes on eight connections (in this process, or four
    in each of two worker processes), cancelled or timed out
    at random moments (before, during and around their COMMIT): a call
    that failed with CancelledError or TransactionTimeout wrote nothing,
    one that succeeded wrote its row once, and the broker goes on working.
    A call stopped twice (a timeout, then a cancel) after its COMMIT was
    sent may end with OutcomeUnknown, either way (CI once saw such a call
    fail with CancelledError although it committed).
    This is the race between a stop and the worker's point of no return,
    run for real: the stop and the worker each look for the other's mark
    without a lock (see asynqueue.task.Task.passPointOfNoReturn).
    """
    rng = random.Random(2112)
    if processes is None:
        broker = brokers(Ledger, serverURL, connections=8)
    else:
        broker = brokers(Ledger, serverURL, processes=processes, connections=4)
    await broker.waitUntilRunning()
    from twisted.internet import reactor

    calls = []
    stoppedTwice: set[int] = set()
    for i in range(400):
        nap = rng.choice([0.0, 0.0, 0.001, 0.003])
        timeout = rng.choice([None, None, None, 0.002, 0.01])
        d = broker.writeThenSleep(
            f"r{i}", sleepSQL(serverURL, nap) if nap else "SELECT 1", timeout=timeout
        )
        when = rng.choice([None, None, 0.0, 0.001, 0.002, 0.004, 0.008])
        if when is not None:
            reactor.callLater(when, d.cancel)
            if timeout is not None:
                stoppedTwice.add(i)
        calls.append(d)
    results = await defer.DeferredList(calls, consumeErrors=True)
    written = await broker.tokens()
    assert len(written) == len(set(written)), "a write was duplicated"
    present = set(written)
    stopped = committed = 0
    for i, (ok, result) in enumerate(results):
        token = f"r{i}"
        if ok:
            committed += 1
            assert token in present, f"{token} acknowledged but not committed"
        elif result.check(OutcomeUnknown):
            assert i in stoppedTwice, f"{token} {result.value}"
        else:
            assert result.check(defer.CancelledError, TransactionTimeout), result
            stopped += 1
            assert token not in present, f"{token} failed yet committed"
    # Both outcomes happened, or the test tested nothing.
    assert stopped and committed, (stopped, committed)
    await broker.write("after")
    assert "after" in await broker.tokens()
