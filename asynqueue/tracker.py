"""
L{DeferredTracker}: wait for a changing set of Deferreds to fire.

Reactor thread only: Deferreds are put, observed and waited for there.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed

from ._util import Waiters, checkNumber

T = TypeVar("T")


class DeferredTracker:
    """
    Keeps count of Deferreds that have not fired yet, and lets you wait
    until all, any one, or all but a few of them have.

    Tracking never changes a tracked Deferred's result: the tracker adds
    one pass-through callback that returns what it was given, so a
    failure still reaches the callbacks added after it (and is still
    reported as unhandled if nobody handles it).
    """

    def __init__(self) -> None:
        # Keyed by id() so that Deferreds need not be hashable by value.
        self._pending: dict[int, Deferred[Any]] = {}
        # (threshold, waiter): the waiter fires once fewer than threshold
        # Deferreds are pending.
        self._waitingFewer: list[tuple[int, Deferred[None]]] = []
        self._waitingAny = Waiters()
        # Bound once: put() adds it to every Deferred tracked.
        self._observe = self._observed

    def __len__(self) -> int:
        """
        How many tracked Deferreds have not fired yet.
        """
        return len(self._pending)

    def pending(self) -> list[Deferred[Any]]:
        """
        The tracked Deferreds that have not fired yet, oldest first (to
        cancel those left when a wait runs out, say).
        """
        return list(self._pending.values())

    def put(self, d: Deferred[T]) -> Deferred[T]:
        """
        Track C{d} until it fires. A Deferred that has already fired is not
        tracked.

        @return: C{d} itself, with its result untouched.
        @raise TypeError: C{d} is not a Deferred.
        """
        if not isinstance(d, Deferred):
            raise TypeError(f"a DeferredTracker tracks Deferreds, not {d!r}")
        key = id(d)
        pending = self._pending
        if d.called or key in pending:
            return d
        pending[key] = d
        # A bound method, not a closure: fewer objects per tracked Deferred.
        d.addBoth(self._observe, key)
        return d

    def hold(self, d: Deferred[Any]) -> None:
        """
        Track C{d} without a callback of the tracker's: whoever holds it
        has one of its own on C{d}, which must call L{release} with C{d}
        once C{d} fired (one callback less per Deferred tracked). Add that
        callback before C{d} can fire.

        @raise ValueError: C{d} has fired already.
        """
        if d.called:
            raise ValueError(f"{d!r} has fired: there is nothing to hold")
        self._pending[id(d)] = d

    def release(self, d: Deferred[Any]) -> None:
        """
        C{d}, held with L{hold}, fired: stop tracking it. (Nothing happens
        if it is not tracked.)
        """
        if self._pending.pop(id(d), None) is not None and (
            self._waitingAny.waiting or self._waitingFewer
        ):
            self._wake()

    def _observed(self, result: object, key: int) -> object:
        # A side observation: hand the result on unchanged.
        if self._pending.pop(key, None) is not None and (
            # (Most Deferreds fire with nobody waiting: skip the call then.)
            self._waitingAny.waiting or self._waitingFewer
        ):
            self._wake()
        return result

    def _wake(self) -> None:
        # A tracked Deferred fired: tell those waiting.
        if self._waitingAny.waiting:
            self._waitingAny.fire()
        if self._waitingFewer:
            self._checkFewer()

    def _checkFewer(self) -> None:
        n = len(self._pending)
        if not any(threshold > n for threshold, _ in self._waitingFewer):
            return
        ready = [w for t, w in self._waitingFewer if t > n]
        self._waitingFewer = [(t, w) for t, w in self._waitingFewer if t <= n]
        for waiter in ready:
            waiter.callback(None)

    def deferToAll(self) -> Deferred[None]:
        """
        A Deferred that fires (with C{None}) once no tracked Deferred is
        pending, including any put while waiting. Fires at once if none is.
        """
        return self.deferUntilFewer(1)

    def deferToAny(self) -> Deferred[None]:
        """
        A Deferred that fires (with C{None}) when the next tracked
        Deferred fires. Fires at once if none is pending.
        """
        if not self._pending:
            return succeed(None)
        return self._waitingAny.wait()

    def deferUntilFewer(self, N: int) -> Deferred[None]:
        """
        A Deferred that fires (with C{None}) once fewer than C{N} tracked
        Deferreds are pending; at once if that is true now. Use it to keep
        at most C{N} operations in flight.

        @raise ValueError: C{N} is less than 1.
        """
        checkNumber(N, "N", integer=True, positive=True, typeError=ValueError)
        if len(self._pending) < N:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._forgetFewer)
        self._waitingFewer.append((N, waiter))
        return waiter

    # A cancelled waiter just stops waiting; tracked Deferreds are untouched.
    def _forgetFewer(self, waiter: Deferred[None]) -> None:
        self._waitingFewer = [(t, w) for t, w in self._waitingFewer if w is not waiter]


__all__ = ["DeferredTracker"]
