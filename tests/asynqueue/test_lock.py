"""
Tests for L{asynqueue.lock.DeferredLock}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import DeferredLock


class DeferredLockTests(SynchronousTestCase):
    """
    The lock is FIFO, with VIPs ahead of the others.
    """

    def setUp(self) -> None:
        self.lock = DeferredLock()

    def test_acquireFree(self) -> None:
        """
        A free lock is acquired at once and fires with itself.
        """
        self.assertIs(self.successResultOf(self.lock.acquire()), self.lock)
        self.assertTrue(self.lock.locked)
        self.lock.release()
        self.assertFalse(self.lock.locked)

    def test_fifoWithVips(self) -> None:
        """
        Waiters get the lock in order, VIPs first (FIFO among them).
        """
        self.successResultOf(self.lock.acquire())
        order: list[str] = []
        for name, vip in (("a", False), ("b", True), ("c", False), ("d", True)):
            self.lock.acquire(vip=vip).addCallback(lambda _, n=name: order.append(n))
        self.assertEqual(self.lock.waiting(), 4)
        for _ in range(4):
            self.lock.release()
        self.assertEqual(order, ["b", "d", "a", "c"])
        self.assertTrue(self.lock.locked)
        self.lock.release()
        self.assertFalse(self.lock.locked)

    def test_releaseUnlocked(self) -> None:
        """
        Releasing a lock nobody holds is an error.
        """
        self.assertRaises(RuntimeError, self.lock.release)

    def test_cancelWaiting(self) -> None:
        """
        A cancelled acquisition is withdrawn and never gets the lock.
        """
        self.successResultOf(self.lock.acquire())
        d1 = self.lock.acquire()
        d2 = self.lock.acquire(vip=True)
        d1.cancel()
        d2.cancel()
        self.failureResultOf(d1, CancelledError)
        self.failureResultOf(d2, CancelledError)
        self.lock.release()
        self.assertFalse(self.lock.locked)

    def test_run(self) -> None:
        """
        C{run} holds the lock while the call (and its Deferred) runs, and
        releases it after, giving the call's result.
        """
        inner: Deferred[int] = Deferred()
        d = self.lock.run(lambda x, y=0: inner.addCallback(lambda v: v + x + y), 1, y=2)
        self.assertTrue(self.lock.locked)
        second = self.lock.run(lambda: "second")
        self.assertNoResult(second)
        inner.callback(10)
        self.assertEqual(self.successResultOf(d), 13)
        self.assertEqual(self.successResultOf(second), "second")
        self.assertFalse(self.lock.locked)

    def test_runFailure(self) -> None:
        """
        A failing call still releases the lock.
        """
        def boom() -> None:
            raise ValueError("boom")

        self.failureResultOf(self.lock.run(boom), ValueError)
        self.assertFalse(self.lock.locked)

    def test_runCoroutine(self) -> None:
        """
        C{run} accepts a coroutine function.
        """
        gate: Deferred[int] = Deferred()

        async def f() -> int:
            return await gate * 2

        d = self.lock.run(f)
        self.assertTrue(self.lock.locked)
        gate.callback(4)
        self.assertEqual(self.successResultOf(d), 8)
        self.assertFalse(self.lock.locked)
