"""
Backends terminated (C{pg_terminate_backend} from another connection) at
random moments during a stream of writes: every acknowledged write is in
the table exactly once; with retries every write is acknowledged. The same
on MariaDB (C{KILL CONNECTION}), where a connection lost during COMMIT
cannot be looked up, so is not retried.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from twisted.internet.defer import DeferredList
from twisted.internet.threads import deferToThread

from sasync.connection import _outcome as outcome
from tests.reliability.helpers import (
    FIGURES,
    BackendKiller,
    Figures,
    Ledger,
    retriedCount,
)

#: Rounds of writes at most, waiting for enough faults (a guard: the rounds
#: go on until the killer has ended enough connections, however slowly a
#: loaded machine lets it run).
MAX_ROUNDS = 200


async def writeUnderFire(
    url: str,
    brokers: Any,
    name: str,
    writes: int,
    retries: int,
    interval: float = 0.005,
    minFaults: int = 10,
) -> tuple[Figures, set[str], Counter[str]]:
    """
    Make rounds of C{writes} writes on 4 connections while backends are
    terminated every C{interval} seconds or so, until at least C{minFaults}
    were terminated (a fast machine writes a round before that).

    @return: the figures, the acknowledged tokens, and how many times each
        token is in the table.
    """
    broker = brokers(Ledger, url, connections=4, retries=retries)
    await broker.waitUntilRunning()
    killer = BackendKiller(url, interval=interval)
    lookups = Counter(outcome.verdicts)
    started = time.monotonic()
    killer.start()
    try:
        tokens: list[str] = []
        results: list[tuple[bool, Any]] = []
        for _ in range(MAX_ROUNDS):
            batch = [f"w{len(tokens) + i}" for i in range(writes)]
            tokens += batch
            results += await DeferredList(
                [broker.write(token) for token in batch], consumeErrors=True
            )
            if killer.kills >= minFaults or killer.error is not None:
                break
    finally:
        await deferToThread(killer.stop)
    assert killer.error is None, killer.error
    await deferToThread(killer.waitUntilGone)
    seconds = time.monotonic() - started
    lookups = Counter(outcome.verdicts) - lookups
    acknowledged = {t for t, (ok, _) in zip(tokens, results, strict=True) if ok}
    for ok, result in results:
        if not ok:
            # The driver's own error, unchanged.
            assert "OperationalError" in type(result.value).__name__, result
    # Every connection the killer ended is gone from the server (waited
    # for above): a worker whose connection it was sees that before this
    # read, and connects again.
    inTable = Counter(await broker.tokens())
    figures = Figures(
        name,
        operations=len(tokens),
        faults=killer.kills,
        acknowledged=len(acknowledged),
        failed=len(tokens) - len(acknowledged),
        lost=sum(1 for t in acknowledged if inTable[t] == 0),
        duplicated=sum(1 for n in inTable.values() if n > 1),
        retried=retriedCount(broker),
        seconds=seconds,
        notes=[
            f"replaced connections {broker._handle.replacedConnections()}",
            "failed writes found committed"
            f" {sum(1 for t in tokens if t not in acknowledged and inTable[t])}",
            "COMMIT lookups "
            + (", ".join(f"{k} {v}" for k, v in lookups.items()) or "none"),
        ],
    )
    FIGURES.append(figures)
    return figures, acknowledged, inTable


@pytest.mark.reactorTimeout(120)
async def test_terminateWithRetries(postgresqlURL: str, brokers: Any) -> None:
    """
    1,000 writes with retries while backends are terminated at random:
    all acknowledged, each in the table exactly once.
    """
    figures, _acknowledged, inTable = await writeUnderFire(
        postgresqlURL,
        brokers,
        "rounds of 1000 writes, backends killed, retries=20",
        1000,
        20,
        minFaults=20,
    )
    assert figures.faults >= 20, "too few backends were terminated to prove much"
    assert figures.acknowledged == figures.operations
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert sum(inTable.values()) == figures.operations


@pytest.mark.reactorTimeout(120)
async def test_terminateWithoutRetries(postgresqlURL: str, brokers: Any) -> None:
    """
    The same without retries: some writes fail with the driver's error,
    every acknowledged one is in the table exactly once, and nothing is
    duplicated (a failed write is in it at most once: its COMMIT may have
    happened before the answer was lost).
    """
    figures, acknowledged, inTable = await writeUnderFire(
        postgresqlURL,
        brokers,
        "rounds of 500 writes, backends killed, retries=0",
        500,
        0,
    )
    assert figures.faults >= 10
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert all(inTable[t] == 1 for t in acknowledged)


@pytest.mark.reactorTimeout(120)
async def test_killConnectionsMariaDB(mysqlURL: str, brokers: Any) -> None:
    """
    300 writes with retries while MariaDB connections are killed at random:
    every acknowledged write is in the table exactly once and nothing is
    duplicated. A write whose connection died during COMMIT is not retried
    (MariaDB cannot say whether it committed): it fails, and may or may
    not be in the table.
    """
    figures, acknowledged, inTable = await writeUnderFire(
        mysqlURL,
        brokers,
        "rounds of 300 writes, MariaDB connections killed, retries=20",
        300,
        20,
        interval=0.02,
    )
    assert figures.faults >= 10
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert all(inTable[t] == 1 for t in acknowledged)
