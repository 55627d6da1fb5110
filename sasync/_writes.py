"""
L{WriteSequencer}: the ordered, coalescing write-behind queue of one
persistent store.

A store (L{sasync.items.Items}, L{sasync.parray.PersistentArray}) hands
every write to its sequencer, which runs them as I{units}, one unit at a
time, in the order they were issued:

  - Writes that replace or delete values, and C{clear}, gather in the
    newest unit that has not started yet. A key written twice there keeps
    only its last value, so fifty writes to one key while a unit runs cost
    one more transaction, and the last write issued is the one that lands.
  - An C{insert} (which must fail if the key exists) gets a unit of its own,
    so its failure is its own.

Only one unit runs at a time, so writes to one key can never overtake each
other, however many connections the broker has.

Nothing accepted is forgotten: a unit may land with some of its keys not
stored (see L{sasync._landing}), or fail as a whole. The sequencer keeps
those keys in its ledger of lost writes (L{WriteSequencer.lostWrites})
until a later write of the same key, or a C{clear}, is stored; the store
reports the ledger from C{deferToWrites()} and C{shutdown()}.

Reads run at a higher priority than writes and may overtake them, so a
store folds the units that have not landed yet over what it read (see
L{WriteSequencer.capture}): a read reflects every write issued before it.
And a unit does not start while a read issued before its writes is still
running, so a read never sees a write issued after it.

Reactor thread only: units are queued, started and fired there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, TypeAlias, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure

from .errors import BrokerStopped

K = TypeVar("K", bound=Hashable)


class _Unknown:
    """
    The type of L{UNKNOWN}.
    """

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
"""
What L{WriteSequencer.foldKey} returns when the pending writes do not
decide a key's value and the database must be asked.
"""


State: TypeAlias = "bytes | _Unknown | None"
"""
A key's value as far as known: pickled, L{UNKNOWN}, or C{None} (absent).
"""


@dataclass(frozen=True)
class Capture:
    """
    The units a read folds: seq C{start} up to C{end} (excluded; C{None}:
    all units, even those issued later).
    """

    start: int
    end: int | None


class WriteUnit(Generic[K]):
    """
    One transaction's worth of writes.

    @ivar seq: the unit's place in the issue order.
    @ivar entries: key -> pickled value, or C{None} to delete the key.
    @ivar clearFirst: delete every row of the group before the entries.
    @ivar insert: an insert unit: one entry, which must not exist yet.
    @ivar started: handed to the database; no longer changes.
    @ivar landed: finished (committed, or failed if C{failed}).
    @ivar failed: nothing of it was stored.
    @ivar lost: once landed, the keys of C{entries} that were not stored
        (the rest were), and why.
    """

    def __init__(self, seq: int, insert: bool = False) -> None:
        self.seq = seq
        self.entries: dict[K, bytes | None] = {}
        self.clearFirst = False
        self.insert = insert
        self.started = False
        self.landed = False
        self.failed = False
        self.lost: dict[K, Failure] = {}
        # Callers' Deferreds, fired when the unit lands, each with the keys
        # it waits for (None: a clear).
        self.waiters: list[tuple[Deferred[None], tuple[K, ...] | None]] = []

    def __repr__(self) -> str:
        kind = "insert" if self.insert else "batch"
        return f"<WriteUnit {self.seq} {kind} {len(self.entries)} entries>"

    def foldKey(self, key: K, state: State) -> State:
        """
        @return: C{key}'s value after this unit, given its value C{state}
            before it (C{None}: absent).
        """
        if self.clearFirst:
            state = None
        if key in self.entries and key not in self.lost:
            data = self.entries[key]
            if not self.insert:
                return data
            # An insert only lands where the key is absent.
            if state is None:
                return data
        return state

    def foldAll(self, state: dict[K, bytes]) -> None:
        """
        Apply this unit to C{state}, a whole group's key -> value.
        """
        if self.clearFirst:
            state.clear()
        for key, data in self.entries.items():
            if key in self.lost:
                continue
            if data is None:
                state.pop(key, None)
            elif self.insert:
                state.setdefault(key, data)
            else:
                state[key] = data


class WriteSequencer(Generic[K]):
    """
    Runs a store's writes as L{WriteUnit}s, one at a time, in issue order.

    Every unit folds idempotently (applying it twice is applying it once),
    which is what lets a read fold units that may already be in what it
    read.
    """

    def __init__(
        self,
        run: Callable[[WriteUnit[K]], Deferred[dict[K, Failure]]],
        refused: Callable[[Failure], bool] = lambda failure: False,
    ) -> None:
        """
        @param run: writes one unit to the database; the unit no longer
            changes once it is handed over. Fires with the keys of the
            unit that were not stored, and why (empty: all were), or fails
            if nothing of the unit was stored.
        @param refused: whether the failure of an insert unit is the
            insert's own refusal (the key exists): its caller is told, and
            the key keeps its value, so it is no lost write.
        """
        self._run = run
        self._refused = refused
        # The ledger of lost writes: key -> why its latest write was not
        # stored; and a clear() that was not.
        self._lost: dict[K, Failure] = {}
        self._lostClear: Failure | None = None
        self._nextSeq = 0
        # Every unit not landed, plus landed ones a capture still needs,
        # in seq order.
        self._log: list[WriteUnit[K]] = []
        self._running: WriteUnit[K] | None = None
        # The reads running now (see capture).
        self._captures: Counter[Capture] = Counter()
        # Units before this seq take no more writes (see capture).
        self._sealedBefore = 0
        self._closed = False
        self._kicking = False
        self._again = False

    # --- Writing -----------------------------------------------------------

    def _checkOpen(self) -> None:
        if self._closed:
            raise BrokerStopped("this store has been shut down: no more writes")

    def _newUnit(self, insert: bool = False) -> WriteUnit[K]:
        unit: WriteUnit[K] = WriteUnit(self._nextSeq, insert)
        self._nextSeq += 1
        self._log.append(unit)
        return unit

    def _openBatch(self) -> WriteUnit[K]:
        # Coalesce into the newest unit if it is a batch that has not started
        # and no read has sealed.
        if self._log:
            last = self._log[-1]
            if not (last.started or last.insert or last.seq < self._sealedBefore):
                return last
        return self._newUnit()

    def _wait(self, unit: WriteUnit[K], keys: tuple[K, ...] | None) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        unit.waiters.append((d, keys))
        self._kick()
        return d

    def put(self, entries: Iterable[tuple[K, bytes | None]]) -> Deferred[None]:
        """
        Write values (C{None}: delete the key).

        @return: a Deferred that fires when the writes have landed (or with
            the failure of the transaction that carried them).
        @raise BrokerStopped: after L{close}.
        """
        self._checkOpen()
        unit = self._openBatch()
        keys = []
        for key, data in entries:
            unit.entries[key] = data
            keys.append(key)
        return self._wait(unit, tuple(keys))

    def clear(self) -> Deferred[None]:
        """
        Delete every key of the group, in issue order with other writes.
        """
        self._checkOpen()
        unit = self._openBatch()
        # Earlier writes in this unit would be deleted anyway.
        unit.entries.clear()
        unit.clearFirst = True
        return self._wait(unit, None)

    def insert(self, key: K, data: bytes) -> Deferred[None]:
        """
        Insert a key that must not exist yet, in a unit of its own.
        """
        self._checkOpen()
        unit = self._newUnit(insert=True)
        unit.entries[key] = data
        return self._wait(unit, (key,))

    # --- Running -----------------------------------------------------------

    def _kick(self) -> None:
        # A unit's Deferred may fire at once, which calls back into here;
        # loop instead of recursing.
        if self._kicking:
            self._again = True
            return
        self._kicking = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._startNext()
        finally:
            self._kicking = False

    def _startNext(self) -> None:
        if self._running is not None:
            return
        unit = next((u for u in self._log if not u.started), None)
        if unit is None or self._readsBefore(unit):
            return
        unit.started = True
        self._running = unit
        d = maybeDeferred(self._run, unit)
        d.addBoth(self._landed, unit)

    def _readsBefore(self, unit: WriteUnit[K]) -> bool:
        # Is a read that must not see this unit still running?
        return any(c.end is not None and c.end <= unit.seq for c in self._captures)

    def _landed(self, result: object, unit: WriteUnit[K]) -> None:
        unit.landed = True
        self._running = None
        waiters, unit.waiters = unit.waiters, []
        if isinstance(result, Failure):
            unit.failed = True
            unit.lost = dict.fromkeys(unit.entries, result)
            if not (unit.insert and self._refused(result)):
                self._record(unit, result)
            for waiter, _ in waiters:
                waiter.errback(result)
        else:
            assert isinstance(result, Mapping)
            unit.lost = dict(result)
            self._record(unit, None)
            for waiter, keys in waiters:
                why = next((unit.lost[k] for k in keys or () if k in unit.lost), None)
                if why is None:
                    waiter.callback(None)
                else:
                    waiter.errback(why)
        self._prune()
        self._kick()

    def _record(self, unit: WriteUnit[K], failed: Failure | None) -> None:
        # Update the ledger of lost writes with how unit landed (failed:
        # as a whole). A stored write of a key (not an insert, which may
        # have kept an older value) settles its earlier losses.
        if unit.clearFirst:
            if failed is None:
                self._lost.clear()
                self._lostClear = None
            else:
                self._lostClear = failed
        for key in unit.entries:
            why = unit.lost.get(key)
            if why is not None:
                self._lost.pop(key, None)
                self._lost[key] = why
            elif not unit.insert:
                self._lost.pop(key, None)

    def lostWrites(self) -> tuple[dict[K, Failure], Failure | None]:
        """
        @return: the ledger of lost writes: key -> why its latest write was
            not stored, in the order lost; and why a C{clear} was not
            stored, or C{None}. A key leaves the ledger once a later write
            of it (or a C{clear}) is stored.
        """
        return dict(self._lost), self._lostClear

    def _prune(self) -> None:
        oldest = min((c.start for c in self._captures), default=self._nextSeq)
        # Landed units before every capture can be forgotten.
        while self._log and self._log[0].landed and self._log[0].seq < oldest:
            self._log.pop(0)

    # --- Reading -----------------------------------------------------------

    def pendingCount(self) -> int:
        """
        @return: how many units have not landed yet.
        """
        return sum(1 for u in self._log if not u.landed)

    def capture(self, bounded: bool = True) -> Capture:
        """
        Mark the start of a read. Each unit that has not landed now may or
        may not be in what the read finds, so the read folds them over its
        result; call L{release} when done.

        @param bounded: fold only the writes issued before this call, and
            hold back later ones until L{release} (an ordinary read: it
            must not see later writes); C{False}: fold later ones too and
            hold nothing back (a read that becomes a cache, which must
            miss nothing).
        @return: what L{foldKey}, L{foldAll} and L{release} take.
        """
        start = next((u.seq for u in self._log if not u.landed), self._nextSeq)
        end = None
        if bounded:
            end = self._nextSeq
            # Later writes must not join the units this read folds.
            self._sealedBefore = end
        capture = Capture(start, end)
        self._captures[capture] += 1
        return capture

    def release(self, capture: Capture) -> None:
        """
        End a read started with L{capture}.
        """
        self._captures[capture] -= 1
        if self._captures[capture] <= 0:
            del self._captures[capture]
        self._prune()
        # A unit may have been waiting for this read.
        self._kick()

    def _since(self, capture: Capture) -> list[WriteUnit[K]]:
        end = self._nextSeq if capture.end is None else capture.end
        return [u for u in self._log if capture.start <= u.seq < end and not u.failed]

    def foldKey(self, capture: Capture, key: K, state: State = UNKNOWN) -> State:
        """
        @param state: C{key}'s value as read (C{None}: absent), or
            L{UNKNOWN} before reading.
        @return: C{key}'s value once the captured writes have landed: the
            pickled value, C{None} if absent, or L{UNKNOWN} if that depends
            on the database.
        """
        for unit in self._since(capture):
            state = unit.foldKey(key, state)
        return state

    def foldAll(self, capture: Capture, state: dict[K, bytes]) -> dict[K, bytes]:
        """
        Apply the captured writes to C{state} (a whole group as read).

        @return: C{state}, changed in place.
        """
        for unit in self._since(capture):
            unit.foldAll(state)
        return state

    # --- Ending ------------------------------------------------------------

    def deferToAll(self) -> Deferred[None]:
        """
        @return: a Deferred that fires (with C{None}, whatever the outcome)
            once every write issued so far has landed or failed.
        """
        pending = [u for u in self._log if not u.landed]
        if not pending:
            return succeed(None)
        # Units land in order: the newest one landing means all have.
        done: Deferred[None] = Deferred()
        waiter: Deferred[None] = Deferred()
        pending[-1].waiters.append((waiter, ()))
        waiter.addBoth(lambda _: done.callback(None))
        return done

    def close(self) -> Deferred[None]:
        """
        Refuse further writes (L{BrokerStopped}).

        @return: L{deferToAll}.
        """
        self._closed = True
        return self.deferToAll()

    @property
    def closed(self) -> bool:
        """
        Whether L{close} has been called.
        """
        return self._closed


__all__ = ["UNKNOWN", "Capture", "WriteSequencer", "WriteUnit"]
