"""
Unit tests for taking calls ahead: a L{ThreadWorker} without
C{holdIterations} may be given the next call while it runs one (so that its
thread goes on without waiting for the reactor), and the queue takes such a
call back, until the thread has started it, for a call of higher priority,
an idle worker, a cancellation, a timeout or a detach. Deterministic:
single-stepped workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import TaskQueue, TaskTimeout, ThreadWorker
from asynqueue.workers import MemoryJobRunner

from .helpers import Recorder, memoryWorker


class Later:
    """
    A C{callFromThread} that keeps the calls until L{deliver}: the reactor
    hears of a job only when the test says so, as if it were busy.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., object], *args: Any) -> None:
        self.calls.append((f, args))

    def deliver(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class AheadTests(SynchronousTestCase):
    """
    One worker: the second call goes to it at once, and leaves it again for
    a call that comes first.
    """

    def setUp(self) -> None:
        self.q = TaskQueue(clock=Clock())
        self.worker, self.runner = memoryWorker()
        self.q.attachWorker(self.worker)
        self.rec = Recorder()

    def test_secondCallGivenAhead(self) -> None:
        """
        While the worker runs a call, the next one is given to it too: both
        are on the worker, none is queued, and they run in order.
        """
        d1 = self.q.call(self.rec, "a")
        d2 = self.q.call(self.rec, "b")
        self.assertEqual(len(self.runner.jobs), 2)
        self.assertEqual(self.q.pending(), 0)
        self.assertEqual(self.q.running(), 2)
        d3 = self.q.call(self.rec, "c")
        # Never more than one ahead.
        self.assertEqual(len(self.runner.jobs), 2)
        self.assertEqual(self.q.pending(), 1)
        self.runner.performAll()
        self.assertEqual(self.rec.calls, ["a", "b", "c"])
        self.assertEqual(
            [self.successResultOf(d) for d in (d1, d2, d3)], ["a", "b", "c"]
        )

    def test_higherPriorityTakesItsPlace(self) -> None:
        """
        A call of higher priority, queued while another waits ahead on the
        worker, runs before it: the waiting one goes back to the queue.
        """
        self.q.call(self.rec, "a")
        self.q.call(self.rec, "b", niceness=5)
        self.q.call(self.rec, "c", doNext=True)
        self.q.call(self.rec, "d", niceness=-5)
        self.assertEqual(self.q.pending(), 2)
        self.runner.performAll()
        self.assertEqual(self.rec.calls, ["a", "c", "d", "b"])

    def test_samePriorityKeepsItsPlace(self) -> None:
        """
        A call of the same priority, queued later, does not take the place
        of the one waiting ahead.
        """
        for label in "abcd":
            self.q.call(self.rec, label)
        self.runner.performAll()
        self.assertEqual(self.rec.calls, ["a", "b", "c", "d"])

    def test_cancelAhead(self) -> None:
        """
        Cancelling a call waiting ahead on the worker removes it: it fails
        at once and never runs, and the queue goes idle.
        """
        self.q.call(self.rec, "a")
        d = self.q.call(self.rec, "b")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        idle = self.q.whenIdle()
        self.runner.performAll()
        self.assertEqual(self.rec.calls, ["a"])
        self.successResultOf(idle)

    def test_cancelAheadNextOneMovesUp(self) -> None:
        """
        When the call waiting ahead is cancelled, the next queued call is
        given ahead in its place.
        """
        self.q.call(self.rec, "a")
        d = self.q.call(self.rec, "b")
        self.q.call(self.rec, "c")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.q.pending(), 0)
        self.runner.performAll()
        self.assertEqual(self.rec.calls, ["a", "c"])

    def test_timeoutAhead(self) -> None:
        """
        A call that times out while waiting ahead fails with L{TaskTimeout}
        and never runs.
        """
        clock = self.q.clock
        assert isinstance(clock, Clock)
        self.q.call(self.rec, "a")
        d = self.q.call(self.rec, "b", timeout=1)
        clock.advance(1)
        self.failureResultOf(d, TaskTimeout)
        self.runner.performAll()
        self.assertEqual(self.rec.calls, ["a"])

    def test_startedIsNotTakenBack(self) -> None:
        """
        Once the thread has started the call given ahead (before the reactor
        heard that the first one ended), it stays: a call of higher priority
        waits, and cancelling it stops it like any running call.
        """
        later = Later()
        runner = MemoryJobRunner()
        worker = ThreadWorker(runner=runner, callFromThread=later)
        q = TaskQueue()
        q.attachWorker(worker)
        rec = Recorder()
        q.call(rec, "a")
        d = q.call(rec, "b")
        runner.performAll()
        self.assertEqual(rec.calls, ["a", "b"])
        q.call(rec, "c", doNext=True)
        self.assertEqual(q.pending(), 1)
        d.cancel()
        # Nothing can interrupt it: the caller hears of it at once.
        self.failureResultOf(d, CancelledError)
        later.deliver()
        runner.performAll()
        later.deliver()
        self.assertEqual(rec.calls, ["a", "b", "c"])
        self.successResultOf(q.whenIdle())

    def test_holdIterationsTakesNothingAhead(self) -> None:
        """
        A worker that holds iterations is given one call at a time.
        """
        q = TaskQueue()
        worker, runner = memoryWorker(holdIterations=True)
        self.assertFalse(worker.takesAhead)
        q.attachWorker(worker)
        q.call(self.rec, "a")
        q.call(self.rec, "b")
        self.assertEqual(len(runner.jobs), 1)
        self.assertEqual(q.pending(), 1)
        runner.performAll()
        self.assertEqual(self.rec.calls, ["a", "b"])


class TwoWorkerTests(SynchronousTestCase):
    """
    With several workers, a call waiting ahead on a busy one moves to a
    worker that falls idle, or that another worker leaves.
    """

    def setUp(self) -> None:
        self.q = TaskQueue()
        self.w1, self.r1 = memoryWorker()
        self.w2, self.r2 = memoryWorker()
        self.q.attachWorker(self.w1)
        self.q.attachWorker(self.w2)
        self.rec = Recorder()

    def test_idleWorkerTakesOver(self) -> None:
        """
        A worker that falls idle takes over a call waiting ahead on another
        worker whose call still runs.
        """
        self.q.call(self.rec, "a")
        self.q.call(self.rec, "b")
        self.q.call(self.rec, "c")
        self.assertEqual(len(self.r1.jobs) + len(self.r2.jobs), 3)
        # The worker with one job runs it and falls idle.
        short, long = (self.r1, self.r2) if len(self.r1.jobs) == 1 else (
            self.r2, self.r1)
        short.performAll()
        # The call that waited behind the other worker's ran here.
        self.assertEqual(len(self.rec.calls), 2)
        self.assertEqual(len(long.jobs), 2)
        long.performAll()
        self.assertEqual(sorted(self.rec.calls), ["a", "b", "c"])
        self.successResultOf(self.q.whenIdle())

    def test_detachTakesBack(self) -> None:
        """
        Detaching a worker hands the call waiting ahead on it to another.
        """
        self.q.call(self.rec, "a")
        self.q.call(self.rec, "b")
        self.q.call(self.rec, "c")
        loaded = self.w1 if len(self.r1.jobs) == 2 else self.w2
        other = self.r2 if loaded is self.w1 else self.r1
        done = self.q.detachWorker(loaded)
        self.r1.performAll()
        self.r2.performAll()
        self.assertEqual(sorted(self.rec.calls), ["a", "b", "c"])
        self.successResultOf(done)
        self.assertEqual(self.q.workers, [self.w2 if loaded is self.w1 else self.w1])
        self.assertEqual(other.jobs, [])


class TakeBackTests(SynchronousTestCase):
    """
    L{ThreadWorker.takeBack} gives up only the last call given, and only
    before its thread started it.
    """

    def test_takeBack(self) -> None:
        """
        The last call given and not started is taken back; its job does
        nothing when it comes up; the first call still runs.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        rec = Recorder()
        q.call(rec, "a")
        q.call(rec, "b")
        ahead = worker._given[1]
        self.assertFalse(worker.takeBack(worker._given[0]))
        self.assertTrue(worker.takeBack(ahead))
        self.assertFalse(worker.takeBack(ahead))
        self.assertEqual(worker.task, worker._given[0])
        runner.performAll()
        self.assertEqual(rec.calls, ["a"])

    def test_notAfterStart(self) -> None:
        """
        A call its thread has started can't be taken back.
        """
        later = Later()
        runner = MemoryJobRunner()
        worker = ThreadWorker(runner=runner, callFromThread=later)
        q = TaskQueue()
        q.attachWorker(worker)
        q.call(lambda: None)
        q.call(lambda: None)
        ahead = worker._given[1]
        runner.performAll()
        self.assertFalse(worker.takeBack(ahead))
        later.deliver()
        self.successResultOf(q.whenIdle())
