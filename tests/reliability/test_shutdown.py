"""
Shutting down under load: C{shutdown(timeout=...)} drains, then cancels
what is left; every accepted write is committed or failed to its caller;
no worker thread survives. And the bound on pending transactions.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from twisted.internet import defer

from sasync import Backoff, Overloaded, transact
from sasync.connection import openHandles
from tests.reliability.helpers import (
    FIGURES,
    Figures,
    Ledger,
    activeSleeps,
    sasyncThreads,
    settle,
    sleepSQL,
    until,
)


def ourThreads() -> set[threading.Thread]:
    """
    Live threads, but for the reactor's own thread pool (which the driver
    cancels are sent from).
    """
    return {
        t
        for t in threading.enumerate()
        if t.is_alive() and not t.name.startswith("PoolThread-")
    }


async def sleeperRunning(url: str) -> None:
    """
    Wait until the sleep query runs in the database (a server's process
    list shows it); on SQLite, where nothing shows it, until the reactor
    has settled (the one worker took the sleeper at once).
    """
    if url.startswith("sqlite"):
        await settle()
    else:
        await until(lambda: activeSleeps(url) == 1)


class Held(Ledger):
    """
    A ledger whose C{writeThenWait} holds its connection until released.
    """

    held: threading.Event
    release: threading.Event

    @transact
    def writeThenWait(self, token: str) -> None:
        self.conn.execute(self.ledger.insert().values(token=token))
        self.held.set()
        if not self.release.wait(30):
            raise RuntimeError("never released")


def oneOrTwo(url: str) -> dict[str, Any]:
    """
    Two connections on a server (one sleeps, one drains), SQLite's one.
    """
    return {} if url.startswith("sqlite") else {"connections": 2}


@pytest.mark.reactorTimeout(90)
async def test_shutdownTimeoutUnderLoad(dbURL: str, brokers: Any) -> None:
    """
    A 120 s transaction and 300 writes are pending when shutdown(timeout=1)
    is called: what can finish in that second does (on a server the other
    connection drains writes); then the rest is cancelled (the sleeper is
    interrupted at the driver and rolled back). Every caller hears:
    acknowledged writes are in the table once, failed ones (CancelledError)
    are not. Afterwards no sAsync thread is left, the engine is closed and
    the server runs no sleep.
    """
    before = ourThreads()
    broker = brokers(Ledger, dbURL, **oneOrTwo(dbURL))
    await broker.waitUntilRunning()
    # (120 s, past the reactorTimeout: a shutdown that waited for the
    # sleeper would fail the test; no wall-clock bound needed.)
    sleeper = broker.writeThenSleep("sleeper", sleepSQL(dbURL, 120))
    tokens = [f"w{i}" for i in range(300)]
    writes = [broker.write(token) for token in tokens]
    await sleeperRunning(dbURL)
    handle = broker._handle
    started = time.monotonic()
    await broker.shutdown(timeout=1.0)
    seconds = time.monotonic() - started
    results = await defer.DeferredList([sleeper, *writes], consumeErrors=True)
    assert all(d.called for d in [sleeper, *writes])
    assert not results[0][0] and results[0][1].check(defer.CancelledError)
    acknowledged = {t for t, (ok, _) in zip(tokens, results[1:], strict=True) if ok}
    for ok, result in results[1:]:
        assert ok or result.check(defer.CancelledError), result
    assert handle not in openHandles()
    await until(lambda: not (ourThreads() - before))
    assert not sasyncThreads() - before
    if not dbURL.startswith("sqlite"):
        assert activeSleeps(dbURL) == 0
    check = brokers(Ledger, dbURL)
    inTable = await check.tokens()
    assert sorted(inTable) == sorted(acknowledged)
    FIGURES.append(
        Figures(
            f"shutdown(timeout=1) under load ({dbURL.split(':')[0].split('+')[0]})",
            operations=301,
            faults=1,
            acknowledged=len(acknowledged),
            failed=301 - len(acknowledged),
            seconds=seconds,
            notes=["threads left 0", "dropped silently 0"],
        )
    )


@pytest.mark.reactorTimeout(60)
async def test_shutdownDuringBackoff(sqliteURL: str, brokers: Any) -> None:
    """
    A call waiting to be retried when the drain timeout runs out is
    cancelled, and never runs again: the timer of its retry (30 s away) is
    cancelled with it.
    """
    from twisted.internet import reactor

    from tests.reliability.test_retries import Flaky

    broker = brokers(Flaky, sqliteURL, retries=5, backoff=Backoff(first=30, maximum=30))
    await broker.waitUntilRunning()
    before = set(reactor.getDelayedCalls())

    def retryTimers() -> list[Any]:
        # The backoff waits 15 to 30 s; nothing else here waits that long.
        return [
            c
            for c in reactor.getDelayedCalls()
            if c not in before and c.getTime() - reactor.seconds() > 10
        ]

    d = broker.flakyWrite("t", 100)
    await until(lambda: broker.runs == 1 and retryTimers())
    [timer] = retryTimers()
    await broker.shutdown(timeout=0)
    with pytest.raises(defer.CancelledError):
        await d
    assert not timer.active()
    assert broker.runs == 1


async def test_threadsBeforeAndAfter(dbURL: str, brokers: Any) -> None:
    """
    The thread count after shutdown is what it was before the broker was
    made, though the broker ran a few hundred concurrent transactions.
    """
    before = ourThreads()
    broker = brokers(Ledger, dbURL)
    await defer.gatherResults([broker.write(f"w{i}") for i in range(200)])
    during = len(ourThreads())
    await broker.shutdown(timeout=5)
    await until(lambda: not (ourThreads() - before))
    assert during > len(before)
    assert len(ourThreads()) == len(before)


async def test_maxPending(dbURL: str, brokers: Any) -> None:
    """
    With maxPending=5, a sixth transaction waiting for a connection is
    refused at once with Overloaded (nothing queued); the accepted ones
    all run, and new calls are accepted again once the queue drains.
    """
    broker = brokers(Held, dbURL, maxPending=5, connections=1)
    await broker.waitUntilRunning()
    broker.held = threading.Event()
    broker.release = threading.Event()
    sleeper = broker.writeThenWait("sleeper")
    # The sleeper holds the one connection until released (not a 0.5 s
    # sleep, which could end before a loaded reactor queued the writes,
    # leaving room for the sixth): no longer pending.
    await until(lambda: broker.held.is_set() and broker._calls.pendingCount() == 0)
    accepted = [broker.write(f"a{i}") for i in range(5)]
    refused = broker.write("refused")
    assert refused.called
    with pytest.raises(Overloaded) as caught:
        await refused
    assert "maxPending=5" in str(caught.value)
    broker.release.set()
    await sleeper
    await defer.gatherResults(accepted)
    await broker.write("later")
    assert sorted(await broker.tokens()) == sorted(
        ["sleeper", "later", *(f"a{i}" for i in range(5))]
    )


@pytest.mark.reactorTimeout(60)
async def test_laterTimeoutShortensWait(dbURL: str, brokers: Any) -> None:
    """
    shutdown() waits; a later shutdown(timeout=...) bounds that wait: both
    Deferreds fire once the running transaction was interrupted.
    """
    broker = brokers(Ledger, dbURL, **oneOrTwo(dbURL))
    await broker.waitUntilRunning()
    # (120 s, past the reactorTimeout: shutdowns that waited for the sleeper
    # would fail the test; no wall-clock bound needed.)
    sleeper = broker.writeThenSleep("sleeper", sleepSQL(dbURL, 120))
    await sleeperRunning(dbURL)
    patient = broker.shutdown()
    await settle()
    assert not patient.called
    await broker.shutdown(timeout=0.3)
    assert patient.called
    with pytest.raises(defer.CancelledError):
        await sleeper


def _drainTimers(broker: Any) -> list[Any]:
    from twisted.internet import reactor

    return [
        call
        for call in reactor.getDelayedCalls()
        # (The drain timer is the broker's lifecycle's.)
        if getattr(call.func, "__self__", None) in (broker, broker._life)
    ]


async def test_noTimerLeft(sqliteURL: str, brokers: Any) -> None:
    """
    C{shutdown(timeout=...)} leaves no delayed call behind once it is done,
    whether the broker was idle or a second call came during the shutdown:
    trial's TestCase (and L{sasync.testing.trial}) finds a leftover one
    and fails the test with "Reactor was unclean".
    """
    idle = brokers(Ledger, sqliteURL)
    await idle.waitUntilRunning()
    await idle.shutdown(timeout=10)
    assert _drainTimers(idle) == []
    busy = brokers(Ledger, sqliteURL)
    await busy.write("w")
    first = busy.shutdown()
    await busy.shutdown(timeout=10)
    await first
    assert _drainTimers(busy) == []
