"""
Unit tests for L{sasync._writes.WriteSequencer}: ordering, coalescing,
folding pending writes over reads, and ending. No database, no threads:
the fake "transaction" is a Deferred the test fires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy.exc import DataError, OperationalError
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from sasync._landing import Lander
from sasync._writes import UNKNOWN, WriteSequencer, WriteUnit
from sasync.errors import BrokerStopped
from sasync.retry import LOST, NO_CONNECTION, Backoff, markRetryable


class FakeDatabase:
    """
    Records the units handed to it; each lands when the test says so.
    """

    def __init__(self) -> None:
        self.started: list[tuple[WriteUnit[str], Deferred[dict[str, Failure]]]] = []
        self.rows: dict[str, bytes] = {}

    def run(self, unit: WriteUnit[str]) -> Deferred[dict[str, Failure]]:
        d: Deferred[dict[str, Failure]] = Deferred()
        self.started.append((unit, d))
        return d

    def land(
        self, fail: Exception | None = None, lose: dict[str, Exception] | None = None
    ) -> WriteUnit[str]:
        """
        Land the oldest unit started: it fails as a whole (C{fail}), or
        stores all its keys but those of C{lose}.
        """
        unit, d = self.started.pop(0)
        if fail is not None:
            d.errback(Failure(fail))
            return unit
        lost = {key: Failure(e) for key, e in (lose or {}).items()}
        if unit.clearFirst:
            self.rows.clear()
        for key, data in unit.entries.items():
            if key in lost:
                continue
            if data is None:
                self.rows.pop(key, None)
            elif not (unit.insert and key in self.rows):
                self.rows[key] = data
        d.callback(lost)
        return unit


def results(*ds: Deferred[None]) -> list[object]:
    out: list[object] = []
    for d in ds:
        d.addBoth(out.append)
    return out


def test_oneUnitAtATime() -> None:
    """
    Writes start at once when idle; later ones wait for the running unit
    and coalesce, the last value for a key winning.
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    first = seq.put([("k", b"0")])
    assert len(db.started) == 1
    later = [seq.put([("k", str(i).encode())]) for i in range(1, 50)]
    other = seq.put([("j", b"x")])
    assert len(db.started) == 1
    done = results(first, *later, other)
    assert done == []
    db.land()
    assert done == [None]
    assert len(db.started) == 1
    unit = db.land()
    assert unit.entries == {"k": b"49", "j": b"x"}
    assert done == [None] * 51
    assert db.rows == {"k": b"49", "j": b"x"}
    assert seq.pendingCount() == 0


def test_insertIsItsOwnUnit() -> None:
    """
    An insert gets a unit of its own; its failure reaches only its caller,
    and the writes after it still run, in order.
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    a = seq.put([("a", b"1")])
    ins = seq.insert("a", b"2")
    b = seq.put([("b", b"3")])
    out = results(a, ins, b)
    db.land()
    db.land(fail=KeyError("a"))
    db.land()
    assert out[0] is None
    assert isinstance(out[1], Failure) and out[1].check(KeyError)
    assert out[2] is None
    assert db.rows == {"a": b"1", "b": b"3"}


def test_clearDropsEarlierEntries() -> None:
    """
    C{clear} empties the unit it joins and marks it to clear the group.
    """
    db = FakeDatabase()
    db.rows = {"old": b"o"}
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    seq.put([("a", b"1")])
    seq.put([("b", b"2")])
    seq.clear()
    seq.put([("c", b"3")])
    db.land()
    unit = db.land()
    assert unit.clearFirst
    assert unit.entries == {"c": b"3"}
    assert db.rows == {"c": b"3"}


def test_foldKey() -> None:
    """
    Pending writes decide a key's value without the database where they
    can; an insert over an unknown value cannot.
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(db.run)

    def peek(key: str) -> object:
        capture = seq.capture()
        try:
            return seq.foldKey(capture, key)
        finally:
            seq.release(capture)

    assert peek("k") is UNKNOWN
    seq.put([("k", b"1")])
    assert peek("k") == b"1"
    seq.put([("k", None)])
    assert peek("k") is None
    db.land()
    db.land()
    seq.insert("n", b"new")
    capture = seq.capture()
    assert seq.foldKey(capture, "n") is UNKNOWN
    assert seq.foldKey(capture, "n", None) == b"new"
    assert seq.foldKey(capture, "n", b"old") == b"old"
    seq.release(capture)


def test_foldAllSeesUnitsThatLandDuringTheRead() -> None:
    """
    A read captured before a unit landed still folds that unit, whether or
    not the read saw it: folding is idempotent. A bounded capture ignores
    later writes; an unbounded one folds them too.
    """
    db = FakeDatabase()
    db.rows = {"a": b"1", "b": b"2"}
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    seq.put([("a", None)])
    bounded = seq.capture()
    unbounded = seq.capture(bounded=False)
    db.land()
    seq.put([("c", b"3")])
    readBefore = {"a": b"1", "b": b"2"}
    readAfter = dict(db.rows)
    assert seq.foldAll(bounded, dict(readBefore)) == {"b": b"2"}
    assert seq.foldAll(bounded, dict(readAfter)) == {"b": b"2"}
    assert seq.foldAll(unbounded, dict(readBefore)) == {"b": b"2", "c": b"3"}
    assert seq.foldAll(unbounded, dict(readAfter)) == {"b": b"2", "c": b"3"}
    seq.release(bounded)
    seq.release(unbounded)
    db.land()
    assert seq._log == []


def test_captureSeals() -> None:
    """
    A write issued after a bounded read does not join a unit that the read
    folds, so the read does not see it.
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    seq.put([("x", b"0")])
    seq.put([("k", b"1")])
    read = seq.capture()
    seq.put([("k", b"2")])
    assert seq.foldKey(read, "k") == b"1"
    later = seq.capture()
    assert seq.foldKey(later, "k") == b"2"
    seq.release(read)
    seq.release(later)
    db.land()
    db.land()
    db.land()
    assert db.rows == {"x": b"0", "k": b"2"}


def test_failedUnitsAreNotFolded() -> None:
    """
    A write whose transaction failed never happened, for reads too.
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    d = seq.put([("k", b"1")])
    capture = seq.capture()
    out = results(d)
    db.land(fail=RuntimeError("boom"))
    assert isinstance(out[0], Failure)
    assert seq.foldKey(capture, "k") is UNKNOWN
    seq.release(capture)


def test_writesWaitForEarlierReads() -> None:
    """
    A unit does not start while a bounded read issued before it runs;
    units issued before the read, and unbounded reads, hold nothing back.
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    seq.put([("a", b"1")])
    queued = seq.put([("b", b"2")])
    read = seq.capture()
    cache = seq.capture(bounded=False)
    seq.put([("c", b"3")])
    db.land()
    assert len(db.started) == 1
    db.land()
    assert results(queued) == [None]
    assert db.started == []
    seq.release(read)
    assert len(db.started) == 1
    seq.release(cache)
    db.land()
    assert db.rows == {"a": b"1", "b": b"2", "c": b"3"}


def test_synchronousLandingDoesNotRecurse() -> None:
    """
    Units whose transactions finish at once run one after another in a
    loop, not by recursion.
    """
    seq: WriteSequencer[str] = WriteSequencer(lambda unit: succeed({}))
    ds = []
    for i in range(3000):
        ds.append(seq.insert(str(i), b"x"))
    out = results(*ds)
    assert out == [None] * 3000


def test_deferToAllAndClose() -> None:
    """
    C{deferToAll} fires once every write so far has landed, failed or
    not; C{close} refuses further writes.
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    assert results(seq.deferToAll()) == [None]
    d = seq.put([("a", b"1")])
    d.addErrback(lambda f: None)
    seq.insert("b", b"2").addErrback(lambda f: None)
    closed = results(seq.close())
    with pytest.raises(BrokerStopped):
        seq.put([("c", b"3")])
    db.land(fail=RuntimeError("boom"))
    assert closed == []
    db.land()
    assert closed == [None]
    assert seq.closed


# --- The ledger of lost writes -------------------------------------------------


def test_partlyLostUnitFailsOnlyItsKeys() -> None:
    """
    A unit that lands with some keys not stored fails the callers of those
    keys only; the others' writes succeed, and reads fold only what was
    stored.
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    seq.put([("x", b"0")])
    a = seq.put([("a", b"1")])
    b = seq.put([("b", b"2")])
    read = seq.capture(bounded=False)
    out = results(a, b)
    db.land()
    db.land(lose={"a": ValueError("too big")})
    assert isinstance(out[0], Failure) and out[0].check(ValueError)
    assert out[1] is None
    assert seq.foldKey(read, "a") is UNKNOWN
    assert seq.foldKey(read, "b") == b"2"
    seq.release(read)
    lost, clearLost = seq.lostWrites()
    assert list(lost) == ["a"] and clearLost is None


def test_lostWritesStayUntilSettled() -> None:
    """
    A lost write stays in the ledger (however often it is read) until a
    later write of its key is stored; a lost write of a key written again
    keeps the newest reason; a stored C{clear} settles every loss before
    it, a lost one is recorded itself.
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(db.run)
    for d in (seq.put([("a", b"1"), ("b", b"1")]), seq.put([("c", b"1")])):
        d.addErrback(lambda f: None)
    db.land(fail=RuntimeError("first"))
    assert list(seq.lostWrites()[0]) == ["a", "b"]
    assert list(seq.lostWrites()[0]) == ["a", "b"]
    seq.put([("a", b"2")]).addErrback(lambda f: None)
    db.land(lose={"c": RuntimeError("second")})
    db.land()
    lost, _ = seq.lostWrites()
    assert list(lost) == ["b", "c"]
    seq.put([("b", None)])
    db.land()
    assert list(seq.lostWrites()[0]) == ["c"]
    seq.clear().addErrback(lambda f: None)
    db.land(fail=RuntimeError("no clear"))
    lost, clearLost = seq.lostWrites()
    assert list(lost) == ["c"]
    assert clearLost is not None and clearLost.check(RuntimeError)
    seq.clear()
    db.land()
    assert seq.lostWrites() == ({}, None)


def test_refusedInsertIsNoLostWrite() -> None:
    """
    An insert refused because its key exists tells its caller and is not a
    lost write; an insert that failed otherwise is one; and a stored insert
    does not settle an earlier lost write of its key (that write's value
    is still not stored).
    """
    db = FakeDatabase()
    seq: WriteSequencer[str] = WriteSequencer(
        db.run, refused=lambda f: f.check(KeyError) is not None
    )
    out = results(seq.insert("a", b"1"))
    db.land(fail=KeyError("a exists"))
    assert isinstance(out[0], Failure)
    assert seq.lostWrites() == ({}, None)
    seq.insert("b", b"1").addErrback(lambda f: None)
    db.land(fail=RuntimeError("gone"))
    assert list(seq.lostWrites()[0]) == ["b"]
    seq.insert("b", b"2")
    db.land()
    assert list(seq.lostWrites()[0]) == ["b"]


# --- Lander: retrying lost connections, splitting refused batches ------------


def connectionError(reason: str | None) -> OperationalError:
    """
    A driver error on a connection SQLAlchemy invalidated, marked as sAsync
    marks it (C{None}: lost during COMMIT, not marked).
    """
    e = OperationalError(
        "INSERT ...", {}, Exception("gone"), connection_invalidated=True
    )
    if reason is not None:
        markRetryable(e, reason)
    return e


class ScriptedWrites:
    """
    The transactions of a Lander: each fails with what C{fails} says for
    its entries (or succeeds), and is recorded.
    """

    def __init__(self, fails: Callable[[list[str], int], Exception | None]) -> None:
        self.fails = fails
        self.calls: list[tuple[bool, list[str], bool]] = []
        self.rows: dict[str, bytes | None] = {}

    def write(
        self,
        clearFirst: bool,
        entries: Sequence[tuple[str, bytes | None]],
        insert: bool,
    ) -> Deferred[None]:
        keys = [k for k, _ in entries]
        self.calls.append((clearFirst, keys, insert))
        error = self.fails(keys, len(self.calls))
        if error is not None:
            return fail(error)
        if clearFirst:
            self.rows.clear()
        self.rows.update(entries)
        return succeed(None)


def lander(writes: ScriptedWrites, clock: Clock, retryTime: float = 30) -> Lander[str]:
    return Lander(
        writes.write,
        backoff=Backoff(random=lambda: 0.0),
        retryTime=retryTime,
        clock=lambda: clock,
        isMySQL=lambda: True,
    )


def batch(*keys: str, clearFirst: bool = False, insert: bool = False) -> WriteUnit[str]:
    unit: WriteUnit[str] = WriteUnit(0, insert)
    unit.clearFirst = clearFirst
    for key in keys:
        unit.entries[key] = key.encode()
    return unit


def settle(d: Deferred[Any], clock: Clock) -> Any:
    """
    Advance C{clock} until C{d} has fired; its result.
    """
    for _ in range(1000):
        if d.called:
            break
        clock.advance(0.5)
    out = results(d)
    assert out, "never fired"
    return out[0]


def test_landerRetriesLostConnections() -> None:
    """
    A transaction that could not connect, or lost its connection, runs
    again after the backoff's wait, until it is stored; nothing is lost.
    """
    clock = Clock()
    failures = [connectionError(LOST), *[connectionError(NO_CONNECTION)] * 5]
    writes = ScriptedWrites(lambda keys, n: failures.pop(0) if failures else None)
    land = lander(writes, clock)
    d = land.land(batch("a", "b"))
    assert not d.called
    assert settle(d, clock) == {}
    assert writes.rows == {"a": b"a", "b": b"b"}
    assert land.retried == 6


def test_landerGivesUpAfterRetryTime() -> None:
    """
    While connections fail, the store retries for C{retryTime} seconds
    from its first failure, then reports every key of the unit lost with
    the driver's error (and a note saying why); the next unit, still
    failing, gives up at its first attempt.
    """
    clock = Clock()
    writes = ScriptedWrites(lambda keys, n: connectionError(NO_CONNECTION))
    land = lander(writes, clock, retryTime=5)
    lost = settle(land.land(batch("a", "b")), clock)
    assert sorted(lost) == ["a", "b"]
    error = lost["a"].value
    assert isinstance(error, OperationalError)
    assert "gave up after" in " ".join(error.__notes__)
    assert 5 <= clock.seconds() < 8
    calls = len(writes.calls)
    assert sorted(settle(land.land(batch("c")), clock)) == ["c"]
    assert len(writes.calls) == calls + 1


def test_landerSplitsARefusedBatch() -> None:
    """
    A batch the database refuses (not a connection error) is split in
    halves until only the refused keys are left: those are lost with the
    database's error, every other key is stored, in a number of
    transactions logarithmic in the batch's size.
    """
    clock = Clock()
    refused = {"k13", "k40"}

    def fails(keys: list[str], n: int) -> Exception | None:
        if refused & set(keys):
            return DataError("INSERT ...", {}, Exception("value too long"))
        return None

    writes = ScriptedWrites(fails)
    land = lander(writes, clock)
    keys = [f"k{i}" for i in range(64)]
    lost = settle(land.land(batch(*keys)), clock)
    assert set(lost) == refused
    assert lost["k13"].check(DataError)
    assert set(writes.rows) == set(keys) - refused
    assert len(writes.calls) <= 1 + 2 * 2 * 6
    assert land.retried == 0


def test_landerSplitsABatchThatKeepsLosingItsConnection() -> None:
    """
    A batch that loses its connection every time it is sent while new
    connections open fine (MySQL/MariaDB and a value over
    max_allowed_packet) is split, with a clear first or not; the key that
    does it is given up after a few tries alone, with a note naming
    max_allowed_packet; its neighbour is stored. An insert that does it
    fails the same way.
    """
    clock = Clock()
    writes = ScriptedWrites(
        lambda keys, n: connectionError(LOST) if "big" in keys else None
    )
    land = lander(writes, clock)
    lost = settle(land.land(batch("big", "after")), clock)
    assert list(lost) == ["big"]
    assert "max_allowed_packet" in " ".join(lost["big"].value.__notes__)
    assert writes.rows == {"after": b"after"}
    assert [keys for _, keys, _ in writes.calls].count(["big"]) == 3
    writes.rows = {"old": b"old"}
    unit = batch("big", "after", clearFirst=True)
    lost = settle(land.land(unit), clock)
    assert list(lost) == ["big"]
    assert writes.rows == {"after": b"after"}
    failed = settle(land.land(batch("big", insert=True)), clock)
    assert isinstance(failed, Failure)
    assert "max_allowed_packet" in " ".join(failed.value.__notes__)


def test_landerClearFailsTheWholeUnit() -> None:
    """
    A clear unit the database refuses runs its clear alone first: if that
    fails, the unit fails as a whole; if not, the entries are landed (and
    split) after it.
    """
    clock = Clock()
    writes = ScriptedWrites(
        lambda keys, n: DataError("DELETE", {}, Exception("no")) if n <= 2 else None
    )
    out = results(lander(writes, clock).land(batch("a", clearFirst=True)))
    assert isinstance(out[0], Failure) and out[0].check(DataError)
    assert [c for c, _, _ in writes.calls] == [True, True]
    writes = ScriptedWrites(
        lambda keys, n: DataError("I", {}, Exception("no")) if "bad" in keys else None
    )
    writes.rows = {"old": b"old"}
    lost = settle(lander(writes, clock).land(batch("a", "bad", clearFirst=True)), clock)
    assert list(lost) == ["bad"]
    assert writes.rows == {"a": b"a"}


def test_landerUnknownCommitOutcome() -> None:
    """
    A connection lost while COMMIT was in flight (outcome unknown): a
    batch runs again (setting values twice is setting them once); an
    insert does not (its error reaches the caller); an error that is not
    the database's is neither retried nor split.
    """
    clock = Clock()
    lostCommit = [connectionError(None)]
    writes = ScriptedWrites(lambda keys, n: lostCommit.pop() if lostCommit else None)
    assert settle(lander(writes, clock).land(batch("a")), clock) == {}
    assert len(writes.calls) == 2
    lostCommit = [connectionError(None)]
    out = results(lander(writes, clock).land(batch("i", insert=True)))
    assert isinstance(out[0], Failure) and out[0].check(OperationalError)
    writes = ScriptedWrites(lambda keys, n: RuntimeError("disk on fire"))
    lost = settle(lander(writes, clock).land(batch("a", "b")), clock)
    assert sorted(lost) == ["a", "b"] and len(writes.calls) == 1
