"""
Read replicas on real servers: a primary and two hot standbys the tests
start themselves (see L{tests.replicas.cluster}; the second standby replays
with a delay). Routing, read-only enforcement, session consistency against
eventual, C{after=} across brokers, and standbys going down mid-run.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from sasync import AccessBroker, ReadOnlyViolation, transact
from sasync.errors import ReplicaError
from tests.replicas.cluster import ReplicatedCluster

pytestmark = pytest.mark.reactorTimeout(240)


class Notes(AccessBroker):
    """
    One table; writes on the primary, read-only reads wherever routed.
    """

    async def startup(self) -> None:
        await self.table(
            "notes",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("n", SA.Integer),
        )

    @transact
    def add(self, n: int) -> int:
        result = self.conn.execute(self.notes.insert().values(n=n))
        return int(result.inserted_primary_key[0])

    @transact(readOnly=True)
    def get(self, ID: int) -> tuple[int | None, int]:
        """
        The note's value (or None if not there), and the port of the server
        that answered.
        """
        n = self.conn.execute(
            SA.select(self.notes.c.n).where(self.notes.c.id == ID)
        ).scalar()
        port = self.conn.exec_driver_sql("SELECT inet_server_port()").scalar()
        return n, int(port)

    @transact(readOnly=True)
    def sneakyAdd(self, n: int) -> None:
        self.conn.execute(self.notes.insert().values(n=n))


def sleep(seconds: float) -> Deferred[None]:
    from twisted.internet import reactor

    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)  # type: ignore[attr-defined]
    return d


async def started(
    cluster: ReplicatedCluster, url: str, standbys: list[str], **kw: Any
) -> Notes:
    """
    A broker with both standbys, running, with its table replayed on both
    and both standbys probed healthy.
    """
    broker = Notes(url, replicas=standbys, **kw)
    await broker.waitUntilRunning()
    await deferToThread(cluster.waitForReplay)
    await healthy(broker, 2)
    return broker


async def healthy(broker: Notes, count: int, timeout: float = 30.0) -> None:
    """
    Wait until C{count} of the broker's replicas are probed healthy.
    """
    waited = 0.0
    while sum(r.healthy for r in broker._replicas.replicas) != count:  # type: ignore[union-attr]
        assert waited < timeout, broker._replicas.describe()  # type: ignore[union-attr]
        await sleep(0.05)
        waited += 0.05


def ports(cluster: ReplicatedCluster) -> list[int]:
    return [cluster.primary.port] + [s.port for s in cluster.standbys]


async def test_routingShare(
    replicated: ReplicatedCluster, replicaURLs: tuple[str, list[str]]
) -> None:
    """
    Read-only calls go to the standbys, both of them, none to the primary
    (eventual consistency); writers go to the primary.
    """
    url, standbys = replicaURLs
    broker = await started(replicated, url, standbys, consistency="eventual")
    try:
        ID = await broker.add(1)
        await deferToThread(replicated.waitForReplay)
        served: collections.Counter[int] = collections.Counter()
        for _ in range(200):
            n, port = await broker.get(ID)
            assert n == 1
            served[port] += 1
        primary, first, second = ports(replicated)
        print(f"\nrouting share over 200 reads: {dict(served)} (primary {primary})")
        assert served[primary] == 0
        assert served[first] > 20 and served[second] > 20
        # stats().servers: the primary first, then each standby with the
        # reads it served, its health and its lag.
        servers = broker.stats().servers
        assert len(servers) == 3
        [primaryStats, *standbyStats] = servers.values()
        assert sum(s.calls for s in standbyStats) >= 200
        assert all(s.calls > 20 for s in standbyStats)
        assert all(s.healthy and s.lagSeconds is not None for s in standbyStats)
        # (The write, and the start-up's own work.)
        assert primaryStats.calls >= 1
        assert all(SA.make_url(u).password in (None, "***") for u in servers)
    finally:
        await broker.shutdown()


async def test_readOnlyEnforcedOnReplicaAndPrimary(
    replicated: ReplicatedCluster, replicaURLs: tuple[str, list[str]]
) -> None:
    """
    A write in a read-only call fails with L{ReadOnlyViolation} whether it
    runs on a standby or on the primary (with both standbys down).
    """
    url, standbys = replicaURLs
    broker = await started(replicated, url, standbys)
    try:
        with pytest.raises(ReadOnlyViolation, match=r"Notes\.sneakyAdd\(3\)"):
            await broker.sneakyAdd(3)
    finally:
        await broker.shutdown()
    plain = Notes(url)
    try:
        with pytest.raises(ReadOnlyViolation, match=r"Notes\.sneakyAdd\(4\)"):
            await plain.sneakyAdd(4)
    finally:
        await plain.shutdown()


async def countStale(broker: Notes, pairs: int) -> tuple[int, collections.Counter[int]]:
    stale = 0
    served: collections.Counter[int] = collections.Counter()
    for i in range(pairs):
        ID = await broker.add(i)
        n, port = await broker.get(ID)
        served[port] += 1
        if n != i:
            stale += 1
    return stale, served


async def test_sessionConsistencyNoStaleReads(
    replicated: ReplicatedCluster, replicaURLs: tuple[str, list[str]]
) -> None:
    """
    Session consistency: over 300 write-then-read pairs no read misses the
    write just made (the delayed standby is waited for or skipped); in
    eventual mode, for contrast, some do.
    """
    url, standbys = replicaURLs
    session = await started(replicated, url, standbys)
    try:
        stale, served = await countStale(session, 300)
        print(f"\nsession: {stale} stale reads of 300, served by {dict(served)}")
        assert stale == 0
        assert session.writePosition is not None
        standbyServed = sum(served[p] for p in ports(replicated)[1:])
        assert standbyServed > 0
    finally:
        await session.shutdown()
    eventual = await started(replicated, url, standbys, consistency="eventual")
    try:
        stale, served = await countStale(eventual, 300)
        print(f"eventual: {stale} stale reads of 300, served by {dict(served)}")
        assert stale > 0
    finally:
        await eventual.shutdown()


async def test_afterAcrossBrokers(
    replicated: ReplicatedCluster, replicaURLs: tuple[str, list[str]]
) -> None:
    """
    C{after=writer.writePosition} on another broker (as another process
    would, with the position handed over) reads the write, every time.
    """
    url, standbys = replicaURLs
    writer = Notes(url)
    reader = await started(replicated, url, standbys, consistency="eventual")
    try:
        # A broker without replicas learns positions once they are asked for.
        assert writer.writePosition is None
        stale = 0
        for i in range(100):
            ID = await writer.add(i)
            position = writer.writePosition
            assert position is not None
            n, _ = await reader.get(ID, after=position)
            stale += n != i
        print(f"\nafter=: {stale} stale reads of 100")
        assert stale == 0
        with pytest.raises(ReplicaError, match="not a WAL position"):
            reader.get(1, after="nonsense")
    finally:
        await writer.shutdown()
        await reader.shutdown()


async def test_standbyStoppedAndRestarted(
    replicated: ReplicatedCluster, replicaURLs: tuple[str, list[str]]
) -> None:
    """
    A standby stopped mid-run: no read fails, the other standby (or the
    primary) serves; restarted, it is probed healthy and serves again.
    """
    url, standbys = replicaURLs
    broker = await started(replicated, url, standbys, consistency="eventual")
    first = replicated.standbys[0]
    try:
        ID = await broker.add(7)
        await deferToThread(replicated.waitForReplay)
        stopping = deferToThread(first.stop)
        for _ in range(100):
            n, _ = await broker.get(ID)
            assert n == 7
        await stopping
        served: collections.Counter[int] = collections.Counter()
        for _ in range(50):
            n, port = await broker.get(ID)
            assert n == 7
            served[port] += 1
        assert served[first.port] == 0
        await deferToThread(first.start)
        await healthy(broker, 2)
        served.clear()
        for _ in range(100):
            n, port = await broker.get(ID)
            served[port] += 1
        assert served[first.port] > 0
    finally:
        await deferToThread(first.ensureRunning)
        await broker.shutdown()


async def test_bothStandbysDown(
    replicated: ReplicatedCluster, replicaURLs: tuple[str, list[str]]
) -> None:
    """
    With both standbys down, reads run on the primary and none fails.
    """
    url, standbys = replicaURLs
    broker = await started(replicated, url, standbys)
    try:
        ID = await broker.add(9)
        for standby in replicated.standbys:
            await deferToThread(standby.stop)
        served: collections.Counter[int] = collections.Counter()
        for _ in range(50):
            n, port = await broker.get(ID)
            assert n == 9
            served[port] += 1
        assert served == {replicated.primary.port: 50}
    finally:
        for standby in replicated.standbys:
            await deferToThread(standby.ensureRunning)
        await broker.shutdown()


def test_badReplicaOptions(postgresqlURL: str, mysqlURL: str) -> None:
    """
    Clear errors: a replica URL of another kind, replicas on MySQL, a bad
    consistency, replica options without replicas.
    """
    with pytest.raises(ReplicaError, match="is not a PostgreSQL URL"):
        Notes(postgresqlURL, replicas=[mysqlURL])
    with pytest.raises(ReplicaError, match="needs a PostgreSQL broker"):
        Notes(mysqlURL, replicas=[postgresqlURL])
    with pytest.raises(ReplicaError, match="consistency='strong'"):
        Notes(postgresqlURL, replicas=[postgresqlURL], consistency="strong")
    with pytest.raises(ReplicaError, match="without replicas="):
        Notes(postgresqlURL, maxReplicaLag=1)
    with pytest.raises(ReplicaError, match="a list of PostgreSQL URLs"):
        Notes(postgresqlURL, replicas=postgresqlURL)


class Fresh(Notes):
    """
    A broker whose start-up makes one more table.
    """

    async def startup(self) -> None:
        await super().startup()
        await self.table("fresh", SA.Column("id", SA.Integer, primary_key=True))

    @transact(readOnly=True)
    def countFresh(self) -> int:
        return int(
            self.conn.execute(
                SA.select(SA.func.count()).select_from(self.fresh)
            ).scalar_one()
        )


async def test_readRightAfterStartup(
    replicated: ReplicatedCluster, replicaURLs: tuple[str, list[str]]
) -> None:
    """
    Reads right after the start-up made a table: a standby that has not
    replayed it yet (the delayed one) can't serve them, and they run on the
    primary instead of failing.
    """
    url, standbys = replicaURLs
    broker = Fresh(url, replicas=standbys, consistency="eventual")
    try:
        await broker.waitUntilRunning()
        await healthy(broker, 2)
        for _ in range(20):
            assert await broker.countFresh() == 0
    finally:
        await broker.shutdown()
