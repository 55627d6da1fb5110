"""
Tests for L{asynqueue.tracker.DeferredTracker}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import DeferredTracker


class DeferredTrackerTests(SynchronousTestCase):
    """
    The tracker waits for tracked Deferreds without touching their results.
    """

    def setUp(self) -> None:
        self.tracker = DeferredTracker()

    def test_putReturnsSameDeferredAndKeepsResult(self) -> None:
        """
        C{put} returns the Deferred itself and its result reaches later
        callbacks unchanged.
        """
        d: Deferred[int] = Deferred()
        self.assertIs(self.tracker.put(d), d)
        self.assertEqual(len(self.tracker), 1)
        d.callback(7)
        self.assertEqual(self.successResultOf(d), 7)
        self.assertEqual(len(self.tracker), 0)

    def test_failureStillUnhandledForOwner(self) -> None:
        """
        A tracked Deferred's failure is not swallowed: the owner still gets
        it (so an unhandled one would still be logged).
        """
        d: Deferred[int] = Deferred()
        self.tracker.put(d)
        waiter = self.tracker.deferToAll()
        d.errback(Failure(ValueError("boom")))
        self.successResultOf(waiter)
        self.failureResultOf(d, ValueError)

    def test_firedDeferredNotTracked(self) -> None:
        """
        A Deferred that already fired is not counted.
        """
        self.tracker.put(succeed(1))
        self.assertEqual(len(self.tracker), 0)
        self.successResultOf(self.tracker.deferToAll())

    def test_putTwice(self) -> None:
        """
        Putting the same Deferred twice tracks it once.
        """
        d: Deferred[None] = Deferred()
        self.tracker.put(d)
        self.tracker.put(d)
        self.assertEqual(len(self.tracker), 1)
        d.callback(None)
        self.assertEqual(len(self.tracker), 0)

    def test_pending(self) -> None:
        """
        C{pending} lists the tracked Deferreds not fired yet, oldest first,
        as a copy (cancelling them while looping over it is safe).
        """
        a: Deferred[None] = Deferred()
        b: Deferred[None] = Deferred()
        self.tracker.put(a)
        self.tracker.put(b)
        self.assertEqual(self.tracker.pending(), [a, b])
        for d in self.tracker.pending():
            d.cancel()
        self.failureResultOf(a, CancelledError)
        self.failureResultOf(b, CancelledError)
        self.assertEqual(self.tracker.pending(), [])

    def test_putNonDeferred(self) -> None:
        """
        Only Deferreds can be tracked.
        """
        self.assertRaises(TypeError, self.tracker.put, 3)

    def test_deferToAll(self) -> None:
        """
        C{deferToAll} fires only after every tracked Deferred, including
        one put while waiting.
        """
        d1: Deferred[None] = Deferred()
        d2: Deferred[None] = Deferred()
        self.tracker.put(d1)
        waiter = self.tracker.deferToAll()
        self.tracker.put(d2)
        d1.callback(None)
        self.assertNoResult(waiter)
        d2.callback(None)
        self.assertIsNone(self.successResultOf(waiter))

    def test_deferToAllEmpty(self) -> None:
        """
        With nothing tracked, C{deferToAll} fires at once.
        """
        self.successResultOf(self.tracker.deferToAll())

    def test_deferToAny(self) -> None:
        """
        C{deferToAny} fires when the first tracked Deferred fires.
        """
        d1: Deferred[None] = Deferred()
        d2: Deferred[None] = Deferred()
        self.tracker.put(d1)
        self.tracker.put(d2)
        waiter = self.tracker.deferToAny()
        self.assertNoResult(waiter)
        d2.callback(None)
        self.successResultOf(waiter)
        self.assertNoResult(self.tracker.deferToAny())

    def test_deferToAnyEmpty(self) -> None:
        """
        With nothing tracked, C{deferToAny} fires at once.
        """
        self.successResultOf(self.tracker.deferToAny())

    def test_deferUntilFewer(self) -> None:
        """
        C{deferUntilFewer(N)} fires once fewer than N are pending.
        """
        ds: list[Deferred[None]] = [Deferred() for _ in range(4)]
        for d in ds:
            self.tracker.put(d)
        waiter2 = self.tracker.deferUntilFewer(2)
        waiter4 = self.tracker.deferUntilFewer(4)
        self.successResultOf(self.tracker.deferUntilFewer(5))
        ds[0].callback(None)
        self.successResultOf(waiter4)
        self.assertNoResult(waiter2)
        ds[1].callback(None)
        self.assertNoResult(waiter2)
        ds[2].callback(None)
        self.successResultOf(waiter2)

    def test_deferUntilFewerBadN(self) -> None:
        """
        N must be a positive int.
        """
        for bad in (0, -1, 1.5, True):
            self.assertRaises(ValueError, self.tracker.deferUntilFewer, bad)

    def test_cancelWaiter(self) -> None:
        """
        Cancelling a waiter stops it waiting and leaves the tracked
        Deferreds alone.
        """
        d: Deferred[int] = Deferred()
        self.tracker.put(d)
        allWaiter = self.tracker.deferToAll()
        anyWaiter = self.tracker.deferToAny()
        allWaiter.cancel()
        anyWaiter.cancel()
        self.failureResultOf(allWaiter, CancelledError)
        self.failureResultOf(anyWaiter, CancelledError)
        self.assertNoResult(d)
        d.callback(3)
        self.assertEqual(self.successResultOf(d), 3)

    def test_cancelTracked(self) -> None:
        """
        A cancelled tracked Deferred counts as fired.
        """
        d: Deferred[int] = Deferred()
        self.tracker.put(d)
        waiter = self.tracker.deferToAll()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.successResultOf(waiter)

    def test_holdWaitsForRelease(self) -> None:
        """
        A held Deferred counts as pending, and those waiting hear only once
        it is released (the tracker has no callback of its own on it).
        """
        d: Deferred[int] = Deferred()
        self.tracker.hold(d)
        self.assertEqual(len(self.tracker), 1)
        self.assertEqual(self.tracker.pending(), [d])
        allWaiter = self.tracker.deferToAll()
        anyWaiter = self.tracker.deferToAny()
        fewer = self.tracker.deferUntilFewer(1)
        d.callback(5)
        self.assertNoResult(allWaiter)
        self.tracker.release(d)
        self.assertEqual(len(self.tracker), 0)
        self.successResultOf(allWaiter)
        self.successResultOf(anyWaiter)
        self.successResultOf(fewer)
        self.assertEqual(self.successResultOf(d), 5)

    def test_releaseUntracked(self) -> None:
        """
        Releasing a Deferred that is not tracked (or released already)
        changes nothing.
        """
        held: Deferred[None] = Deferred()
        self.tracker.hold(held)
        other: Deferred[None] = Deferred()
        self.tracker.release(other)
        self.assertEqual(len(self.tracker), 1)
        held.callback(None)
        self.tracker.release(held)
        self.tracker.release(held)
        self.assertEqual(len(self.tracker), 0)

    def test_holdFired(self) -> None:
        """
        A Deferred that fired already cannot be held: nothing would release
        it.
        """
        self.assertRaises(ValueError, self.tracker.hold, succeed(None))
        self.assertEqual(len(self.tracker), 0)
