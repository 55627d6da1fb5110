"""
A server backend that stops answering (frozen with SIGSTOP, on the tests'
own throwaway cluster): a timeout, a cancel and C{shutdown(timeout=...)}
still answer their callers at the deadline, since a transaction whose COMMIT
was not sent cannot commit; the worker cuts the dead connection in the
background and replaces it, and the broker (and new brokers) work on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import defer

from sasync import TransactionTimeout, transact
from sasync.connection import _cancel, openHandles
from sasync.connection._cancel import CUT_AFTER
from tests.reliability.helpers import (
    FIGURES,
    Figures,
    Ledger,
    reactorNow,
    sasyncThreads,
    until,
)


class Freezer(Ledger):
    """
    A ledger whose transaction writes, then freezes its own backend and runs
    one more statement, which the server never answers.
    """

    frozen: list[int]

    @transact
    def writeThenFreeze(self, token: str) -> None:
        self.conn.execute(self.ledger.insert().values(token=token))
        pid = int(self.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        self.frozen.append(pid)
        os.kill(pid, signal.SIGSTOP)
        self.conn.exec_driver_sql("SELECT 1")


@pytest.fixture
def frozen() -> Iterator[list[int]]:
    """
    The backends the test froze: continued (SIGCONT) afterwards.
    """
    pids: list[int] = []
    try:
        yield pids
    finally:
        thaw(pids)


def freezer(brokers: Any, url: str, frozen: list[int], **kw: Any) -> Freezer:
    broker: Freezer = brokers(Freezer, url, connections=2, **kw)
    broker.frozen = frozen
    return broker


async def stillWorks(broker: Ledger, token: str) -> None:
    """
    The broker commits a write and reads it back.
    """
    await broker.write(token)
    assert token in await broker.tokens()


def thaw(frozen: list[int]) -> None:
    """
    Continue the frozen backends.
    """
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def report(name: str, failed: int, seconds: float, *notes: str) -> None:
    """
    The figures of a test whose calls all failed (as they must).
    """
    FIGURES.append(
        Figures(
            f"{name}, backend frozen (postgresql)",
            operations=failed,
            faults=failed,
            failed=failed,
            seconds=seconds,
            notes=list(notes),
        )
    )


@pytest.mark.reactorTimeout(60)
async def test_timeoutFrozenBackend(
    clusterURL: str, brokers: Any, frozen: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    timeout=2 on a transaction whose backend froze fails with
    TransactionTimeout at the deadline (it once came only when the server
    answered again). The worker cuts the connection in the background and
    replaces it: the broker works while the backend is still frozen, and
    after it is continued; nothing of the frozen transaction was committed.

    The cut is held back until the caller has heard: only the deadline can
    answer it then (no wall-clock bound needed; a caller that waited for
    the frozen server would run into the reactorTimeout).
    """
    monkeypatch.setattr(_cancel, "CUT_AFTER", 3600.0)
    broker = freezer(brokers, clusterURL, frozen)
    await broker.waitUntilRunning()
    # The clock the deadline is set on (see reactorNow).
    started = reactorNow()
    with pytest.raises(TransactionTimeout):
        await broker.writeThenFreeze("frozen", timeout=2)
    seconds = reactorNow() - started
    assert len(frozen) == 1
    assert seconds >= 2
    assert broker._handle.replacedConnections() == 0
    # The cut may come now (the resent cancels check CUT_AFTER each time).
    monkeypatch.setattr(_cancel, "CUT_AFTER", CUT_AFTER)
    await until(lambda: broker._handle.replacedConnections() == 1, timeout=15)
    await stillWorks(broker, "while frozen")
    thaw(frozen)
    await stillWorks(broker, "after")
    assert sorted(await broker.tokens()) == ["after", "while frozen"]
    report("timeout=2", 1, seconds, f"caller heard after {seconds:.2f} s")


@pytest.mark.reactorTimeout(60)
async def test_cancelFrozenBackend(
    clusterURL: str, brokers: Any, frozen: list[int]
) -> None:
    """
    Deferred.cancel() of a transaction whose backend froze fails with
    CancelledError at once, with or without retries (it once waited for the
    server); the worker cuts and replaces the connection; nothing was
    committed.
    """
    broker = freezer(brokers, clusterURL, frozen)
    await broker.waitUntilRunning()
    figures = []
    for n, retries in enumerate((0, 3)):
        d = broker.writeThenFreeze(f"frozen{n}", retries=retries)
        await until(lambda n=n: len(frozen) > n)
        started = time.monotonic()
        d.cancel()
        # The caller heard at once: cancel() itself failed the Deferred (not
        # a wall-clock bound, which a loaded machine can overrun).
        assert d.called
        with pytest.raises(defer.CancelledError):
            await d
        figures.append(time.monotonic() - started)
        await until(
            lambda n=n: broker._handle.replacedConnections() == n + 1, timeout=15
        )
    await stillWorks(broker, "while frozen")
    thaw(frozen)
    await stillWorks(broker, "after")
    assert sorted(await broker.tokens()) == ["after", "while frozen"]
    report("cancel()", 2, max(figures), f"caller heard after {max(figures):.3f} s")


@pytest.mark.reactorTimeout(60)
async def test_shutdownFrozenBackend(
    clusterURL: str, brokers: Any, frozen: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    shutdown(timeout=2) with a transaction on a frozen backend (and writes
    queued behind it) returns within the bound (it once took until the
    server answered), every caller having heard; the stuck worker is left to
    end by itself, which it does once its connection is cut, so no sAsync
    thread is left. A new broker works, while the backend is frozen and
    after.

    The cut is held back until shutdown() has returned: only its timeout
    can end it then (no wall-clock bound needed; a shutdown that waited for
    the frozen server would run into the reactorTimeout).
    """
    monkeypatch.setattr(_cancel, "CUT_AFTER", 3600.0)
    before = sasyncThreads()
    broker = freezer(brokers, clusterURL, frozen, retries=0)
    await broker.waitUntilRunning()
    stuck = broker.writeThenFreeze("frozen")
    await until(lambda: len(frozen) == 1)
    writes = [broker.write(f"w{i}") for i in range(20)]
    handle = broker._handle
    started = time.monotonic()
    await broker.shutdown(timeout=2)
    seconds = time.monotonic() - started
    assert stuck.called and all(d.called for d in writes)
    # The stuck worker's connection may be cut now.
    monkeypatch.setattr(_cancel, "CUT_AFTER", CUT_AFTER)
    with pytest.raises(defer.CancelledError):
        await stuck
    results = await defer.DeferredList(writes, consumeErrors=True)
    acknowledged = sum(ok for ok, _ in results)
    await until(lambda: handle not in openHandles(), timeout=CUT_AFTER + 10)
    await until(lambda: not (sasyncThreads() - before), timeout=10)
    again = brokers(Ledger, clusterURL)
    await stillWorks(again, "while frozen")
    thaw(frozen)
    await stillWorks(again, "after")
    inTable = await again.tokens()
    assert "frozen" not in inTable
    assert len(inTable) == acknowledged + 2
    FIGURES.append(
        Figures(
            "shutdown(timeout=2), backend frozen (postgresql)",
            operations=21,
            faults=1,
            acknowledged=acknowledged,
            failed=21 - acknowledged,
            seconds=seconds,
            notes=[f"shutdown returned after {seconds:.2f} s", "threads left 0"],
        )
    )
