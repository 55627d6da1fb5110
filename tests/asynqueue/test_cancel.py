"""
Unit tests for cancelling and timing out calls of a L{TaskQueue}, queued
and running, honest (with an interrupter) and immediate (without one).
Deterministic: fake or single-stepped workers and a L{Clock}.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import (
    AsyncWorker,
    ListConsumer,
    OutcomeUnknown,
    TaskQueue,
    TaskTimeout,
    currentTask,
)
from asynqueue.task import Task

from .helpers import FakeWorker, Recorder, memoryWorker


class Interrupted(Exception):
    """
    What a task raises when its interrupter stopped it.
    """


class QueuedCancelTests(SynchronousTestCase):
    """
    A cancelled queued call never runs.
    """

    def test_neverRuns(self) -> None:
        """
        Cancelling a queued call fails it with L{CancelledError} naming the
        call, removes it, and it is never called; the others run.
        """
        q = TaskQueue()
        rec = Recorder()
        d1 = q.call(rec, "one")
        d2 = q.call(rec, "two")
        d3 = q.call(rec, "three")
        d2.cancel()
        failure = self.failureResultOf(d2, CancelledError)
        self.assertIn("two", str(failure.value))
        self.assertEqual(q.pending(), 2)
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        runner.performAll()
        self.assertEqual(rec.calls, ["one", "three"])
        self.assertEqual(self.successResultOf(d1), "one")
        self.assertEqual(self.successResultOf(d3), "three")

    def test_cancelAfterDone(self) -> None:
        """
        Cancelling a call that has finished changes nothing.
        """
        q = TaskQueue()
        w = q.attachWorker(FakeWorker())
        w.runNow = True
        d = q.call(lambda: 5)
        d.cancel()
        self.assertEqual(self.successResultOf(d), 5)

    def test_cancelWhileQueuedBehindThread(self) -> None:
        """
        A call handed to a thread worker but cancelled before the thread got
        to it is not called at all.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        rec = Recorder()
        d = q.call(rec, "x")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        runner.performAll()
        self.assertEqual(rec.calls, [])
        d2 = q.call(rec, "y")
        runner.performAll()
        self.assertEqual(self.successResultOf(d2), "y")


class RunningCancelTests(SynchronousTestCase):
    """
    A running call with an interrupter is honest: its caller hears of the
    cancellation only after the worker finished. Without, at once.
    """

    def setUp(self) -> None:
        self.q = TaskQueue()
        self.worker = self.q.attachWorker(FakeWorker())

    def test_immediateWithoutInterrupter(self) -> None:
        """
        Without an interrupter, the caller gets L{CancelledError} at once;
        the worker stays busy until the call ends, and its late result is
        dropped.
        """
        d = self.q.call(Recorder(), "x")
        after = self.q.call(Recorder(), "after")
        task = self.worker.current
        assert task is not None
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(task.stopRequested)
        self.assertEqual(len(self.worker.received), 1)
        self.worker.succeed("late")
        self.assertEqual(len(self.worker.received), 2)
        self.worker.succeed("after")
        self.assertEqual(self.successResultOf(after), "after")

    def test_lateFailureIsLogged(self) -> None:
        """
        A cancelled call that later fails with its own error has that error
        logged, since nobody else will see it.
        """
        d = self.q.call(Recorder(), "x")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.worker.fail(Failure(KeyError("late")))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_honest(self) -> None:
        """
        With an interrupter, cancelling calls it and the caller hears
        L{CancelledError} only when the worker is done with the call.
        """
        d = self.q.call(Recorder(), "x")
        task = self.worker.current
        assert task is not None
        reasons: list[BaseException] = []
        task.onInterrupt(reasons.append)
        d.cancel()
        self.assertNoResult(d)
        self.assertEqual(len(reasons), 1)
        self.assertIsInstance(reasons[0], CancelledError)
        self.worker.fail(Failure(Interrupted()))
        self.failureResultOf(d, CancelledError)

    def test_honestButFinished(self) -> None:
        """
        If an interrupted call finishes anyway, its caller gets the truth:
        the result.
        """
        d = self.q.call(Recorder(), "x")
        task = self.worker.current
        assert task is not None
        task.onInterrupt(lambda reason: None)
        d.cancel()
        self.assertNoResult(d)
        self.worker.succeed("done anyway")
        self.assertEqual(self.successResultOf(d), "done anyway")

    def test_honestCallbacksSeeNoPlaceholder(self) -> None:
        """
        Callbacks the caller added before cancelling see only the final
        outcome.
        """
        d = self.q.call(Recorder(), "x")
        seen: list[object] = []
        d.addBoth(seen.append)
        task = self.worker.current
        assert task is not None
        task.onInterrupt(lambda reason: None)
        d.cancel()
        self.assertEqual(seen, [])
        self.worker.fail(Failure(Interrupted()))
        self.assertEqual(len(seen), 1)
        assert isinstance(seen[0], Failure)
        self.assertTrue(seen[0].check(CancelledError))

    def test_cancelTwiceStopsWaiting(self) -> None:
        """
        Cancelling again while an honest stop is awaited gives up waiting:
        the caller hears L{OutcomeUnknown} at once (the call may still take
        effect, as here), and what the worker delivers later is dropped.
        """
        d = self.q.call(Recorder(), "x")
        task = self.worker.current
        assert task is not None
        task.onInterrupt(lambda reason: None)
        d.cancel()
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, OutcomeUnknown)
        self.worker.succeed("late")
        self.worker.runNow = True
        self.assertEqual(self.successResultOf(self.q.call(lambda: 1)), 1)

    def abandonable(self) -> tuple[Deferred[Any], Any, list[BaseException]]:
        """
        A running, interruptible call whose task is abandonable.
        """
        d = self.q.call(Recorder(), "x")
        task = self.worker.current
        assert task is not None
        task.abandonable = True
        reasons: list[BaseException] = []
        task.onInterrupt(reasons.append)
        return d, task, reasons

    def test_abandonableFailsAtOnce(self) -> None:
        """
        An abandonable call stopped short of its point of no return: its
        interrupter is called, its caller hears L{CancelledError} at once,
        the worker may then not pass the point (it must undo its work), and
        the failure it then delivers is dropped without a log; the worker
        takes no other call before it did.
        """
        d, task, reasons = self.abandonable()
        after = self.q.call(Recorder(), "after")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(reasons), 1)
        self.assertFalse(task.passPointOfNoReturn())
        self.assertEqual(len(self.worker.received), 1)
        self.worker.fail(Failure(Interrupted()))
        self.assertEqual(self.flushLoggedErrors(Interrupted), [])
        self.worker.succeed("after")
        self.assertEqual(self.successResultOf(after), "after")

    def test_abandonableTimesOutAtOnce(self) -> None:
        """
        A timeout too: L{TaskTimeout} at the deadline.
        """
        clock = Clock()
        q = TaskQueue(clock=clock)
        worker = q.attachWorker(FakeWorker())
        d = q.call(Recorder(), "x", timeout=2)
        task = worker.current
        assert task is not None
        task.abandonable = True
        task.onInterrupt(lambda reason: None)
        clock.advance(2)
        self.failureResultOf(d, TaskTimeout)
        self.assertFalse(task.passPointOfNoReturn())

    def test_pastPointOfNoReturnWaits(self) -> None:
        """
        Once the worker passed the point of no return (a COMMIT in flight),
        a stop waits for the outcome, which the caller gets: the result if
        it succeeded.
        """
        d, task, reasons = self.abandonable()
        self.assertTrue(task.passPointOfNoReturn())
        d.cancel()
        self.assertNoResult(d)
        self.assertEqual(len(reasons), 1)
        self.worker.succeed("committed")
        self.assertEqual(self.successResultOf(d), "committed")

    def test_pastPointOfNoReturnFails(self) -> None:
        """
        ... and its own error if it failed (past that point, a failure need
        not mean that its work was undone), not the stop's.
        """
        d, task, _ = self.abandonable()
        self.assertTrue(task.passPointOfNoReturn())
        d.cancel()
        self.assertNoResult(d)
        self.worker.fail(Failure(Interrupted()))
        self.failureResultOf(d, Interrupted)

    def test_pastPointOfNoReturnStays(self) -> None:
        """
        A call past its point of no return stays past it: asked again after
        a stop came (sAsync asks twice on an AUTOCOMMIT connection: as the
        call starts and before COMMIT), the worker is told to go on, as its
        caller waits for the outcome.
        """
        d, task, _ = self.abandonable()
        self.assertTrue(task.passPointOfNoReturn())
        d.cancel()
        self.assertNoResult(d)
        self.assertTrue(task.passPointOfNoReturn())
        self.worker.succeed("committed")
        self.assertEqual(self.successResultOf(d), "committed")

    def test_stopBetweenMarkAndLook(self) -> None:
        """
        A stop that comes after the worker marked the point passed and
        before it looked for a stop (the worker takes no lock unless it
        sees one) saw the mark: the caller waits, and the worker, seeing
        the stop, abides by that and goes on.
        """
        d, task, _ = self.abandonable()
        task._pastNoReturn = True  # (What passPointOfNoReturn does first.)
        d.cancel()
        self.assertNoResult(d)
        self.assertTrue(task.passPointOfNoReturn())
        self.worker.succeed("committed")
        self.assertEqual(self.successResultOf(d), "committed")

    def test_pastPointOfNoReturnGivenUpIsLogged(self) -> None:
        """
        Cancelled a second time while past the point of no return, the
        caller stops waiting, told that the outcome is unknown (never
        L{CancelledError}: the call may still take effect); the call's later
        failure reaches nobody, so it is logged (it may say how a COMMIT
        ended).
        """
        d, task, _ = self.abandonable()
        self.assertTrue(task.passPointOfNoReturn())
        d.cancel()
        d.cancel()
        failure = self.failureResultOf(d, OutcomeUnknown)
        self.assertIsInstance(failure.value.__cause__, CancelledError)
        self.worker.fail(Failure(Interrupted()))
        self.assertEqual(len(self.flushLoggedErrors(Interrupted)), 1)

    def test_timedOutThenCancelledPastPointOfNoReturn(self) -> None:
        """
        A call that timed out past its point of no return (its caller waits
        for the outcome), then cancelled: the caller stops waiting and hears
        L{OutcomeUnknown}, not L{CancelledError}, which would say the call
        did not take effect; here it does (the worker commits).
        """
        d, task, _ = self.abandonable()
        self.assertTrue(task.passPointOfNoReturn())
        task.timeOut(1)
        self.assertNoResult(d)
        d.cancel()
        failure = self.failureResultOf(d, OutcomeUnknown)
        self.assertNotIsInstance(failure.value, CancelledError)
        self.assertIsInstance(failure.value.__cause__, CancelledError)
        self.assertIn("TaskTimeout", str(failure.value))
        with capturedLogs() as events:
            self.worker.succeed("committed")
        # Nobody hears the outcome but the log.
        self.assertEqual(
            [e["log_format"] for e in events],
            ["Task {task} succeeded after its caller stopped waiting"],
        )

    def test_pointOfNoReturnRace(self) -> None:
        """
        A worker thread passing the point of no return while the reactor
        stops the task: they always agree. The caller waits (requestStop
        says so) exactly when the worker went past the point; otherwise the
        worker was refused and the caller is told at once.
        """
        for _ in range(100):
            task: Task[Any] = Task(lambda: None)
            task.abandonable = True
            task.onInterrupt(lambda reason: None)
            barrier = threading.Barrier(2)
            passed: list[bool] = []

            def worker(
                task: Task[Any] = task, barrier: Any = barrier, passed: Any = passed
            ) -> None:
                barrier.wait()
                passed.append(task.passPointOfNoReturn())

            thread = threading.Thread(target=worker)
            thread.start()
            barrier.wait()
            waits = task.requestStop(CancelledError())
            thread.join()
            self.assertEqual(passed, [waits])

    def test_interrupterAfterStop(self) -> None:
        """
        An interrupter registered after the stop was requested is called at
        once, exactly once.
        """
        d = self.q.call(Recorder(), "x")
        task = self.worker.current
        assert task is not None
        d.cancel()
        self.failureResultOf(d, CancelledError)
        reasons: list[BaseException] = []
        task.onInterrupt(reasons.append)
        self.assertEqual(len(reasons), 1)
        task.requestStop(CancelledError())
        self.assertEqual(len(reasons), 1)

    def test_brokenInterrupter(self) -> None:
        """
        An interrupter that raises is logged; the call is still waited for.
        """
        d = self.q.call(Recorder(), "x")
        task = self.worker.current
        assert task is not None

        def broken(reason: BaseException) -> None:
            raise RuntimeError("broken interrupter")

        task.onInterrupt(broken)
        d.cancel()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertNoResult(d)
        self.worker.fail(Failure(Interrupted()))
        self.failureResultOf(d, CancelledError)

    def test_currentTaskInThread(self) -> None:
        """
        A call running on a thread worker finds its task with
        L{currentTask}; outside a call there is none.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        found: list[Any] = []
        d = q.call(lambda: found.append(currentTask()))
        runner.performAll()
        self.successResultOf(d)
        self.assertIsNotNone(found[0])
        self.assertEqual(found[0].state.value, "done")
        self.assertIsNone(currentTask())


class AsyncWorkerCancelTests(SynchronousTestCase):
    """
    On an L{AsyncWorker}, a call that returns a Deferred is interrupted by
    cancelling that Deferred.
    """

    def test_cancelInnerDeferred(self) -> None:
        """
        Cancelling the call cancels the Deferred it returned, and the
        caller gets L{CancelledError}; the worker is free again.
        """
        q = TaskQueue()
        q.attachWorker(AsyncWorker())
        cancelled: list[object] = []
        inner: Deferred[int] = Deferred(cancelled.append)
        d = q.call(lambda: inner)
        d.cancel()
        self.assertEqual(cancelled, [inner])
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.successResultOf(q.call(lambda: 3)), 3)

    def test_coroutine(self) -> None:
        """
        A coroutine function runs as a Deferred and can be cancelled too.
        """
        q = TaskQueue()
        q.attachWorker(AsyncWorker())
        gate: Deferred[int] = Deferred()

        async def f() -> int:
            return await gate + 1

        d = q.call(f)
        self.assertNoResult(d)
        gate.callback(1)
        self.assertEqual(self.successResultOf(d), 2)
        gate2: Deferred[int] = Deferred()

        async def g() -> int:
            return await gate2

        d2 = q.call(g)
        d2.cancel()
        self.failureResultOf(d2, CancelledError)


class TimeoutTests(SynchronousTestCase):
    """
    C{timeout=} fails a call with L{TaskTimeout}, queued or running.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.q = TaskQueue(clock=self.clock)

    def test_queued(self) -> None:
        """
        A call still queued when its time is up fails and never runs.
        """
        rec = Recorder()
        d = self.q.call(rec, "x", timeout=5)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        failure = self.failureResultOf(d, TaskTimeout)
        self.assertIsInstance(failure.value, TimeoutError)
        self.assertIn("5 s", str(failure.value))
        worker, runner = memoryWorker()
        self.q.attachWorker(worker)
        runner.performAll()
        self.assertEqual(rec.calls, [])

    def test_runningImmediate(self) -> None:
        """
        A running call without an interrupter fails at once on timeout.
        """
        w = self.q.attachWorker(FakeWorker())
        d = self.q.call(Recorder(), "x", timeout=2)
        task = w.current
        assert task is not None
        self.clock.advance(2)
        self.failureResultOf(d, TaskTimeout)
        self.assertTrue(task.stopRequested)
        w.succeed()

    def test_runningHonest(self) -> None:
        """
        A running call with an interrupter is interrupted on timeout, and
        fails with L{TaskTimeout} once the worker has finished it.
        """
        w = self.q.attachWorker(FakeWorker())
        d = self.q.call(Recorder(), "x", timeout=2)
        task = w.current
        assert task is not None
        reasons: list[BaseException] = []
        task.onInterrupt(reasons.append)
        self.clock.advance(2)
        self.assertNoResult(d)
        self.assertIsInstance(reasons[0], TaskTimeout)
        w.fail(Failure(Interrupted()))
        self.failureResultOf(d, TaskTimeout)

    def test_finishedInTime(self) -> None:
        """
        A call finished in time leaves no timer behind.
        """
        w = self.q.attachWorker(FakeWorker())
        w.runNow = True
        d = self.q.call(lambda: 1, timeout=3)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelledLeavesNoTimer(self) -> None:
        """
        A cancelled call's timer is cancelled too.
        """
        d = self.q.call(lambda: 1, timeout=3)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutDuringHonestCancel(self) -> None:
        """
        A timeout while an honest cancellation waits for the worker changes
        nothing: the caller gets L{CancelledError}.
        """
        w = self.q.attachWorker(FakeWorker())
        d = self.q.call(Recorder(), "x", timeout=2)
        task = w.current
        assert task is not None
        task.onInterrupt(lambda reason: None)
        d.cancel()
        self.clock.advance(5)
        self.assertNoResult(d)
        w.fail(Failure(Interrupted()))
        self.failureResultOf(d, CancelledError)


class ProducingCancelTests(SynchronousTestCase):
    """
    Cancelling a call whose items are being written to a consumer stops
    the writing.
    """

    def test_cancelStopsProducer(self) -> None:
        """
        The producer is stopped and unregistered, the source released, and
        the caller gets L{CancelledError}.
        """
        q = TaskQueue()
        worker, runner = memoryWorker(batchSize=2, holdIterations=True)
        q.attachWorker(worker)
        closed: list[bool] = []

        def gen() -> Any:
            try:
                yield from range(100)
            finally:
                closed.append(True)

        consumer = ListConsumer()
        d = q.call(gen, consumer=consumer)
        runner.perform()
        self.assertNoResult(d)
        self.assertEqual(consumer.items, [0, 1])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertIsNone(consumer.producer)
        runner.performAll()
        self.assertEqual(closed, [True])
        self.assertLess(len(consumer.items), 100)
        # The worker is free for the next call.
        d2 = q.call(lambda: "next")
        runner.performAll()
        self.assertEqual(self.successResultOf(d2), "next")
