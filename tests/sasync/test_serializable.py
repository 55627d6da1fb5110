"""
Transactions behave as if run one at a time: the seed's check-then-insert
(C{setNameValue}) loses nothing under concurrency with the broker's
defaults, and the READ COMMITTED opt-out really is weaker (the race comes
back, which shows these tests can fail).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    gatherResults,
)
from twisted.python.failure import Failure

from asynqueue import currentTask
from sasync import AccessBroker, retry, transact
from tests.reliability.helpers import until

from .brokers import LogBroker


class ValueBroker(LogBroker):
    """
    The seed's broker, unchanged, with two helpers for these tests.
    """

    @transact
    def valueCounts(self) -> Counter[str]:
        rows = self.conn.execute(SA.select(self.url.c.value)).all()
        return Counter(row[0] for row in rows)

    @transact
    def isolation(self) -> str:
        if self.conn.dialect.name == "postgresql":
            sql = "SHOW transaction_isolation"
        else:
            sql = "SELECT @@tx_isolation"
        return str(self.conn.exec_driver_sql(sql).scalar()).upper().replace("-", " ")


async def race(
    broker: ValueBroker, calls: int = 400, perValue: int = 8, prefix: str = "x"
) -> list[Any]:
    """
    C{calls} concurrent calls of C{setNameValue}, C{perValue} for each
    value (named C{prefix} and a number); the failures.
    """
    results = await DeferredList(
        [broker.setNameValue("url", f"{prefix}{i // perValue}") for i in range(calls)],
        consumeErrors=True,
    )
    return [r for ok, r in results if not ok]


@pytest.mark.reactorTimeout(120)
async def test_raceLosesNothing(serverURL: str, brokers: Any) -> None:
    """
    With the defaults, 400 concurrent check-then-insert calls for 50 values
    all succeed, and each value has exactly one row; each value's calls
    agree on its ID.
    """
    broker = brokers(ValueBroker, serverURL)
    await broker.waitUntilRunning()
    assert await broker.isolation() == "SERIALIZABLE"
    failures = await race(broker)
    assert [f.value for f in failures] == []
    counts = await broker.valueCounts()
    assert counts == Counter({f"x{i}": 1 for i in range(50)})


@pytest.mark.reactorTimeout(240)
async def test_writerGateLowersRetries(postgresqlURL: str, brokers: Any) -> None:
    """
    The same race on 8 connections, with the writer gate off
    (C{writers=0}), adaptive (the default) and fixed at one writer: no call
    fails either way; without a gate the race conflicts, one writer at a
    time never does, and the adaptive gate answers its conflicts by letting
    fewer writers in (it halves its limit).

    (Whether the adaptive gate retries fewer conflicts than no gate in one
    run depends on the machine's load, so that is measured by the
    benchmark, not asserted here; how the limit moves is tested
    deterministically in C{test_writegate}.)
    """
    conflicts = {}
    lowest: list[float] = []
    for writers in (0, None, 1):
        broker = brokers(ValueBroker, postgresqlURL, connections=8, writers=writers)
        await broker.waitUntilRunning()
        gate = broker._calls.gate
        if writers is None:
            learn = gate._learn

            def watched(
                result: object, number: int, learn: Any = learn, gate: Any = gate
            ) -> None:
                learn(result, number)
                lowest.append(gate.limit)

            gate._learn = watched
        failures = await race(broker, prefix=f"w{writers}-")
        assert [f.value for f in failures] == []
        retried = broker.stats().retried
        conflicts[writers] = sum(retried.get(reason, 0) for reason in retry.CONFLICTS)
        await broker.shutdown()
    assert conflicts[0] > 0, conflicts
    assert conflicts[1] == 0, conflicts
    if conflicts[None]:
        assert min(lowest) <= 4, (conflicts, min(lowest))


@pytest.mark.reactorTimeout(120)
async def test_sameValueSameID(serverURL: str, brokers: Any) -> None:
    """
    Concurrent calls for one new value all return the one row's ID.
    """
    broker = brokers(ValueBroker, serverURL)
    IDs = await gatherResults([broker.setNameValue("url", "same") for _ in range(32)])
    assert len(set(IDs)) == 1


@pytest.mark.reactorTimeout(120)
async def test_getOrCreateStorm(serverURL: str, brokers: Any) -> None:
    """
    16 loops, each getting or creating the same 30 values one after another,
    all at once: no failure, one row per value, and the broker's
    connections are all healthy afterwards (a plain call works on each).
    """
    broker = brokers(ValueBroker, serverURL)
    await broker.waitUntilRunning()

    async def loop(n: int) -> list[int]:
        return [await broker.setNameValue("url", f"v{(i + n) % 30}") for i in range(30)]

    IDs = await gatherResults([Deferred.fromCoroutine(loop(n)) for n in range(16)])
    assert all(len(x) == 30 for x in IDs)
    counts = await broker.valueCounts()
    assert counts == Counter({f"v{i}": 1 for i in range(30)})
    await gatherResults([broker.valueCounts() for _ in range(8)])


@pytest.mark.reactorTimeout(120)
async def test_readCommittedOptOutRaces(serverURL: str, brokers: Any) -> None:
    """
    The opt-out is really READ COMMITTED: the same race then fails some
    calls with a duplicate key (so the tests above can fail).
    """
    broker = brokers(ValueBroker, serverURL, isolation_level="READ COMMITTED")
    await broker.waitUntilRunning()
    assert await broker.isolation() == "READ COMMITTED"
    failures = await race(broker)
    assert failures
    assert all(isinstance(f.value, SA.exc.IntegrityError) for f in failures)


class GuessBroker(ValueBroker):
    """
    Methods that report whether their transaction was READ ONLY.
    """

    def _readOnly(self) -> bool:
        value = self.conn.exec_driver_sql("SHOW transaction_read_only").scalar()
        return bool(value == "on")

    @transact
    def reader(self) -> bool:
        self.conn.execute(SA.select(self.url.c.id)).all()
        return self._readOnly()

    @transact
    def sometimesWriter(self, value: str | None) -> bool:
        readOnly = self._readOnly()
        if value is not None:
            self.conn.execute(self.url.insert().values(value=value))
        return readOnly


async def test_readersRunReadOnly(postgresqlURL: str, brokers: Any) -> None:
    """
    PostgreSQL: a method seen only reading runs READ ONLY from its second
    call on (out of serialization conflicts); a call that then writes runs
    again at once, read-write, while the method's next calls are still
    guessed READ ONLY as long as most of them only read (see
    L{sasync._readguess}); the guess never leaks into other work on the
    connection.
    """
    broker = brokers(GuessBroker, postgresqlURL, connections=1)
    assert await broker.reader() is False
    assert await broker.reader() is True
    assert await broker.sometimesWriter(None) is False
    assert await broker.sometimesWriter(None) is True
    # Guessed read-only, but writes: run again, read-write.
    assert await broker.sometimesWriter("w1") is False
    assert await broker.sometimesWriter(None) is True
    assert (await broker.valueCounts())["w1"] == 1
    handle = broker._handle
    assert handle.retries["a write in a transaction guessed read-only"] == 1
    # After a READ ONLY transaction, the next job on the one connection
    # (a table made now, a new writer) is read-write.
    assert await broker.reader() is True
    await broker.table("late", SA.Column("id", SA.Integer, primary_key=True))
    assert await broker.setNameValue("url", "w2")


class GateWatchingBroker(GuessBroker):
    """
    A method that reads or writes, and notes each of its calls that ran
    read-write without being let in by the writer gate.
    """

    ungated: list[str | None]

    @transact
    def mixed(self, value: str | None) -> None:
        if not self._readOnly():
            # Worker thread: the gate's entry for this call's task (a dict
            # read; the entry stays "running" until the task's Deferred
            # fires, after this body has returned).
            gate = self._calls.gate
            entry = gate._entries.get(currentTask())
            if entry is None or entry.state != "running":
                self.ungated.append(value)
        if value is not None:
            self.conn.execute(self.url.insert().values(value=value))


@pytest.mark.reactorTimeout(120)
async def test_guessedCallsThatWritePassTheGate(
    postgresqlURL: str, brokers: Any
) -> None:
    """
    PostgreSQL: calls made at once of a method seen only reading pass the
    writer gate by, guessed READ ONLY; once one of them writes, the rest
    run read-write only after the gate has let them in (a withdrawn guess),
    never beside the writers it let in. (They used to run read-write as
    they started, with the gate bypassed: serialization conflicts it is
    there to prevent.)
    """
    broker = brokers(GateWatchingBroker, postgresqlURL, connections=2, writers=1)
    broker.ungated = []
    await broker.mixed(None)
    await broker.mixed(None)
    values = [f"g{i}" if i % 2 == 0 else None for i in range(16)]
    await gatherResults([broker.mixed(value) for value in values])
    assert broker.ungated == []
    counts = await broker.valueCounts()
    assert {v: counts[v] for v in values if v} == {v: 1 for v in values if v}
    retried = broker.stats().retried
    assert retried.get("a read-only guess withdrawn before the transaction began")


async def test_readOnlyGuessSetOnce(
    postgresqlURL: str, brokers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    PostgreSQL: a run of transactions guessed READ ONLY sets the
    connection's mode once, when the run starts, not twice per transaction
    (back to read-write, then read-only again); they still run READ ONLY,
    and the next writer read-write.
    """
    from sasync.connection._workers import ConnectionWorker

    modes: list[bool | None] = []
    setMode = ConnectionWorker._setReadOnly

    def counted(worker: ConnectionWorker, value: bool | None) -> None:
        modes.append(value)
        setMode(worker, value)

    monkeypatch.setattr(ConnectionWorker, "_setReadOnly", counted)
    broker = brokers(ModeBroker, postgresqlURL, connections=1)
    assert await broker.justReads() is False
    del modes[:]
    for _ in range(5):
        assert await broker.justReads() is True
    assert modes == [True]
    assert await broker.justWrites("m") is False
    assert modes == [True, None]


async def test_readOnlyCommitsWithoutLookup(
    postgresqlURL: str, brokers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    PostgreSQL, calls with C{retries}: a transaction that runs READ ONLY
    (declared, or guessed) commits without first asking the server for its
    transaction ID (a round trip per read: it has none, so a lost COMMIT
    needs no lookup); one that writes still asks.
    """
    from sasync.connection import _outcome as outcome

    asked: list[bool] = []
    transactionID = outcome.transactionID

    def counted(connection: Any, pooled: bool = False) -> Any:
        asked.append(True)
        return transactionID(connection, pooled)

    monkeypatch.setattr(outcome, "transactionID", counted)
    broker = brokers(LookupBroker, postgresqlURL, connections=1)
    assert await broker.onlyReads(retries=2) is False
    assert len(asked) == 1  # (Not known yet to only read.)
    for _ in range(3):
        assert await broker.onlyReads(retries=2) is True
    assert await broker.onlyReads(retries=2, readOnly=True) is True
    assert len(asked) == 1
    assert await broker.onlyWrites("lookup", retries=2) is False
    assert len(asked) == 2


class LookupBroker(GuessBroker):
    """
    A reader and a writer no other test teaches sAsync about.
    """

    @transact
    def onlyReads(self) -> bool:
        self.conn.execute(SA.select(self.url.c.id)).all()
        return self._readOnly()

    @transact
    def onlyWrites(self, value: str) -> bool:
        self.conn.execute(self.url.insert().values(value=value))
        return self._readOnly()


class ModeBroker(GuessBroker):
    """
    A reader and a writer that no other test teaches sAsync about (what it
    learns of a method lasts for the process).
    """

    @transact
    def justReads(self) -> bool:
        self.conn.execute(SA.select(self.url.c.id)).all()
        return self._readOnly()

    @transact
    def justWrites(self, value: str) -> bool:
        self.conn.execute(self.url.insert().values(value=value))
        return self._readOnly()


class RawCursorBroker(GuessBroker):
    """
    A method that writes, when it writes, through the raw DB-API cursor,
    which SQLAlchemy neither sees write nor wraps the errors of.
    """

    def _rawWrite(self, value: str | None) -> bool:
        readOnly = self._readOnly()
        if value is not None:
            cursor = self.conn.connection.dbapi_connection.cursor()
            try:
                cursor.execute("INSERT INTO url (value) VALUES (%s)", (value,))
            finally:
                cursor.close()
        return readOnly

    @transact
    def rawWriter(self, value: str | None) -> bool:
        return self._rawWrite(value)


async def test_rawCursorWriteGuessedReadOnly(postgresqlURL: str, brokers: Any) -> None:
    """
    PostgreSQL: a method guessed READ ONLY that then writes through the raw
    DB-API cursor (the driver's own error, not SQLAlchemy's) runs again at
    once, read-write, as one writing through SQLAlchemy does.
    """
    broker = brokers(RawCursorBroker, postgresqlURL, connections=1)
    assert await broker.rawWriter(None) is False
    assert await broker.rawWriter(None) is True
    assert await broker.rawWriter("raw1") is False
    assert (await broker.valueCounts())["raw1"] == 1
    handle = broker._handle
    assert handle.retries["a write in a transaction guessed read-only"] == 1


class UnseenWriterBroker(RawCursorBroker):
    """
    L{RawCursorBroker}'s method again, as a method of its own: what a
    method did is learned for every broker (the other test's calls would
    count).
    """

    @transact
    def unseenWriter(self, value: str | None) -> bool:
        return self._rawWrite(value)


async def test_rawCursorWriterNotGuessedAgain(postgresqlURL: str, brokers: Any) -> None:
    """
    PostgreSQL: once a guessed call of a method was refused a write that
    SQLAlchemy did not see (the raw DB-API cursor's), the method's calls
    are not guessed READ ONLY again: its unseen writes would keep making
    it look like a reader, and a third or more of its calls would each pay
    a failed attempt.
    """
    broker = brokers(UnseenWriterBroker, postgresqlURL, connections=1)
    assert await broker.unseenWriter(None) is False
    # Guessed READ ONLY, refused the write, run again read-write.
    assert await broker.unseenWriter("raw1") is False
    for n in range(6):
        assert await broker.unseenWriter(f"raw{n + 2}") is False
        assert await broker.unseenWriter(None) is False
    assert (await broker.valueCounts())["raw7"] == 1
    handle = broker._handle
    assert handle.retries["a write in a transaction guessed read-only"] == 1


class SwallowingBroker(GuessBroker):
    """
    A method that catches the error of its write and returns.
    """

    @transact
    def swallowing(self, value: str | None) -> bool:
        readOnly = self._readOnly()
        if value is not None:
            with contextlib.suppress(SA.exc.DBAPIError):
                self.conn.execute(self.url.insert().values(value=value))
        return readOnly


async def test_swallowedWriteRunsAgain(postgresqlURL: str, brokers: Any) -> None:
    """
    PostgreSQL: a call guessed READ ONLY whose body catches the refusal of
    its write and returns runs again read-write (COMMIT would have rolled
    back in silence), and its write is there.
    """
    broker = brokers(SwallowingBroker, postgresqlURL, connections=1)
    assert await broker.swallowing(None) is False
    assert await broker.swallowing(None) is True
    assert await broker.swallowing("swallowed") is False
    assert (await broker.valueCounts())["swallowed"] == 1
    handle = broker._handle
    assert handle.retries["a write in a transaction guessed read-only"] == 1


class RawConflictBroker(AccessBroker):
    """
    A transaction whose first attempt fails, through the raw DB-API cursor,
    with a serialization failure raised by the database.
    """

    attempts = 0

    @transact
    def conflictOnce(self) -> int:
        type(self).attempts += 1
        cursor = self.conn.connection.dbapi_connection.cursor()
        try:
            if self.attempts == 1:
                cursor.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'conflict'"
                    " USING ERRCODE = '40001'; END $$"
                )
            cursor.execute("SELECT 1")
            return int(cursor.fetchone()[0])
        finally:
            cursor.close()


async def test_rawCursorConflictRetried(postgresqlURL: str, brokers: Any) -> None:
    """
    PostgreSQL: a serialization failure on the raw DB-API cursor (the
    driver's own exception) is retried as one through SQLAlchemy is.
    """
    broker = brokers(RawConflictBroker, postgresqlURL)
    assert await broker.conflictOnce() == 1
    assert RawConflictBroker.attempts == 2
    assert broker._handle.retries["serialization failure"] == 1


async def test_noGuessWithoutRetries(postgresqlURL: str, brokers: Any) -> None:
    """
    With retries=0 (nothing may run twice) and with READ COMMITTED (nothing
    to gain) nothing is guessed read-only.
    """
    for kw in ({"retries": 0}, {"isolation_level": "READ COMMITTED"}):
        broker = brokers(GuessBroker, postgresqlURL, **kw)
        for _ in range(3):
            assert await broker.reader() is False


class _Conflict(Exception):
    """
    A driver error that says "serialization failure" (SQLSTATE 40001).
    """

    pgcode = "40001"


class AlwaysConflicts(AccessBroker):
    """
    A transaction that always fails as a serialization failure would.
    """

    @transact
    def collide(self) -> None:
        raise SA.exc.OperationalError("SELECT 1", {}, _Conflict("could not serialize"))


async def test_shutdownCancelsConflictRetries(postgresqlURL: str, brokers: Any) -> None:
    """
    A call that keeps conflicting is retried by default, and shutdown(timeout=)
    still cancels it once the timeout runs out (its retries are not waited
    out).
    """
    broker = brokers(AlwaysConflicts, postgresqlURL)
    await broker.waitUntilRunning()
    failures: list[Failure] = []
    broker.collide().addErrback(failures.append)
    # Retried at least once (the retry counter says so), then shut down.
    await until(lambda: broker._handle.retries["serialization failure"] >= 1)
    await broker.shutdown(timeout=0.5)
    # Cancelled: a call whose retries were waited out would have failed
    # with the conflict itself (no wall-clock bound needed).
    assert [f.check(CancelledError) for f in failures] == [CancelledError]
