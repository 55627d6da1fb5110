"""
Cancelling and timing out running sleep queries on the servers: the
queries are gone from the server (C{pg_stat_activity}, MariaDB's process
list), nothing they wrote stays, the callers hear promptly, and the same
connections go on working.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from sasync import TransactionTimeout
from tests.reliability.helpers import (
    FIGURES,
    Figures,
    Ledger,
    activeSleeps,
    sleepSQL,
    until,
)

CONNECTIONS = 4


async def connectionIDs(broker: Ledger, url: str) -> set[int]:
    """
    The server's IDs of the broker's connections (one call per worker,
    all running at once).
    """
    sql = "SELECT pg_backend_pid()" if url.startswith("postgresql") else (
        "SELECT CONNECTION_ID()"
    )

    async def one() -> int:
        rows = await broker.sql(f"{sql}, {sleepSQL(url, 0.2)[len('SELECT '):]}")
        return int(rows[0][0])

    ids = await defer.gatherResults(
        [defer.Deferred.fromCoroutine(one()) for _ in range(CONNECTIONS)]
    )
    return set(ids)


@pytest.mark.reactorTimeout(90)
async def test_cancelRunningSleeps(serverURL: str, brokers: Any) -> None:
    """
    Four running 30 s sleeps (each after an INSERT) and four queued writes
    are cancelled: all fail with CancelledError within seconds, the sleeps
    are gone from the server, nothing was written, and the four
    connections are the same healthy ones afterwards. A call with retries
    is not run again after a cancel.
    """
    broker = brokers(Ledger, serverURL, connections=CONNECTIONS)
    before = await connectionIDs(broker, serverURL)
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
    results = await defer.DeferredList(sleeps + queued, consumeErrors=True)
    seconds = time.monotonic() - started
    assert all(
        not ok and r.check(defer.CancelledError) for ok, r in results
    ), results
    assert seconds < 5
    # The callers heard at once; the workers roll back in the background.
    await until(lambda: activeSleeps(serverURL) == 0)
    assert await broker.tokens() == []
    assert await connectionIDs(broker, serverURL) == before
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
    Four running 30 s sleeps with a 0.5 s timeout fail with
    TransactionTimeout at the deadline, and the server soon runs none of
    them.
    """
    broker = brokers(Ledger, serverURL, connections=CONNECTIONS)
    await broker.waitUntilRunning()
    started = time.monotonic()
    results = await defer.DeferredList(
        [
            broker.writeThenSleep(f"t{i}", sleepSQL(serverURL, 30), timeout=0.5)
            for i in range(CONNECTIONS)
        ],
        consumeErrors=True,
    )
    seconds = time.monotonic() - started
    assert all(not ok and r.check(TransactionTimeout) for ok, r in results)
    assert seconds < 5
    await until(lambda: activeSleeps(serverURL) == 0)
    assert await broker.tokens() == []
    await broker.write("after")
    assert await broker.tokens() == ["after"]
    assert broker._handle.replacedConnections() == 0


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
