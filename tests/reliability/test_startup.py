"""
A broker started before its database (on a throwaway cluster of the tests'
own, or on a port where nothing listens): its start-up waits for the
database, within C{startupTimeout}, and a broker that did not start says so
and fails every call at once.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.exc import OperationalError, ProgrammingError
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from sasync import AccessBroker, StartupError
from sasync.retry import NO_CONNECTION, Backoff
from tests.reliability.cluster import Cluster, _freePort
from tests.reliability.helpers import FIGURES, Figures, Ledger, reactorNow, until

#: Short waits, so that the tests don't wait long for a server.
FAST = Backoff(first=0.01, firstReconnect=0.05, maximum=0.2)


class BadSchema(AccessBroker):
    """
    A table in a schema the database does not have: a start-up error that
    no waiting cures.
    """

    async def startup(self) -> None:
        await self.table(
            "lost", SA.Column("id", SA.Integer, primary_key=True), schema="nope"
        )


class Probing(AccessBroker):
    """
    No tables: its start-up's first database work is a transaction of its
    own, then first().
    """

    async def startup(self) -> None:
        rows = await self.sql("SELECT 1")
        self.probed = rows[0][0]

    def first(self) -> None:
        self.conn.exec_driver_sql("SELECT 2")
        self.firstRan = True


def nowhere(driver: str = "postgresql+psycopg2") -> str:
    """
    A URL, with a password, of a port where nothing listens.
    """
    return f"{driver}://app:s3cret@127.0.0.1:{_freePort()}/app"


@pytest.mark.reactorTimeout(120)
async def test_startsOnceTheDatabaseComes(
    cluster: Cluster, clusterURL: str, brokers: Any
) -> None:
    """
    A broker made while its server is down (even with retries=0) starts once
    the server comes up, after the broker tried to connect several times:
    its tables are made, and a call made while it waited runs then. So does
    one whose start-up begins with a transaction, and its first().

    (The server starts once the broker has retried three times, not after a
    fixed delay, which a loaded machine could spend before the first try.)
    """
    await deferToThread(cluster.stop)
    started = time.monotonic()
    broker = brokers(
        Ledger, clusterURL, connections=2, retries=0, startupTimeout=60, backoff=FAST
    )
    probing = brokers(Probing, clusterURL, startupTimeout=60, backoff=FAST)
    early = broker.write("early")

    async def startOnceRetried() -> None:
        try:
            await until(lambda: broker._handle.retries[NO_CONNECTION] >= 3)
        finally:
            # (Leave the cluster running, whatever happened.)
            await deferToThread(cluster.start)

    serverUp = defer.ensureDeferred(startOnceRetried())
    try:
        await broker.waitUntilRunning()
        waited = time.monotonic() - started
    finally:
        await serverUp
    await early
    await probing.waitUntilRunning()
    assert (probing.probed, probing.firstRan) == (1, True)
    await broker.write("later")
    assert sorted(await broker.tokens()) == ["early", "later"]
    retried = broker._handle.retries[NO_CONNECTION]
    assert retried >= 3
    FIGURES.append(
        Figures(
            "broker made before its server, which came after 3 retries",
            operations=2,
            faults=1,
            acknowledged=2,
            retried=retried,
            seconds=waited,
            notes=[f"running after {waited:.1f} s"],
        )
    )


@pytest.mark.reactorTimeout(60)
@pytest.mark.parametrize("driver", ["postgresql+psycopg2", "mysql+pymysql"])
async def test_noDatabaseEver(driver: str, brokers: Any) -> None:
    """
    With no server ever, the start-up gives up once startupTimeout has run
    out: waiting calls and waitUntilRunning fail with a StartupError that
    says the broker will not run, names the URL without its password and
    keeps the driver's error as its cause; later calls fail at once, and
    shutdown ends.

    (No upper bound on the wall time: a loaded machine may take any time
    over the connection attempts. The message says the wait ended because
    startupTimeout ran out, after retries; a wait that never ended would
    run into the reactorTimeout.)
    """
    url = nowhere(driver)
    # The reactor's clock, which startupTimeout is measured on.
    started = reactorNow()
    broker = brokers(Ledger, url, retries=5, startupTimeout=1, backoff=FAST)
    with pytest.raises(StartupError) as info:
        await broker.write("waiting")
    assert reactorNow() - started >= 1.0
    message = str(info.value)
    assert message.startswith(f"Ledger did not start on {driver}://app:")
    assert "s3cret" not in message
    assert "the database did not accept connections within startupTimeout=1 s (" in (
        message
    )
    retried = re.search(r"startupTimeout=1 s \((\d+) retries in ", message)
    assert retried is not None and int(retried[1]) >= 1, message
    assert "will not run" in message
    assert "make a new one once the database accepts connections" in message
    assert "Connection refused" in message
    assert isinstance(info.value.__cause__, OperationalError)
    calls = [
        lambda: broker.write("after"),
        broker.tokens,
        broker.waitUntilRunning,
        lambda: broker.table("t", SA.Column("id", SA.Integer, primary_key=True)),
    ]
    for call in calls:
        d = call()
        # Failed at once: before the call returned, with no wait.
        assert d.called
        with pytest.raises(StartupError, match="will not run"):
            await d
    await broker.shutdown()


@pytest.mark.reactorTimeout(60)
async def test_shutdownStopsTheWait(brokers: Any) -> None:
    """
    shutdown() while the start-up waits for a database ends the wait at the
    next attempt (not after startupTimeout): waiting calls fail with a
    StartupError saying why. (startupTimeout is an hour: a shutdown() that
    waited it out would run into the reactorTimeout, so no wall-clock bound
    is needed.)
    """
    broker = brokers(Ledger, nowhere(), startupTimeout=3600, backoff=FAST)
    waiting = broker.write("waiting")
    # The start-up is waiting: it has tried and retried.
    await until(lambda: broker._handle.retries[NO_CONNECTION] >= 1)
    await broker.shutdown()
    with pytest.raises(StartupError, match="shutdown\\(\\) was called"):
        await waiting
    # Shut down before its start-up even began: the same.
    broker = brokers(Ledger, nowhere(), startupTimeout=3600, backoff=FAST)
    waiting = broker.write("waiting")
    await broker.shutdown()
    with pytest.raises(StartupError, match="shutdown\\(\\) was called"):
        await waiting


@pytest.mark.reactorTimeout(60)
async def test_otherErrorsFailAtOnce(clusterURL: str, brokers: Any) -> None:
    """
    A start-up error that is not a missing database (a table in a schema
    that does not exist) fails the start-up at once, never retried, with
    retries and a long startupTimeout (an hour: waiting it out would run
    into the reactorTimeout).
    """
    broker = brokers(BadSchema, clusterURL, retries=10, startupTimeout=3600)
    with pytest.raises(StartupError, match="its start-up failed") as info:
        await broker.waitUntilRunning()
    assert isinstance(info.value.__cause__, ProgrammingError)
    assert "make a new one once this error is fixed: " in str(info.value)
    assert sum(broker._handle.retries.values()) == 0
