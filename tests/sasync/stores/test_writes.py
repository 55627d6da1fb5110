"""
Unit tests for L{sasync.stores._writes.WriteSequencer}: ordering, coalescing,
folding pending writes over reads, and ending. No database, no threads:
the fake "transaction" is a Deferred the test fires.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from sasync.errors import BrokerStopped
from sasync.stores._writes import UNKNOWN, WriteSequencer, WriteUnit


class FakeDatabase:
    """
    Records the units handed to it; each lands when the test says so.
    """

    def __init__(self) -> None:
        self.started: list[tuple[WriteUnit[str], Deferred[None]]] = []
        self.rows: dict[str, bytes] = {}

    def run(self, unit: WriteUnit[str]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.started.append((unit, d))
        return d

    def land(self, fail: Exception | None = None) -> WriteUnit[str]:
        unit, d = self.started.pop(0)
        if fail is not None:
            d.errback(Failure(fail))
        else:
            unit.foldAll(self.rows)
            d.callback(None)
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
    from twisted.internet.defer import succeed

    seq: WriteSequencer[str] = WriteSequencer(lambda unit: succeed(None))
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
