"""
Unit tests for taking calls ahead: a L{ThreadWorker} may be given the next
call while it runs one (so that its thread goes on without waiting for the
reactor), and the queue takes such a call back, until the thread has
started it, for a call of higher priority, an idle worker, a cancellation,
a timeout, a detach, or an iteration that holds the worker
(C{holdIterations}). Deterministic: single-stepped workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import Task, TaskQueue, TaskTimeout, ThreadWorker
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

    def test_holdIterationsTakesAhead(self) -> None:
        """
        A worker that holds iterations takes calls ahead too, while no
        iteration holds it.
        """
        q = TaskQueue()
        worker, runner = memoryWorker(holdIterations=True)
        self.assertTrue(worker.takesAhead)
        q.attachWorker(worker)
        q.call(self.rec, "a")
        q.call(self.rec, "b")
        self.assertEqual(len(runner.jobs), 2)
        self.assertEqual(q.pending(), 0)
        runner.performAll()
        self.assertEqual(self.rec.calls, ["a", "b"])


def _consume(dr: Any, runner: MemoryJobRunner, later: Later) -> list[Any]:
    # Every item of a Deferator whose fetches run on runner, with the
    # reactor hearing of each job when it is done.
    items = []
    for itemD in dr:
        while not itemD.called:
            runner.performAll()
            later.deliver()
        items.append(itemD.result)
    runner.performAll()
    later.deliver()
    return items


class HoldAheadTests(SynchronousTestCase):
    """
    A worker with C{holdIterations} is given calls ahead, but runs none
    while an iteration holds it: its thread leaves the call given ahead
    (before the reactor heard of the hold) alone, the queue takes it back,
    and gives the worker none until the iteration ends.
    """

    def setUp(self) -> None:
        self.later = Later()
        self.runner = MemoryJobRunner()
        self.worker = ThreadWorker(
            runner=self.runner,
            callFromThread=self.later,
            holdIterations=True,
            batchSize=2,
        )
        self.q = TaskQueue(clock=Clock())
        self.q.attachWorker(self.worker)
        self.rec = Recorder()

    def iterate(self) -> Any:
        def rows() -> Any:
            for i in range(5):
                self.rec.calls.append(i)
                yield i

        return self.q.call(rows)

    def test_aheadTakenBack(self) -> None:
        """
        The call given ahead of a call that turns into a held iteration
        waits in the queue, and runs once the iteration has ended.
        """
        d = self.iterate()
        self.q.call(self.rec, "b")
        self.assertEqual(len(self.runner.jobs), 2)
        # The thread runs the first call, then finds the second one's job
        # while the iteration holds it: it leaves it.
        self.runner.performAll()
        self.assertEqual(self.rec.calls, [0, 1, 2])
        self.later.deliver()
        self.assertEqual(self.q.pending(), 1)
        dr = self.successResultOf(d)
        # Nothing is given ahead while the iteration holds the worker.
        self.q.call(self.rec, "c")
        self.assertEqual(self.q.pending(), 2)
        self.assertEqual(_consume(dr, self.runner, self.later), [0, 1, 2, 3, 4])
        self.runner.performAll()
        self.later.deliver()
        self.runner.performAll()
        self.later.deliver()
        self.assertEqual(self.rec.calls, [0, 1, 2, 3, 4, "b", "c"])
        self.successResultOf(self.q.whenIdle())

    def test_aheadMovesToAnotherWorker(self) -> None:
        """
        Taken back, the call given ahead runs on an idle worker at once.
        """
        d = self.iterate()
        self.q.call(self.rec, "b")
        other, otherRunner = memoryWorker()
        self.q.attachWorker(other)
        self.runner.performAll()
        self.later.deliver()
        self.assertEqual(len(otherRunner.jobs), 1)
        otherRunner.performAll()
        self.assertEqual(self.rec.calls, [0, 1, 2, "b"])
        dr = self.successResultOf(d)
        self.assertEqual(_consume(dr, self.runner, self.later), [0, 1, 2, 3, 4])
        self.successResultOf(self.q.whenIdle())

    def test_takesAheadAgain(self) -> None:
        """
        Once the iteration has ended, the worker is given calls ahead again.
        """
        d = self.iterate()
        self.runner.performAll()
        self.later.deliver()
        _consume(self.successResultOf(d), self.runner, self.later)
        self.q.call(self.rec, "a")
        self.q.call(self.rec, "b")
        self.assertEqual(self.q.pending(), 0)
        self.runner.performAll()
        self.later.deliver()
        self.assertEqual(self.rec.calls[-2:], ["a", "b"])
        self.successResultOf(self.q.whenIdle())

    def test_stoppedIteration(self) -> None:
        """
        An iteration stopped early ends the hold as well.
        """
        d = self.iterate()
        self.q.call(self.rec, "b")
        self.runner.performAll()
        self.later.deliver()
        self.successResultOf(d).stop()
        for _ in range(3):
            self.runner.performAll()
            self.later.deliver()
        self.assertEqual(self.rec.calls, [0, 1, 2, "b"])
        self.successResultOf(self.q.whenIdle())

    def test_withoutQueue(self) -> None:
        """
        A task run while an iteration holds the worker (given by no queue,
        which would have taken it back) runs once the iteration has ended,
        not in the middle of it.
        """
        worker, runner = memoryWorker(holdIterations=True, batchSize=2)

        def rows() -> Any:
            for i in range(5):
                self.rec.calls.append(i)
                yield i

        first: Task[Any] = Task(rows)
        second: Task[Any] = Task(self.rec, ("b",))
        worker.run(first)
        worker.run(second)
        runner.perform()
        runner.perform()
        self.assertEqual(self.rec.calls, [0, 1, 2])
        dr = self.successResultOf(first.d)
        items = []
        for itemD in dr:
            runner.performAll()
            items.append(self.successResultOf(itemD))
        runner.performAll()
        self.assertEqual(items, [0, 1, 2, 3, 4])
        self.assertEqual(self.rec.calls, [0, 1, 2, 3, 4, "b"])
        self.assertEqual(self.successResultOf(second.d), "b")

    def test_withoutQueueStopped(self) -> None:
        """
        A task put off behind an iteration still runs when the worker
        stops before the iteration has ended.
        """
        worker, runner = memoryWorker(holdIterations=True, batchSize=2)
        first: Task[Any] = Task(lambda: iter(range(5)))
        second: Task[Any] = Task(self.rec, ("b",))
        worker.run(first)
        worker.run(second)
        runner.perform()
        runner.perform()
        self.assertEqual(self.rec.calls, [])
        stopped = worker.stop()
        runner.performAll()
        self.assertEqual(self.successResultOf(second.d), "b")
        self.successResultOf(stopped)


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
        short, long = (
            (self.r1, self.r2) if len(self.r1.jobs) == 1 else (self.r2, self.r1)
        )
        short.performAll()
        # The call that waited behind the other worker's ran here.
        self.assertEqual(len(self.rec.calls), 2)
        self.assertEqual(len(long.jobs), 2)
        long.performAll()
        self.assertEqual(sorted(self.rec.calls), ["a", "b", "c"])
        self.successResultOf(self.q.whenIdle())

    def test_higherPriorityTakesTheLastPlace(self) -> None:
        """
        A call of higher priority, queued while both workers have a call
        ahead, takes the place of the one that sorts last; a busy worker
        done with a call goes on to the one it was given ahead, and is
        given the best queued call ahead in its place.
        """
        for label in "abcd":
            self.q.call(self.rec, label)
        self.assertEqual(self.q.pending(), 0)
        self.q.call(self.rec, "e", doNext=True)
        # d went back to the queue, e took its place.
        self.assertEqual(self.q.pending(), 1)
        self.q.call(self.rec, "f")
        self.assertEqual(self.q.pending(), 2)
        self.r1.perform()
        self.r2.perform()
        # Both went on to their calls ahead (e among them), and were given
        # d and f ahead.
        self.assertEqual(self.q.pending(), 0)
        given = [[t.args[0] for t in w._given] for w in (self.w1, self.w2)]
        self.assertEqual(sorted(g[0] for g in given), ["c", "e"])
        self.assertEqual(sorted(g[1] for g in given), ["d", "f"])
        self.r1.performAll()
        self.r2.performAll()
        self.assertEqual(sorted(self.rec.calls), list("abcdef"))
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
