"""
Retries on real databases: concurrent SERIALIZABLE increments of one
counter, forced deadlocks, connections lost before and during COMMIT,
AUTOCOMMIT, the broker's default timeout.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, ClassVar

import psycopg
import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as SA
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from twisted.internet import defer

from asynqueue import OutcomeUnknown
from sasync import TransactionTimeout, transact
from sasync.errors import ConnectionClosedByServer
from sasync.retry import DEADLOCK, LOST, ROLLED_BACK
from tests.reliability.helpers import (
    FIGURES,
    Figures,
    Ledger,
    killBackend,
    retriedCount,
    sleepSQL,
)


class SimulatedConflict(Exception):
    """
    A driver error that says "serialization failure" (SQLSTATE 40001).
    """

    pgcode = "40001"


def conflict() -> DBAPIError:
    """
    What SQLAlchemy raises for a serialization failure.
    """
    return OperationalError("UPDATE ...", {}, SimulatedConflict("simulated"))


class Flaky(Ledger):
    """
    A ledger whose C{flakyWrite} fails with a (simulated) serialization
    failure on its first C{failures} attempts, and counts its runs.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.runs = 0

    @transact
    def flakyWrite(self, token: str, failures: int) -> int:
        self.runs += 1
        self.conn.execute(self.ledger.insert().values(token=token))
        if self.runs <= failures:
            raise conflict()
        return self.runs


@pytest.mark.reactorTimeout(120)
async def test_serializableCounter(serverURL: str, brokers: Any) -> None:
    """
    60 concurrent read-modify-write increments of one counter, each in a
    SERIALIZABLE transaction that sets its own isolation level first, on 8
    connections with retries: conflicts happen (PostgreSQL: serialization
    failures; MariaDB: deadlocks) and are retried, and the final value is
    exactly 60, each increment having seen a distinct value.
    """
    broker = brokers(Ledger, serverURL, connections=8, retries=200)
    await broker.resetCounter()
    started = time.monotonic()
    seen = await defer.gatherResults([broker.increment(pause=0.002) for _ in range(60)])
    assert await broker.counterValue() == 60
    assert sorted(seen) == list(range(1, 61))
    retried = retriedCount(broker)
    assert retried > 0, "no conflict happened: the test proves nothing"
    kind = "postgresql" if serverURL.startswith("postgresql") else "mariadb"
    FIGURES.append(
        Figures(
            f"serializable counter x60 ({kind})",
            operations=60,
            faults=retried,
            acknowledged=60,
            retried=retried,
            seconds=time.monotonic() - started,
            notes=[", ".join(f"{k}: {v}" for k, v in broker._handle.retries.items())],
        )
    )


class Transfers(Ledger):
    """
    Two rows updated in either order, with a barrier that makes the first
    attempts of two transfers deadlock. The attempt that runs again waits
    until the other transfer's call has ended: on PostgreSQL, a retry that
    overlapped the winner's transaction would fail again at SERIALIZABLE (a
    serialization failure) whenever the winner is slow to commit.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.barrier = threading.Barrier(2, timeout=30)
        self.attempts: list[str] = []
        #: Set (reactor thread) once each direction's call has ended.
        self.ended = {"1->2": threading.Event(), "2->1": threading.Event()}

    @transact
    def setUp(self) -> None:
        t = self.counter
        self.conn.execute(t.delete())
        rows = [{"id": 1, "value": 100}, {"id": 2, "value": 100}]
        self.conn.execute(t.insert(), rows)

    def transferred(
        self, source: int, target: int, amount: int
    ) -> defer.Deferred[None]:
        """
        L{transfer}, whose end (committed or failed) is marked in C{ended}.
        """
        ended = self.ended[f"{source}->{target}"]

        def mark(result: Any) -> Any:
            ended.set()
            return result

        return self.transfer(source, target, amount).addBoth(mark)

    @transact
    def transfer(self, source: int, target: int, amount: int) -> None:
        first = f"{source}->{target}" not in self.attempts
        self.attempts.append(f"{source}->{target}")
        if not first and not self.ended[f"{target}->{source}"].wait(30):
            raise RuntimeError("the other transfer never ended")
        t = self.counter
        self.conn.execute(
            t.update().where(t.c.id == source).values(value=t.c.value - amount)
        )
        if first:
            self.barrier.wait()  # Both hold one row lock, and want the other.
        self.conn.execute(
            t.update().where(t.c.id == target).values(value=t.c.value + amount)
        )

    @transact
    def values(self) -> list[int]:
        t = self.counter
        return list(self.conn.execute(SA.select(t.c.value).order_by(t.c.id)).scalars())


@pytest.mark.reactorTimeout(60)
async def test_deadlockRetried(serverURL: str, brokers: Any) -> None:
    """
    Two transfers locking two rows in opposite orders deadlock (PostgreSQL
    40P01, MariaDB 1213); the database rolls one back, sAsync runs it
    again, and both are acknowledged with the right balances.
    """
    broker = brokers(Transfers, serverURL, connections=2, retries=3)
    await broker.setUp()
    await defer.gatherResults(
        [broker.transferred(1, 2, 10), broker.transferred(2, 1, 3)]
    )
    assert await broker.values() == [93, 107]
    assert broker._handle.retries[DEADLOCK] == 1
    assert len(broker.attempts) == 3


async def test_retryRunsFromScratch(dbURL: str, brokers: Any) -> None:
    """
    A retried transaction runs the whole function again from scratch: the
    writes of the failed attempts were rolled back, and the caller sees
    only the last attempt's result.
    """
    broker = brokers(Flaky, dbURL)
    assert await broker.flakyWrite("t", 2, retries=2) == 3
    assert await broker.tokens() == ["t"]
    with pytest.raises(OperationalError) as caught:
        await broker.flakyWrite("u", 10, retries=1)
    assert "after 1 retries" in "\n".join(caught.value.__notes__)
    assert await broker.tokens() == ["t"]
    assert broker.runs == 5


async def test_noRetriesByDefault(sqliteURL: str, brokers: Any) -> None:
    """
    Without retries (the default) the first failure goes to the caller.
    """
    broker = brokers(Flaky, sqliteURL)
    with pytest.raises(OperationalError):
        await broker.flakyWrite("t", 1)
    assert broker.runs == 1
    assert await broker.flakyWrite("t", 1) == 2


async def test_autocommitNeverRetried(dbURL: str, brokers: Any) -> None:
    """
    In AUTOCOMMIT mode each statement commits by itself, so a transaction
    function is never run again: its first write stays, once.
    """
    broker = brokers(Flaky, dbURL, isolation_level="AUTOCOMMIT", retries=5)
    with pytest.raises(OperationalError):
        await broker.flakyWrite("t", 1)
    assert broker.runs == 1
    assert await broker.tokens() == ["t"]


class KillsItself(Ledger):
    """
    A ledger whose first C{write} attempt loses its connection halfway
    (its backend is terminated), before COMMIT.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.runs = 0

    @transact
    def writeAndLose(self, token: str) -> None:
        self.runs += 1
        self.conn.execute(self.ledger.insert().values(token=token))
        if self.runs == 1:
            pid = self.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            killBackend(self._spec.url.render_as_string(False), pid)
        self.conn.execute(self.ledger.insert().values(token=token + "-2"))


async def test_lostBeforeCommitRetried(postgresqlURL: str, brokers: Any) -> None:
    """
    A connection lost in the middle of a transaction (before COMMIT) fails
    that attempt; with retries the whole transaction runs again on a new
    connection, and its writes are there exactly once.
    """
    broker = brokers(KillsItself, postgresqlURL, connections=1, retries=2)
    await broker.writeAndLose("t")
    assert sorted(await broker.tokens()) == ["t", "t-2"]
    assert broker.runs == 2
    assert broker._handle.retries[LOST] == 1


class KilledBeforeCommit(Ledger):
    """
    A ledger whose C{writeThenDie} has its backend terminated after its
    last statement, on its first attempt: the server has closed the
    connection before COMMIT is sent.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.runs = 0

    @transact
    def writeThenDie(self, token: str) -> None:
        self.runs += 1
        self.conn.execute(self.ledger.insert().values(token=token))
        if self.runs == 1:
            pid = self.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            killBackend(self._spec.url.render_as_string(False), pid)


async def test_closedBeforeCommit(postgresqlURL: str, brokers: Any) -> None:
    """
    The server closed the connection after the last statement: sAsync sees
    it before sending COMMIT, so the caller learns for sure that nothing
    was committed (an OperationalError whose orig is a
    ConnectionClosedByServer), and with retries the transaction runs again.
    """
    broker = brokers(KilledBeforeCommit, postgresqlURL, connections=1)
    with pytest.raises(OperationalError) as caught:
        await broker.writeThenDie("t")
    assert isinstance(caught.value.orig, ConnectionClosedByServer)
    assert caught.value.connection_invalidated
    assert await broker.tokens() == []
    broker.runs = 0
    await broker.writeThenDie("u", retries=1)
    assert await broker.tokens() == ["u"]
    assert broker.runs == 2
    assert broker._handle.retries[LOST] == 1


class LosesCommitAnswer(psycopg2.extensions.connection):  # type: ignore[misc]
    """
    A psycopg2 connection that, when told, loses the answer to COMMIT:
    C{"after"}, it commits and then fails as if the connection had died
    just before the answer came; C{"before"}, it fails without sending
    COMMIT (the server still holds the open transaction).
    """

    script: ClassVar[list[str]] = []

    def commit(self) -> None:
        mode = self.script.pop(0) if self.script else ""
        if mode == "after":
            super().commit()
        if mode:
            self.close()
            raise psycopg2.OperationalError(
                "server closed the connection unexpectedly (simulated)"
            )
        super().commit()


class LosesCommitAnswer3(psycopg.Connection[Any]):
    """
    L{LosesCommitAnswer} for psycopg 3 (its script is shared).
    """

    def commit(self) -> None:
        mode = LosesCommitAnswer.script.pop(0) if LosesCommitAnswer.script else ""
        if mode == "after":
            super().commit()
        if mode:
            self.close()
            raise psycopg.OperationalError(
                "server closed the connection unexpectedly (simulated)"
            )
        super().commit()


def losingCommitAnswers(url: str) -> dict[str, Any]:
    """
    Broker keywords whose connections are L{LosesCommitAnswer}s (psycopg2)
    or L{LosesCommitAnswer3}s (psycopg 3).
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql+psycopg2":
        return {"connect_args": {"connection_factory": LosesCommitAnswer}}
    params = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
        **{str(k): v for k, v in parsed.query.items()},
    }
    kw = {k: v for k, v in params.items() if v is not None}
    return {"creator": lambda: LosesCommitAnswer3.connect(**kw)}


@pytest.mark.reactorTimeout(60)
async def test_lostCommitAnswer(postgresqlURL: str, brokers: Any) -> None:
    """
    PostgreSQL with retries: when the answer to COMMIT is lost, sAsync asks
    the database what became of the transaction. Committed: the caller
    gets its result, and the write is there once (no retry). Not
    committed: it runs again, and the write is there once.
    """
    broker = brokers(
        Ledger,
        postgresqlURL,
        connections=1,
        retries=2,
        **losingCommitAnswers(postgresqlURL),
    )
    await broker.waitUntilRunning()
    LosesCommitAnswer.script[:] = ["after"]
    await broker.write("committed")
    assert await broker.tokens() == ["committed"]
    assert sum(broker._handle.retries.values()) == 0
    LosesCommitAnswer.script[:] = ["before"]
    await broker.write("retried")
    assert sorted(await broker.tokens()) == ["committed", "retried"]
    assert broker._handle.retries[ROLLED_BACK] == 1


@pytest.mark.reactorTimeout(60)
async def test_lostCommitNotRetriedWithoutLookup(
    postgresqlURL: str, brokers: Any
) -> None:
    """
    Without retries nothing is looked up and nothing runs again: the
    caller gets the driver's error (whether the write happened is then
    unknown to the caller; here it did).
    """
    broker = brokers(
        Ledger,
        postgresqlURL,
        connections=1,
        **losingCommitAnswers(postgresqlURL),
    )
    await broker.waitUntilRunning()
    LosesCommitAnswer.script[:] = ["after"]
    with pytest.raises(OperationalError):
        await broker.write("maybe")
    assert await broker.tokens() == ["maybe"]


@pytest.mark.reactorTimeout(60)
async def test_brokerDefaultTimeout(dbURL: str, brokers: Any) -> None:
    """
    The broker's timeout applies to every call (the call's own overrides
    it): a slow transaction is interrupted, rolled back, and fails with
    TransactionTimeout; the connection works afterwards.
    """
    broker = brokers(Ledger, dbURL, timeout=0.5)
    with pytest.raises(TransactionTimeout) as caught:
        await broker.writeThenSleep("slow", sleepSQL(dbURL, 30))
    assert "after 0.5 s" in str(caught.value)
    # (Its own timeout: on a loaded machine a write queued behind the
    # interrupted one's rollback can take longer than the broker's 0.5 s.
    # 10 s still fails if the 30 s sleep was not interrupted.)
    await broker.write("quick", timeout=10)
    with pytest.raises(TransactionTimeout) as caught:
        await broker.writeThenSleep("slower", sleepSQL(dbURL, 30), timeout=0.3)
    assert "after 0.3 s" in str(caught.value)
    await broker.writeThenSleep("fine", sleepSQL(dbURL, 0.1), timeout=20)
    assert sorted(await broker.tokens()) == ["fine", "quick"]


@pytest.mark.reactorTimeout(120)
async def test_cancelsAmidRetriesKeepTheCount(serverURL: str, brokers: Any) -> None:
    """
    200 concurrent SERIALIZABLE increments of one counter on 8 connections,
    conflicting and retried, cancelled or timed out at random moments
    (queued, at the writer gate, running, waiting to run again, COMMIT in
    flight): the counter ends at the number of increments acknowledged plus
    at most those whose outcome is unknown (OutcomeUnknown: stopped twice);
    an increment that failed with CancelledError or TransactionTimeout did
    not count, each acknowledged one saw a value of its own, and the broker
    goes on working.
    """
    rng = random.Random(1848)
    broker = brokers(Ledger, serverURL, connections=8, retries=200)
    await broker.resetCounter()
    from twisted.internet import reactor

    calls = []
    for _ in range(200):
        pause = rng.choice([0.0, 0.0, 0.001, 0.003])
        timeout = rng.choice([None, None, None, 0.02, 0.1, 0.3])
        d = broker.increment(pause=pause, timeout=timeout)
        when = rng.choice([None, None, None, 0.0, 0.005, 0.05, 0.2, 0.4])
        if when is not None:
            reactor.callLater(when, d.cancel)
        calls.append(d)
    results = await defer.DeferredList(calls, consumeErrors=True)
    seen: list[int] = []
    stopped = unknown = 0
    for ok, result in results:
        if ok:
            seen.append(result)
        elif result.check(OutcomeUnknown):
            unknown += 1
        else:
            assert result.check(defer.CancelledError, TransactionTimeout), result
            stopped += 1
    value = await broker.counterValue()
    assert len(seen) <= value <= len(seen) + unknown, (len(seen), value, unknown)
    assert len(set(seen)) == len(seen), "two increments saw the same value"
    assert max(seen, default=0) <= value
    # Both outcomes happened, and conflicts, or the test tested nothing.
    assert seen and stopped, (len(seen), stopped)
    assert retriedCount(broker) > 0, "no conflict happened"
    assert await broker.increment() == value + 1
