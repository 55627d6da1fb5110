"""
A server restart (on a throwaway cluster of the tests' own): between
transactions, while the server is down, and a crash in the middle of a
stream of writes.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.exc import OperationalError
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from sasync import outcome
from sasync.retry import NO_CONNECTION
from tests.reliability.cluster import Cluster
from tests.reliability.helpers import (
    FIGURES,
    Figures,
    Ledger,
    adminEngine,
    pause,
    until,
)

CONNECTIONS = 3


def backendPIDs(url: str) -> set[int]:
    """
    The client backends connected to the database of C{url}, ours aside.
    """
    engine = adminEngine(url)
    try:
        with engine.connect() as conn:
            return set(
                conn.exec_driver_sql(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                    " AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'",
                    (SA.make_url(url).database,),
                ).scalars()
            )
    finally:
        engine.dispose()


async def useEveryWorker(broker: Ledger, prefix: str) -> None:
    """
    Enough concurrent writes that each worker runs some.
    """
    await defer.gatherResults(
        [broker.write(f"{prefix}-{i}") for i in range(CONNECTIONS * 4)]
    )


@pytest.mark.reactorTimeout(120)
async def test_restartBetweenTransactions(
    cluster: Cluster, clusterURL: str, brokers: Any
) -> None:
    """
    After each of three server restarts, transactions (without retries)
    succeed at once: every worker noticed that the server closed its idle
    connection and made a new one. No worker stays broken.
    """
    broker = brokers(Ledger, clusterURL, connections=CONNECTIONS)
    await useEveryWorker(broker, "before")
    started = time.monotonic()
    restarts = 3
    for n in range(restarts):
        old = backendPIDs(clusterURL)
        assert len(old) == CONNECTIONS
        await deferToThread(cluster.restart)
        await useEveryWorker(broker, f"after{n}")
        new = backendPIDs(clusterURL)
        assert len(new) == CONNECTIONS
        assert not old & new
    tokens = await broker.tokens()
    assert len(tokens) == len(set(tokens)) == CONNECTIONS * 4 * (restarts + 1)
    assert broker._handle.replacedConnections() == CONNECTIONS * restarts
    FIGURES.append(
        Figures(
            "server restarts between transactions",
            operations=CONNECTIONS * 4 * restarts,
            faults=restarts,
            acknowledged=CONNECTIONS * 4 * restarts,
            seconds=time.monotonic() - started,
            notes=[f"replaced connections {broker._handle.replacedConnections()}"],
        )
    )


@pytest.mark.reactorTimeout(120)
async def test_transactionWhileDown(
    cluster: Cluster, clusterURL: str, brokers: Any
) -> None:
    """
    While the server is down a transaction without retries fails with the
    driver's error; one with retries waits (backing off) and succeeds once
    the server is back.
    """
    broker = brokers(Ledger, clusterURL, connections=2)
    await broker.write("before")
    await deferToThread(cluster.stop)
    with pytest.raises(OperationalError):
        await broker.write("down")
    patient = broker.write("patient", retries=12)
    # It was refused a connection, and waits to try again.
    await until(lambda: broker._handle.retries[NO_CONNECTION] >= 1)
    assert not patient.called
    await deferToThread(cluster.start)
    await patient
    assert sorted(await broker.tokens()) == ["before", "patient"]
    assert broker._handle.retries[NO_CONNECTION] >= 1


@pytest.mark.reactorTimeout(150)
async def test_crashDuringWrites(
    cluster: Cluster, clusterURL: str, brokers: Any
) -> None:
    """
    The server crashes (immediate stop: no shutdown, recovery at the next
    start) in the middle of 300 writes with retries, and comes back a
    second later: every write is acknowledged and in the table exactly
    once, including those whose COMMIT was in flight (looked up after the
    server came back).
    """
    broker = brokers(Ledger, clusterURL, connections=4, retries=15)
    await broker.waitUntilRunning()
    lookups = Counter(outcome.verdicts)
    tokens = [f"w{i}" for i in range(300)]
    started = time.monotonic()
    # Each write sleeps 10 ms after its INSERT: the crash finds some in the
    # middle of their transactions, some in COMMIT, many queued.
    nap = "SELECT pg_sleep(0.01)"
    writes = [broker.writeThenSleep(token, nap) for token in tokens]
    await until(lambda: sum(1 for d in writes if d.called) >= 60)
    await deferToThread(cluster.stop, "immediate")
    inFlight = sum(1 for d in writes if not d.called)
    await pause(1.0)
    await deferToThread(cluster.start)
    results = await defer.DeferredList(writes, consumeErrors=True)
    failed = [r for ok, r in results if not ok]
    inTable = Counter(await broker.tokens())
    lookups = Counter(outcome.verdicts) - lookups
    FIGURES.append(
        Figures(
            "300 writes, server crash + restart, retries=15",
            operations=len(tokens),
            faults=1,
            acknowledged=len(tokens) - len(failed),
            failed=len(failed),
            lost=sum(
                1
                for t, (ok, _) in zip(tokens, results, strict=True)
                if ok and not inTable[t]
            ),
            duplicated=sum(1 for n in inTable.values() if n > 1),
            retried=sum(broker._handle.retries.values()),
            seconds=time.monotonic() - started,
            notes=[
                f"unfinished at the crash {inFlight}",
                ", ".join(f"{k} {v}" for k, v in broker._handle.retries.items()),
                "COMMIT lookups "
                + (", ".join(f"{k} {v}" for k, v in lookups.items()) or "none"),
            ],
        )
    )
    assert not failed, failed[0]
    assert all(inTable[t] == 1 for t in tokens)
    assert sum(inTable.values()) == len(tokens)
