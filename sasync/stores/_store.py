"""
L{Store}: the base of the persistent stores, a L{StoreBroker} for one
group with a L{WriteSequencer} in front of its writes.
"""

from __future__ import annotations

from typing import Any, Generic

from twisted.internet.defer import Deferred, succeed

from ._storage import (
    READ_NICENESS,
    WRITE_NICENESS,
    StoreBroker,
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

    Reactor thread only, like every Deferred here.

    @cvar readNiceness: the niceness of reads.
    @cvar writeNiceness: the niceness of writes (higher: they yield to
        reads).
    """

    readNiceness: int = READ_NICENESS
    writeNiceness: int = WRITE_NICENESS

    def __init__(self, broker: StoreBroker[K]) -> None:
        self._broker = broker
        self._seq: WriteSequencer[K] = WriteSequencer(self._runUnit)
        broker.drain = self._seq.close

    def _runUnit(self, unit: WriteUnit[K]) -> Deferred[None]:
        upserts = [(k, v) for k, v in unit.entries.items() if v is not None]
        deletes = [
            k for k, v in unit.entries.items() if v is None and not unit.clearFirst
        ]
        return self._broker.writeUnit(
            unit.clearFirst,
            upserts,
            deletes,
            unit.insert,
            niceness=self.writeNiceness,
        )

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
                key: values[key] if data is stored.get(key) else loadValue(data)
                for key, data in sorted(state.items())
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
            issued so far has landed, or failed (each write's own Deferred
            tells which).
        """
        return self._seq.deferToAll()

    def waitUntilRunning(self) -> Deferred[None]:
        """
        @return: a Deferred that fires once the store's table is ready.
        """
        d: Deferred[None] = self._broker.waitUntilRunning()
        return d

    def shutdown(self) -> Deferred[None]:
        """
        Refuse further writes, wait for every pending write to land, then
        shut the broker down (which the store's engine may share with
        others on the same URL). Idempotent; runs by itself before the
        reactor stops.

        @return: a Deferred that fires when everything is written and shut.
        """
        return self._broker.shutdown()


__all__ = ["Store"]
