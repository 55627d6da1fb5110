"""
Calls leave no reference cycles of sAsync's (or AsynQueue's) making, on
PostgreSQL at the default SERIALIZABLE: a plain call through the writer
gate, one retried after a serialization conflict, one whose READ ONLY
guess is withdrawn as it starts, one that fails to its caller. Their
objects are then freed by reference counting as each call ends, not left
for the garbage collector's full collections (which stop the reactor for
tens of milliseconds: the benchmark's lag).

Each test collects first, then makes its calls with the collector off and
C{gc.DEBUG_SAVEALL} on, so that the next collection keeps everything it
found unreachable in C{gc.garbage}: none of it linked to its calls may be
ours.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import sqlalchemy as SA
from twisted.internet.defer import gatherResults
from twisted.python.failure import Failure

from sasync import AccessBroker, retry, transact
from sasync._admission import _wrote
from sasync._readguess import methodMix
from sasync.transact import TransactionCall
from tests.asynqueue.helpers import cyclicGarbage, ours
from tests.reliability.helpers import until

#: Calls per test (each kind: made at once, then one after another).
CALLS = 20


class CycleBroker(AccessBroker):
    """
    Calls of each kind: plain writes, writes whose first attempt conflicts,
    reads, and calls that fail.
    """

    #: Per name: how many attempts its call made (set by _running).
    attempted: Counter[str]
    #: Set by block() once it holds the connection; releases it.
    blocking: threading.Event
    release: threading.Event

    def startup(self) -> Any:
        return self.table(
            "things",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("name", SA.String(40)),
        )

    @transact
    def add(self, name: str) -> None:
        self.conn.execute(self.things.insert().values(name=name))

    @transact
    def addAfterConflict(self, name: str) -> None:
        # The first attempt fails as a serialization failure raised by the
        # server, through SQLAlchemy (which wraps it), after a write.
        self.attempted[name] += 1
        self.conn.execute(self.things.insert().values(name=name))
        if self.attempted[name] == 1:
            self.conn.exec_driver_sql(
                "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"
            )

    @transact
    def count(self) -> int:
        query = SA.select(SA.func.count(self.things.c.id))
        return int(self.conn.execute(query).scalar())

    @transact
    def block(self) -> None:
        # Holds the broker's one connection until released.
        self.blocking.set()
        self.release.wait(30)

    @transact
    def fails(self, name: str) -> None:
        self.conn.execute(self.things.insert().values(name=name))
        raise ValueError(f"no {name}")


async def _running(brokers: Any, url: str, **kw: Any) -> CycleBroker:
    broker: CycleBroker = brokers(CycleBroker, url, **kw)
    broker.attempted = Counter()
    broker.blocking, broker.release = threading.Event(), threading.Event()
    await broker.waitUntilRunning()
    # (Whatever the first calls make once and keep: caches.)
    await broker.add("warm")
    await broker.count()
    return broker


def _noneOurs(found: list[object], broker: CycleBroker) -> None:
    # (Only what is linked to the broker's calls: see ours.)
    def theTest(o: object) -> bool:
        if isinstance(o, TransactionCall):
            return o.broker is broker
        if isinstance(o, retry.Attempts):
            return o._description.startswith("CycleBroker.")
        if isinstance(o, BaseException):
            notes = getattr(o, "__notes__", ())
            return any(note.startswith("in transaction CycleBroker.") for note in notes)
        return False

    kinds = ours(found, theTest)
    assert not kinds, f"{dict(kinds)} ({len(found)} unreachable objects in all)"


async def test_plainCalls(postgresqlURL: str, brokers: Any) -> None:
    """
    Writes through the writer gate, made at once and one after another.
    """
    broker = await _running(brokers, postgresqlURL, connections=2)
    assert broker._calls.gate is not None
    with cyclicGarbage() as found:
        await gatherResults([broker.add(f"p{i}") for i in range(CALLS)])
        for i in range(CALLS):
            await broker.add(f"q{i}")
    _noneOurs(found, broker)


async def test_conflictRetried(postgresqlURL: str, brokers: Any) -> None:
    """
    Calls whose first attempt fails with a serialization failure, run
    again: the failure nobody sees holds nothing.
    """
    broker = await _running(brokers, postgresqlURL, connections=2)
    with cyclicGarbage() as found:
        await gatherResults([broker.addAfterConflict(f"c{i}") for i in range(CALLS)])
        for i in range(CALLS):
            await broker.addAfterConflict(f"d{i}")
    _noneOurs(found, broker)
    assert set(broker.attempted.values()) == {2}
    assert broker._handle.retries[retry.SERIALIZATION] == 2 * CALLS
    assert await broker.count() == 1 + 2 * CALLS


async def test_guessWithdrawn(postgresqlURL: str, brokers: Any) -> None:
    """
    Reads guessed READ ONLY when made (they pass the writer gate by), whose
    guess is withdrawn before they start: each fails with
    L{retry.GuessWithdrawn} and runs again through the gate.
    """
    broker = await _running(brokers, postgresqlURL, connections=1)
    f = CycleBroker.count.__sasyncTransaction__  # type: ignore[attr-defined]
    # Seen only reading: guessed READ ONLY.
    assert _wrote.get(f) is False
    blocked = broker.block()
    await until(broker.blocking.is_set)
    with cyclicGarbage() as found:
        calls = [broker.count() for _ in range(CALLS)]
        # Seen writing meanwhile, and mostly: no longer guessed.
        _wrote[f] = True
        methodMix.learned(f, 0.0)
        try:
            broker.release.set()
            await blocked
            assert await gatherResults(calls) == [1] * CALLS
        finally:
            methodMix.forget(f)
            _wrote.pop(f, None)
    _noneOurs(found, broker)
    assert broker._handle.retries[retry.GUESS_WITHDRAWN] == CALLS


async def test_failedCalls(postgresqlURL: str, brokers: Any) -> None:
    """
    Calls that fail to their caller (an error of the body, not retried):
    the caller's failure keeps its traceback, and once dropped leaves
    nothing of ours behind. (Not so for an error SQLAlchemy raises:
    C{Connection._handle_dbapi_exception}'s frame holds the exception whose
    traceback holds that frame, a cycle of SQLAlchemy's that holds the
    call's frames too; a retried attempt's is let go of, not the caller's.)
    """
    broker = await _running(brokers, postgresqlURL, connections=2)
    with cyclicGarbage() as found:
        failures: list[Failure] = []
        await gatherResults(
            [broker.fails(f"f{i}").addErrback(failures.append) for i in range(CALLS)]
        )
        for i in range(CALLS):
            await broker.fails(f"g{i}").addErrback(failures.append)
        assert [f.type for f in failures] == [ValueError] * 2 * CALLS
        # (Its traceback reaches the body.)
        assert all(f.frames[-1][0] == "fails" for f in failures)
        del failures
    _noneOurs(found, broker)
    assert await broker.count() == 1
