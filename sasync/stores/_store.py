"""
L{Store}: the base of the persistent stores, a L{StoreBroker} for one
group with a L{WriteSequencer} in front of its writes and a L{Lander}
landing them.

The rule: a write the store accepted is either stored or reported, by
L{Store.deferToWrites} and L{Store.shutdown} failing with L{WritesLost}
naming its key (and by the write's own Deferred, where it has one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic

from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..connection import checkReactorThread
from ..errors import WritesLost
from ._keys import sortedKeys
from ._landing import WRITE_RETRY_TIME, Lander, checkRetryTime
from ._storage import (
    READ_NICENESS,
    WRITE_NICENESS,
    StoreBroker,
    StoreID,
    loadValue,
    loadValues,
)
from ._writes import UNKNOWN, Capture, K, WriteSequencer, WriteUnit, _Unknown

#: Reads of at most this many bytes of pickled values are unpickled at once
#: in the reactor thread (a few milliseconds at most); bigger ones in a
#: worker thread.
UNPICKLE_INLINE_BYTES = 256 * 1024


class Store(Generic[K]):
    """
    A persistent store: a L{StoreBroker} for one group with a
    L{WriteSequencer} in front of its writes.

    Reactor thread only, like every Deferred here: the public methods raise
    L{sasync.errors.WrongThread} in any other thread.

    @cvar readNiceness: the niceness of reads.
    @cvar publicName: how errors name the store (C{None}: by its class).
    @cvar writeNiceness: the niceness of writes (higher: they yield to
        reads).
    """

    readNiceness: int = READ_NICENESS
    writeNiceness: int = WRITE_NICENESS
    publicName: str | None = None

    _log = Logger()

    #: The broker (and so the table) the store uses.
    brokerClass: type[StoreBroker[Any]]

    def __init__(
        self,
        ID: StoreID,
        url: str | None = None,
        *,
        writeRetryTime: float = WRITE_RETRY_TIME,
        **kw: Any,
    ) -> None:
        """
        @param ID: the store's group: a str, an int, or any other key of
            L{sasync.stores._keys} (C{1} and C{"1"} are two groups; C{1},
            C{1.0} and C{True} are one).
        @param url: an SQLAlchemy URL; without one, the global engine of
            L{sasync.setup}. Stores and brokers with the same URL and
            keywords share one engine and queue.
        @param writeRetryTime: for how many seconds of failed attempts
            (the database down, restarting, failing over) a write that
            failed for want of a connection is tried again before it is
            reported lost.
        @param kw: engine keywords, as for L{AccessBroker
            <sasync.broker.AccessBroker>}.
        @raise TypeError: C{ID} is unhashable or has no stable stored form;
            or C{nameType=}, the original sAsync's keyword, was given.
        @raise ValueError: C{ID} holds a NaN, or a bad C{writeRetryTime}.
        """
        if "nameType" in kw:
            raise TypeError(
                "nameType= (the original sAsync's) is gone: names come back as"
                " the type they were written with; convert names an upgraded"
                " table of the original holds (text) yourself"
            )
        checkRetryTime(writeRetryTime)  # (Before the broker takes resources.)
        self.ID = ID
        broker: StoreBroker[K] = self.brokerClass(ID, url, **kw)
        self._broker = broker
        self._lander: Lander[K] = Lander(
            self._write,
            backoff=broker._spec.backoff,
            retryTime=writeRetryTime,
            clock=broker._getReactor,
            isMySQL=lambda: broker._spec.url.get_backend_name() in ("mysql", "mariadb"),
        )
        self._seq: WriteSequencer[K] = WriteSequencer(
            self._runUnit, refused=lambda f: isinstance(f.value, IntegrityError)
        )
        broker.drain = self._seq.close

    def _checkThread(self, method: str) -> None:
        # Deferreds live in the reactor thread: refused from any other
        # thread before any state of the store changes.
        checkReactorThread(
            self._broker._getReactor(),
            lambda: f"{self.publicName or type(self).__name__}.{method}",
        )

    def _write(
        self, clearFirst: bool, entries: Sequence[tuple[K, bytes | None]], insert: bool
    ) -> Deferred[None]:
        # One transaction of the Lander.
        upserts = [(k, v) for k, v in entries if v is not None]
        deletes = [k for k, v in entries if v is None]
        d: Deferred[None] = self._broker.writeUnit(
            clearFirst, upserts, deletes, insert, niceness=self.writeNiceness
        )
        return d

    def _runUnit(self, unit: WriteUnit[K]) -> Deferred[dict[K, Failure]]:
        d = self._lander.land(unit)
        d.addCallback(self._logLost, unit)
        d.addErrback(self._logFailed, unit)
        return d

    def _logLost(self, lost: dict[K, Failure], unit: WriteUnit[K]) -> dict[K, Failure]:
        if lost:
            self._log.failure(
                "{count} of {total} writes of {store!r} were not stored: {keys}",
                failure=next(iter(lost.values())),
                count=len(lost),
                total=len(unit.entries),
                store=self,
                keys=_someKeys(lost),
            )
        return lost

    def _logFailed(self, failure: Failure, unit: WriteUnit[K]) -> Failure:
        if unit.insert and isinstance(failure.value, IntegrityError):
            return failure  # (The key exists: the insert's caller is told.)
        kind = "a clear()" if unit.clearFirst else "an insert" if unit.insert else ""
        self._log.failure(
            "No write of {kind} of {store!r} was stored: {keys}",
            failure=failure,
            kind=kind or "a batch",
            store=self,
            keys=_someKeys(unit.entries),
        )
        return failure

    def _lostWrites(self) -> WritesLost | None:
        """
        @return: the error naming every accepted write not stored (and not
            since settled by a later write of its key), or C{None}.
        """
        lost, clearLost = self._seq.lostWrites()
        if not lost and clearLost is None:
            return None
        errors = {key: _exception(failure) for key, failure in lost.items()}
        cleared = None if clearLost is None else _exception(clearLost)
        error = WritesLost(repr(self), errors, cleared)
        error.__cause__ = cleared or next(iter(errors.values()))
        return error

    def _reportLost(self, _: None) -> Failure | None:
        error = self._lostWrites()
        if error is not None:
            return Failure(error)  # type: ignore[no-untyped-call]
        return None

    def _released(self, result: object, capture: Capture) -> object:
        self._seq.release(capture)
        return result

    def _readOne(self, key: K) -> Deferred[bytes | None]:
        """
        @return: the pickled value of C{key} (C{None}: absent), with every
            write issued so far applied.
        """
        capture = self._seq.capture()
        known = self._seq.foldKey(capture, key)
        if known is not UNKNOWN:
            self._seq.release(capture)
            assert not isinstance(known, _Unknown)
            return succeed(known)
        d = self._broker.readOne(key, niceness=self.readNiceness)

        def got(data: bytes | None) -> bytes | None:
            state = self._seq.foldKey(capture, key, data)
            assert not isinstance(state, _Unknown)
            return state

        d.addCallback(got)
        d.addBoth(self._released, capture)
        return d

    def _loadAll(self, bounded: bool = True) -> Deferred[dict[K, Any]]:
        """
        @param bounded: C{False}: apply the writes issued while the read
            runs as well (for a cache that must miss none).
        @return: key -> value for the whole group, in key order, with every
            write issued so far applied. When the values read add up to
            more than L{UNPICKLE_INLINE_BYTES}, they are unpickled in a
            worker thread, so that a big read does not hold the reactor.
        """
        self._checkThread("loadAll")
        capture = self._seq.capture(bounded)
        read = self._broker.readAll(niceness=self.readNiceness)

        def unpickled(rows: list[tuple[K, bytes]]) -> Any:
            if sum(len(data) for _, data in rows) <= UNPICKLE_INLINE_BYTES:
                return rows, loadValues(rows)
            d = self._broker.deferToQueue(loadValues, rows, niceness=self.readNiceness)
            return d.addCallback(lambda values: (rows, values))

        def folded(read: tuple[list[tuple[K, bytes]], dict[K, Any]]) -> dict[K, Any]:
            # Folded last, so that writes issued while the values were
            # unpickled count too; a value a write replaced is its own.
            rows, values = read
            stored = dict(rows)
            state = self._seq.foldAll(capture, dict(stored))
            return {
                key: values[key]
                if state[key] is stored.get(key)
                else loadValue(state[key])
                for key in sortedKeys(state)
            }

        d = read.addCallback(unpickled).addCallback(folded)
        d.addBoth(self._released, capture)
        return d

    def _readKeys(self) -> Deferred[list[K]]:
        """
        @return: the group's keys, with every write issued so far applied.
        """
        capture = self._seq.capture()
        d = self._broker.readKeys(niceness=self.readNiceness)
        # Folding needs values only to tell present from absent.
        d.addCallback(
            lambda keys: list(self._seq.foldAll(capture, dict.fromkeys(keys, b"")))
        )
        d.addBoth(self._released, capture)
        return d

    def deferToWrites(self) -> Deferred[None]:
        """
        @return: a Deferred that fires (with C{None}) once every write
            issued so far has landed; it fails with L{WritesLost} if any
            accepted write is not stored (each write's own Deferred tells
            too), at this and every later call, until a later write of
            each such key (or a C{clear}) is stored.
        """
        self._checkThread("deferToWrites")
        return self._seq.deferToAll().addCallback(self._reportLost)

    def waitUntilRunning(self) -> Deferred[None]:
        """
        @return: a Deferred that fires once the store's table is ready.
        """
        self._checkThread("waitUntilRunning")
        d: Deferred[None] = self._broker.waitUntilRunning()
        return d

    def shutdown(self) -> Deferred[None]:
        """
        Refuse further writes, wait for every pending write to land, then
        shut the broker down (which the store's engine may share with
        others on the same URL). Idempotent; runs by itself before the
        reactor stops (where a lost write is only logged).

        @return: a Deferred that fires when everything is written and shut,
            or fails with L{WritesLost} (once shut) if an accepted write is
            not stored.
        """
        self._checkThread("shutdown")
        d: Deferred[None] = self._broker.shutdown()
        return d.addCallback(self._reportLost)


def _exception(failure: Failure) -> BaseException:
    error = failure.value
    assert error is not None
    return error


def _someKeys(keys: Any) -> str:
    # The first few keys, for a log line.
    shown = [repr(k) for k in list(keys)[:10]]
    if len(keys) > 10:
        shown.append(f"and {len(keys) - 10} more")
    return ", ".join(shown)


__all__ = ["Store"]
