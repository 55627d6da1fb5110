"""
PersistentDict's write-behind while the server restarts or stays down (on
a throwaway cluster of the tests' own): every accepted write is stored, or
reported by C{deferToWrites()}/C{shutdown()} naming exactly its key.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from sasync.errors import WritesLost
from sasync.pdict import PersistentDict
from tests.reliability.cluster import Cluster
from tests.reliability.helpers import FIGURES, Figures, pause

#: Writes per round, and seconds between rounds.
ROUND = 20
PACE = 0.005


async def stored(ID: str, url: str) -> dict[str, Any]:
    """
    What a fresh dict with this ID finds in the database.
    """
    d = PersistentDict(ID, url)
    try:
        found: dict[str, Any] = await d.copy()
        return found
    finally:
        await d.shutdown()


async def endReported(d: PersistentDict) -> set[str]:
    """
    Shut C{d} down; the keys its shutdown reports lost.
    """
    try:
        await d.shutdown()
    except WritesLost as e:
        return {str(k) for k in e.keys}
    return set()


def account(
    written: dict[str, int], found: dict[str, Any], reported: set[str]
) -> tuple[set[str], set[str]]:
    """
    Check the write-behind rule: each key written is stored with its last
    value, or reported (and then not stored with that value), never both
    and never neither.

    @return: the keys stored, and the keys lost without a report.
    """
    good = {k for k, v in written.items() if found.get(k) == v}
    assert not good & reported, sorted(good & reported)[:5]
    silent = set(written) - good - reported
    assert set(found) <= set(written)
    return good, silent


@pytest.mark.reactorTimeout(120)
@pytest.mark.parametrize("preload", [False, True], ids=["default", "preload"])
async def test_restartDuringWriteBehind(
    cluster: Cluster, clusterURL: str, preload: bool
) -> None:
    """
    The server restarts while a PersistentDict writes in the background
    (rounds of writes every few ms, some keys written again; in default
    mode a read of the database every round, which fails while the server
    is down): every write lands, retried by the store
    itself, and neither C{deferToWrites()} nor C{shutdown()} reports one
    lost. On the code before the fix, the writes of the failed transaction
    were dropped and both reported success (5,059 of 5,440 keys stored).
    """
    ID = f"restart-{preload}"
    d = PersistentDict(ID, clusterURL)
    await d.waitUntilRunning()
    if preload:
        await d.preload()
    written: dict[str, int] = {}
    reads: list[Deferred[Any]] = []
    started = time.monotonic()
    restart = None
    n = 0
    while restart is None or not restart.called or n < 4 * ROUND * 20:
        for _ in range(ROUND):
            key = f"k{n}" if n % 10 else f"again{n % 70}"
            d[key] = written[key] = n
            n += 1
        if not preload:
            # A key that landed long ago: the read goes to the database
            # (and seals the batch, so units pile up behind the retries).
            reads.append(d.get("k1"))
        if restart is None and n >= ROUND * 20:
            restart = deferToThread(cluster.restart)
        await pause(PACE)
    await restart
    reported: set[str] = set()
    try:
        await d.deferToWrites()
    except WritesLost as e:
        reported = {str(k) for k in e.keys}
    reported |= await endReported(d)
    found = await stored(ID, clusterURL)
    good, silent = account(written, found, reported)
    failedReads: list[Failure] = []
    for r in reads:
        r.addErrback(lambda f: failedReads.append(f))
    store = d._items
    FIGURES.append(
        Figures(
            f"PersistentDict restart, {'preload' if preload else 'default'} mode",
            operations=n,
            faults=1,
            acknowledged=len(good),
            failed=len(reported),
            lost=len(silent),
            retried=store._lander.retried,
            seconds=time.monotonic() - started,
            notes=[f"keys {len(written)}", f"reads failed {len(failedReads)}"],
        )
    )
    assert not silent, sorted(silent)[:10]
    assert not reported, sorted(reported)[:10]
    assert store._lander.retried >= 1


@pytest.mark.reactorTimeout(120)
async def test_downLongerThanWriteRetryTime(cluster: Cluster, clusterURL: str) -> None:
    """
    With the server down for longer than C{writeRetryTime}, the writes
    issued meanwhile are given up and reported, exactly those:
    C{deferToWrites()} fails naming them, again at the next call, and so
    does C{shutdown()}; the writes stored before the outage are not named.
    A write of a lost key that lands after the server is back settles it.
    """
    d = PersistentDict("down", clusterURL, writeRetryTime=1.5)
    await d.waitUntilRunning()
    await d.preload()
    for i in range(50):
        d[f"before{i}"] = i
    await d.deferToWrites()
    await deferToThread(cluster.stop)
    started = time.monotonic()
    try:
        for i in range(30):
            d[f"during{i}"] = i
        d["before0"] = "changed"
        lostKeys = {f"during{i}" for i in range(30)} | {"before0"}
        for _ in range(2):
            with pytest.raises(WritesLost) as caught:
                await d.deferToWrites()
            assert set(caught.value.keys) == lostKeys
        waited = time.monotonic() - started
        assert waited < 1.5 + 5
    finally:
        await deferToThread(cluster.start)
    d["during0"] = 0
    with pytest.raises(WritesLost) as caught:
        await d.deferToWrites()
    assert set(caught.value.keys) == lostKeys - {"during0"}
    reported = await endReported(d)
    assert reported == lostKeys - {"during0"}
    found = await stored("down", clusterURL)
    expected = {f"before{i}": i for i in range(50)}
    expected["during0"] = 0
    assert found == expected
    FIGURES.append(
        Figures(
            "PersistentDict, server down > writeRetryTime",
            operations=81,
            faults=1,
            acknowledged=len(found),
            failed=len(reported),
            lost=0,
            retried=d._items._lander.retried,
            seconds=waited,
            notes=["every lost write reported by deferToWrites (twice) and shutdown"],
        )
    )
