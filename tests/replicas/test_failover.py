"""
Failover of the primary: a libpq multi-host URL with
C{target_session_attrs=read-write} and C{retries} rides a promotion of a
standby under concurrent writers, with every acknowledged write stored
exactly once; and a write refused by a read-only server runs again on a
new connection.
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Iterator

import pytest
import sqlalchemy as SA
from sqlalchemy.exc import InternalError
from sqlalchemy.pool import NullPool
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread

from sasync import AccessBroker, Backoff, retry, transact
from tests.reliability.cluster import Cluster, madeOrSkipped
from tests.replicas.cluster import Standby

pytestmark = pytest.mark.reactorTimeout(240)


class ReadOnlyRefusal(Exception):
    """
    Like psycopg2's ReadOnlySqlTransaction: SQLSTATE 25006.
    """

    pgcode = "25006"


def test_readOnlyServerIsRetryable() -> None:
    """
    A write refused with SQLSTATE 25006 (the server is read-only: a
    standby now) may run again if COMMIT was not sent, after a reconnect's
    wait; never once COMMIT was sent.
    """
    e = InternalError("INSERT ...", {}, ReadOnlyRefusal())
    assert retry.classify(e, commitSent=False, autocommit=False) == (
        retry.READ_ONLY_SERVER
    )
    assert retry.classify(e, commitSent=True, autocommit=False) is None
    backoff = Backoff(first=0.01, firstReconnect=0.2, random=lambda: 1.0)
    assert backoff.delay(1, retry.READ_ONLY_SERVER) == 0.2


class Pair:
    """
    A primary and one standby of its own (this test promotes the standby).
    """

    def __init__(self) -> None:
        self.primary = Cluster()
        try:
            self.standby = Standby(self.primary)
        except BaseException:
            self.primary.close()
            raise

    def url(self, database: str) -> str:
        hosts = "&".join(
            f"host=127.0.0.1:{c.port}" for c in (self.primary, self.standby)
        )
        return (
            f"postgresql+psycopg2://postgres@/{database}?{hosts}"
            "&target_session_attrs=read-write"
        )

    def close(self) -> None:
        self.standby.close()
        self.primary.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    made = madeOrSkipped(Pair)
    try:
        yield made
    finally:
        made.close()


class Ledger(AccessBroker):
    async def startup(self) -> None:
        # No unique index: a write stored twice would show.
        await self.table(
            "entries",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("writer", SA.Integer),
            SA.Column("seq", SA.Integer),
        )

    @transact
    def record(self, writer: int, seq: int) -> None:
        self.conn.execute(self.entries.insert().values(writer=writer, seq=seq))


def sleep(seconds: float) -> Deferred[None]:
    from twisted.internet import reactor

    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)  # type: ignore[attr-defined]
    return d


async def test_promotionUnderWriters(pair: Pair) -> None:
    """
    8 writers write through a multi-host URL; the primary stops and the
    standby is promoted mid-run. Every acknowledged write is stored exactly
    once on the new primary, and the writers go on there.
    """
    engine = SA.create_engine(pair.primary.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE failover")
    engine.dispose()
    broker = Ledger(
        pair.url("failover"),
        retries=200,
        backoff=Backoff(first=0.01, firstReconnect=0.05, maximum=0.2),
        connections=8,
    )
    await broker.waitUntilRunning()
    acknowledged: list[tuple[int, int]] = []
    failed: list[BaseException] = []
    done = False

    async def writer(w: int) -> None:
        seq = 0
        while not done:
            try:
                await broker.record(w, seq)
            except Exception as e:
                failed.append(e)
            else:
                acknowledged.append((w, seq))
            seq += 1

    writers = gatherResults([Deferred.fromCoroutine(writer(w)) for w in range(8)])
    try:
        # Writes flow (some acknowledged) before the primary stops.
        while len(acknowledged) < 100:
            await sleep(0.05)
        before = len(acknowledged)
        await deferToThread(pair.primary.stop, "fast")
        await deferToThread(pair.standby.promote)
        promotedAt = len(acknowledged)
        while len(acknowledged) < promotedAt + 200:
            await sleep(0.1)
    finally:
        done = True
        await writers
        await broker.shutdown()
    new = SA.create_engine(
        pair.standby.url.rsplit("/", 1)[0] + "/failover", poolclass=NullPool
    )
    with new.connect() as conn:
        stored = collections.Counter(
            (w, s) for w, s in conn.exec_driver_sql("SELECT writer, seq FROM entries")
        )
    new.dispose()
    lost = [k for k in acknowledged if stored[k] == 0]
    doubled = [k for k, n in stored.items() if n > 1]
    print(
        f"\nfailover: {len(acknowledged)} acknowledged ({before} before the stop),"
        f" {len(failed)} failed, {len(lost)} lost, {len(doubled)} doubled,"
        f" {len(stored)} stored"
    )
    for e in failed[:3]:
        print("".join(traceback.format_exception(e)))
    assert failed == []
    assert lost == []
    assert doubled == []
