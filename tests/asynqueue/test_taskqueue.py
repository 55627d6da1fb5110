"""
Unit tests for L{asynqueue.taskqueue.TaskQueue}: ordering, series, update,
workers coming and going, shutdown and bad input. Deterministic: workers are
fakes or single-stepped L{ThreadWorker}s.
"""

from __future__ import annotations

import heapq
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import (
    Deferator,
    ListConsumer,
    QueueStopped,
    Task,
    TaskQueue,
    ThreadWorker,
    WorkerError,
    taskqueue,
)
from asynqueue.workers import MemoryJobRunner

from .helpers import FakeWorker, Recorder, memoryWorker, syncCall


class _NoAheadWorker(ThreadWorker):
    # A worker given one task at a time.
    takesAhead = False  # type: ignore[assignment]


class OrderingTests(SynchronousTestCase):
    """
    Calls run by band (doNext, normal, doLast), then niceness, then FIFO.
    """

    def runAll(self, q: TaskQueue) -> None:
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        runner.performAll()

    def test_niceness(self) -> None:
        """
        Lower niceness runs first; equal niceness first in, first out.
        """
        q = TaskQueue()
        rec = Recorder()
        for label, nice in [
            ("a", 0),
            ("b", 5),
            ("c", -5),
            ("d", 0),
            ("e", -20),
            ("f", 20),
            ("g", 5),
        ]:
            q.call(rec, label, niceness=nice)
        self.runAll(q)
        self.assertEqual(rec.calls, ["e", "c", "a", "d", "b", "g", "f"])

    def test_plainTasks(self) -> None:
        """
        L{Task.plain} tasks sort as C{Task(f, args, kw)} does, among tasks
        made either way, and run and deliver as they do.
        """
        q = TaskQueue()
        rec = Recorder()
        ds = [
            q.submit(Task.plain(rec, ("p1",), {})),
            q.submit(Task(rec, ("t1",), {})),
            q.submit(Task(rec, ("n-1",), {}, niceness=-1)),
            q.submit(Task.plain(rec, ("p2",), {})),
            q.submit(Task(rec, ("next",), {}, doNext=True)),
            q.submit(Task(rec, ("last",), {}, doLast=True)),
        ]
        plain = Task.plain(rec, ("p3",), {})
        made = Task(rec, ("p3",), {})
        self.assertEqual(plain.sortKey[0], made.sortKey[0])
        self.assertEqual(plain.sortKey[1] - plain.sortKey[2], 0)
        self.assertEqual((plain.niceness, plain.raw, plain.consumer), (0, False, None))
        self.runAll(q)
        self.assertEqual(rec.calls, ["next", "n-1", "p1", "t1", "p2", "last"])
        self.assertEqual(self.successResultOf(ds[0]), "p1")

    def test_busyWorkerGoesOn(self) -> None:
        """
        A worker that takes nothing ahead (as sAsync's worker processes)
        and is freed while calls wait goes straight on to the best of them,
        in order, one at a time, and is idle (free for the next call) once
        none wait.
        """
        q = TaskQueue()
        rec = Recorder()
        runner = MemoryJobRunner()
        worker = _NoAheadWorker(runner=runner, callFromThread=syncCall)
        q.attachWorker(worker)
        ds = [
            q.call(rec, label, niceness=nice)
            for label, nice in [("a", 0), ("b", 5), ("c", -5), ("d", 0)]
        ]
        self.assertEqual((q.running(), q.pending()), (1, 3))
        while runner.perform():
            self.assertLessEqual(q.running(), 1)
        self.assertEqual(rec.calls, ["a", "c", "d", "b"])
        self.assertEqual([self.successResultOf(d) for d in ds], ["a", "b", "c", "d"])
        self.assertEqual((q.running(), q.pending()), (0, 0))
        later = q.call(rec, "e")
        self.assertEqual(q.running(), 1)
        runner.performAll()
        self.assertEqual(self.successResultOf(later), "e")

    def test_doNextDoLast(self) -> None:
        """
        doNext calls run before any niceness, doLast calls after; within
        each band, niceness and then FIFO order them.
        """
        q = TaskQueue()
        rec = Recorder()
        q.call(rec, "last1", doLast=True)
        q.call(rec, "n20", niceness=20)
        q.call(rec, "next1", doNext=True)
        q.call(rec, "n-20", niceness=-20)
        q.call(rec, "last2", doLast=True)
        q.call(rec, "next2", doNext=True)
        q.call(rec, "last3", doLast=True, niceness=-1)
        q.call(rec, "next3", doNext=True, niceness=1)
        self.runAll(q)
        self.assertEqual(
            rec.calls,
            ["next1", "next2", "next3", "n-20", "n20", "last3", "last1", "last2"],
        )

    def test_results(self) -> None:
        """
        Each call's Deferred fires with that call's result, or fails with the
        original exception.
        """
        q = TaskQueue()
        d1 = q.call(lambda x, y=0: x + y, 1, y=2)

        def boom() -> None:
            raise KeyError("k")

        d2 = q.call(boom)
        self.runAll(q)
        self.assertEqual(self.successResultOf(d1), 3)
        self.failureResultOf(d2, KeyError)

    def test_fifoUnderLoad(self) -> None:
        """
        A thousand calls of one priority run in the order they were made.
        """
        q = TaskQueue()
        rec = Recorder()
        for i in range(1000):
            q.call(rec, i)
        self.runAll(q)
        self.assertEqual(rec.calls, list(range(1000)))

    def test_laterCallsWhileRunning(self) -> None:
        """
        A call made while the worker is busy still takes its place by
        priority among the waiting calls.
        """
        q = TaskQueue()
        worker = q.attachWorker(FakeWorker())
        rec = Recorder()
        q.call(rec, "first", niceness=10)
        q.call(rec, "slow", niceness=10)
        q.call(rec, "urgent", niceness=-10)
        self.assertEqual([t.args[0] for t in worker.received], ["first"])
        worker.succeed()
        worker.succeed()
        worker.succeed()
        self.assertEqual(
            [t.args[0] for t in worker.received], ["first", "urgent", "slow"]
        )


class SeriesTests(SynchronousTestCase):
    """
    A call with a series runs only on a worker qualified for it.
    """

    def test_qualifiedOnly(self) -> None:
        """
        Series calls go to the qualified worker; others to any worker.
        """
        q = TaskQueue()
        plain = q.attachWorker(FakeWorker(name="plain"))
        special = q.attachWorker(FakeWorker(["db"], name="special"))
        q.call(Recorder(), "x", series="db")
        self.assertEqual(len(special.received), 1)
        self.assertEqual(plain.received, [])
        q.call(Recorder(), "y")
        self.assertEqual(len(plain.received), 1)

    def test_waitsForBusyQualifiedWorker(self) -> None:
        """
        A series call waits (without blocking other calls) while its
        qualified worker is busy.
        """
        q = TaskQueue()
        plain = q.attachWorker(FakeWorker())
        plain.runNow = True
        special = q.attachWorker(FakeWorker(["db"]))
        busy = q.call(lambda: "busy", series="db")
        d = q.call(lambda: "db!", series="db", niceness=-20)
        other = q.call(lambda: "other", niceness=5)
        self.assertEqual(self.successResultOf(other), "other")
        self.assertNoResult(d)
        self.assertEqual(q.pending(), 1)
        special.runNow = True
        special.succeed("busy")
        self.assertEqual(self.successResultOf(busy), "busy")
        self.assertEqual(self.successResultOf(d), "db!")

    def test_bestRunnableTaskFirst(self) -> None:
        """
        When the best queued call can't run on the idle worker, the best one
        that can, runs.
        """
        q = TaskQueue()
        rec = Recorder()
        q.attachWorker(FakeWorker(["db"]))
        q.call(rec, "busy", series="db")
        q.call(rec, "db", series="db", niceness=-10)
        q.call(rec, "b", niceness=5)
        q.call(rec, "a", niceness=0)
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        runner.performAll()
        self.assertEqual(rec.calls, ["a", "b"])
        self.assertEqual(q.pending(), 1)


class UpdateTests(SynchronousTestCase):
    """
    L{TaskQueue.update} runs a call once on every worker.
    """

    def test_everyWorker(self) -> None:
        """
        Each worker runs the call once, before queued calls, and the results
        come in worker order.
        """
        q = TaskQueue()
        rec = Recorder()
        q.call(rec, "queued1")
        q.call(rec, "queued2")
        pairs = [memoryWorker() for _ in range(3)]
        # Attach without letting them run: a busy fake holds the queue.
        workers = [w for w, _ in pairs]
        for w in workers:
            w.iQualified.append("hold")
        for w in workers:
            q.attachWorker(w)
        seen: list[Any] = []

        def where(tag: str) -> str:
            seen.append(tag)
            return tag

        d = q.update(where, "u")
        for _, runner in pairs:
            runner.performAll()
        self.assertEqual(self.successResultOf(d), ["u", "u", "u"])
        self.assertEqual(sorted(rec.calls), ["queued1", "queued2"])
        self.assertEqual(seen, ["u", "u", "u"])

    def test_beforeQueuedCalls(self) -> None:
        """
        An update jumps ahead of calls already queued.
        """
        q = TaskQueue()
        worker = q.attachWorker(FakeWorker())
        rec = Recorder()
        q.call(rec, "busy")
        q.call(rec, "queued", niceness=-20)
        q.update(rec, "update")
        worker.runNow = True
        task = worker.release()
        self.assertEqual(task.args, ("busy",))
        self.assertEqual(rec.calls, ["update", "queued"])

    def test_pinned(self) -> None:
        """
        An update call runs on the worker it is meant for, even when another
        worker is idle.
        """
        q = TaskQueue()
        busy = q.attachWorker(FakeWorker(name="busy"))
        q.call(Recorder(), "occupy")
        idle = q.attachWorker(FakeWorker(name="idle"))
        idle.runNow = True
        d = q.update(lambda: "ok")
        self.assertNoResult(d)
        self.assertEqual(len(idle.received), 1)
        busy.runNow = True
        busy.release()
        self.assertEqual(self.successResultOf(d), ["ok", "ok"])

    def test_failure(self) -> None:
        """
        An update that fails on a worker fails with the original exception.
        """
        q = TaskQueue()
        w = FakeWorker()
        w.runNow = True
        q.attachWorker(w)

        def boom() -> None:
            raise ValueError("no")

        self.failureResultOf(q.update(boom), ValueError)

    def test_noWorkers(self) -> None:
        """
        With no worker, an update fires with an empty list.
        """
        self.assertEqual(self.successResultOf(TaskQueue().update(print)), [])

    def test_badInput(self) -> None:
        """
        A non-callable update is refused at once.
        """
        self.assertRaises(TypeError, TaskQueue().update, 42)

    def test_afterShutdown(self) -> None:
        """
        An update after shutdown fails with L{QueueStopped}.
        """
        q = TaskQueue()
        q.shutdown()
        self.failureResultOf(q.update(print), QueueStopped)


class WorkerAttachmentTests(SynchronousTestCase):
    """
    Workers come and go without losing any call.
    """

    def test_notAWorker(self) -> None:
        """
        Only L{IWorker} providers can be attached.
        """
        self.assertRaises(TypeError, TaskQueue().attachWorker, object())

    def test_detachIdle(self) -> None:
        """
        An idle worker detaches and is stopped at once.
        """
        q = TaskQueue()
        w = q.attachWorker(FakeWorker())
        self.successResultOf(q.detachWorker(w))
        self.assertTrue(w.stopped)
        self.assertEqual(q.workers, [])

    def test_attachTwice(self) -> None:
        """
        Attaching a worker that is attached already changes nothing: it is
        listed once, gets one task at a time, and one detach removes it.
        """
        q = TaskQueue()
        w = q.attachWorker(FakeWorker())
        self.assertIs(q.attachWorker(w), w)
        self.assertEqual(q.workers, [w])
        first, second = q.call(lambda: 1), q.call(lambda: 2)
        self.assertEqual(len(w.received), 1)
        w.succeed(1)
        w.succeed(2)
        self.assertEqual(
            [self.successResultOf(first), self.successResultOf(second)], [1, 2]
        )
        self.successResultOf(q.detachWorker(w))
        self.assertEqual(q.workers, [])

    def test_detachUnknown(self) -> None:
        """
        Detaching a worker that isn't attached fails with L{WorkerError}.
        """
        self.failureResultOf(TaskQueue().detachWorker(FakeWorker()), WorkerError)

    def test_detachBusyNothingLost(self) -> None:
        """
        A busy worker finishes its call before it stops; the queued calls go
        to the other worker, and every call is delivered exactly once.
        """
        q = TaskQueue()
        a = q.attachWorker(FakeWorker(name="a"))
        ds = [q.call(lambda i=i: i) for i in range(5)]
        detached = q.detachWorker(a)
        again = q.detachWorker(a)
        self.assertNoResult(detached)
        b = FakeWorker(name="b")
        b.runNow = True
        q.attachWorker(b)
        self.assertNoResult(detached)
        a.succeed(0)
        self.successResultOf(detached)
        self.successResultOf(again)
        self.assertTrue(a.stopped)
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2, 3, 4])
        self.assertEqual(len(a.received), 1)
        self.assertEqual(len(b.received), 4)

    def test_detachWaitsForUpdate(self) -> None:
        """
        A detaching worker still runs the update calls meant for it.
        """
        q = TaskQueue()
        a = q.attachWorker(FakeWorker())
        q.call(Recorder(), "busy")
        d = q.update(lambda: "updated")
        detached = q.detachWorker(a)
        a.runNow = True
        a.succeed()
        self.assertEqual(self.successResultOf(d), ["updated"])
        self.successResultOf(detached)

    def test_attachAfterShutdown(self) -> None:
        """
        No worker can be attached to a stopped queue.
        """
        q = TaskQueue()
        q.shutdown()
        self.assertRaises(QueueStopped, q.attachWorker, FakeWorker())


class ShutdownTests(SynchronousTestCase):
    """
    Shutdown finishes the queued work, then stops the workers.
    """

    def test_finishesQueuedWork(self) -> None:
        """
        Calls queued before shutdown all run; then the workers stop; calls
        made after fail at once with L{QueueStopped}.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        ds = [q.call(lambda i=i: i * 2) for i in range(4)]
        stopped = q.shutdown()
        self.assertFalse(q.isRunning())
        self.assertNoResult(stopped)
        late = q.call(lambda: None)
        failure = self.failureResultOf(late, QueueStopped)
        self.assertIn("shut down", str(failure.value))
        runner.performAll()
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 2, 4, 6])
        self.successResultOf(stopped)
        self.assertTrue(runner.quitted)
        self.assertEqual(q.workers, [])

    def test_idempotent(self) -> None:
        """
        Every shutdown call gets a Deferred that fires when stopped.
        """
        q = TaskQueue()
        w = q.attachWorker(FakeWorker())
        q.call(Recorder(), 1)
        d1, d2 = q.shutdown(), q.shutdown()
        self.assertNoResult(d1)
        w.succeed()
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.successResultOf(q.shutdown())
        self.assertTrue(w.stopped)

    def test_waitsForRunning(self) -> None:
        """
        Shutdown waits for a running call, even a cancelled one whose
        worker is still busy.
        """
        q = TaskQueue()
        w = q.attachWorker(FakeWorker())
        d = q.call(Recorder(), 1)
        d.cancel()
        self.failureResultOf(d)
        stopped = q.shutdown()
        self.assertNoResult(stopped)
        w.succeed()
        self.successResultOf(stopped)

    def test_whenIdle(self) -> None:
        """
        L{TaskQueue.whenIdle} fires when nothing is queued or running.
        """
        q = TaskQueue()
        self.successResultOf(q.whenIdle())
        w = q.attachWorker(FakeWorker())
        q.call(Recorder(), 1)
        q.call(Recorder(), 2)
        idle = q.whenIdle()
        self.assertEqual((q.running(), q.pending()), (1, 1))
        w.succeed()
        self.assertNoResult(idle)
        w.succeed()
        self.successResultOf(idle)

    def test_whenIdleWaitsForQueuedCalls(self) -> None:
        """
        With no worker, a queued call keeps L{TaskQueue.whenIdle} waiting,
        even when another queued call is cancelled; a worker attached later
        runs it, and then it fires.
        """
        q = TaskQueue()
        rec = Recorder()
        first, second = q.call(rec, 1), q.call(rec, 2)
        idle = q.whenIdle()
        self.assertNoResult(idle)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertNoResult(idle)
        self.assertEqual(q.pending(), 1)
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        self.assertNoResult(idle)
        runner.performAll()
        self.assertEqual(self.successResultOf(second), 2)
        self.successResultOf(idle)

    def test_shutdownWithoutWorker(self) -> None:
        """
        Shut down with calls queued and no worker (none can be attached
        any more): each queued call fails at once with L{QueueStopped}
        naming it, and then shutdown fires; no Deferred is left unfired.
        """
        q = TaskQueue()

        def pendingJob() -> None:
            pass

        ds = [q.call(pendingJob), q.call(pendingJob, niceness=5)]
        stopped = q.shutdown()
        for d in ds:
            failure = self.failureResultOf(d, QueueStopped)
            self.assertIn("pendingJob", str(failure.value))
            self.assertIn("no worker", str(failure.value))
        self.successResultOf(stopped)
        self.assertEqual(q.pending(), 0)

    def test_shutdownWithoutQualifiedWorker(self) -> None:
        """
        A queued call that no staying worker is qualified to run (its only
        one is being detached) fails at shutdown; the others still run, and
        shutdown fires after them.
        """
        q = TaskQueue()
        w = q.attachWorker(FakeWorker())
        special = q.attachWorker(FakeWorker(["elsewhere"]))
        rec = Recorder()
        busy = q.call(rec, "busy", series="elsewhere")
        running = q.call(rec, "running")
        stranded = q.call(rec, "stranded", series="elsewhere")
        queued = q.call(rec, "queued")
        q.detachWorker(special)
        stopped = q.shutdown()
        failure = self.failureResultOf(stranded, QueueStopped)
        self.assertIn("no worker that may run it", str(failure.value))
        self.assertNoResult(stopped)
        special.succeed("busy")
        self.assertEqual(self.successResultOf(busy), "busy")
        w.runNow = True
        w.succeed("running")
        self.assertEqual(self.successResultOf(running), "running")
        self.assertEqual(self.successResultOf(queued), "queued")
        self.successResultOf(stopped)
        self.assertTrue(w.stopped)

    def test_lastWorkerDetachedAfterShutdown(self) -> None:
        """
        After shutdown, detaching the last worker while calls are still
        queued fails them with L{QueueStopped} once the worker has left;
        shutdown then fires.
        """
        q = TaskQueue()
        w = q.attachWorker(FakeWorker())
        rec = Recorder()
        running = q.call(rec, "running")
        queued = q.call(rec, "queued")
        stopped = q.shutdown()
        detached = q.detachWorker(w)
        self.assertNoResult(queued)
        self.assertNoResult(stopped)
        w.succeed("running")
        self.assertEqual(self.successResultOf(running), "running")
        self.failureResultOf(queued, QueueStopped)
        self.successResultOf(detached)
        self.successResultOf(stopped)
        self.assertEqual(rec.calls, [])


class BadInputTests(SynchronousTestCase):
    """
    Bad calls are refused at C{call()} time, and the queue keeps working.
    """

    def setUp(self) -> None:
        self.q = TaskQueue()
        self.worker = self.q.attachWorker(FakeWorker())
        self.worker.runNow = True

    def assertStillWorks(self) -> None:
        self.assertEqual(self.successResultOf(self.q.call(lambda: "fine")), "fine")
        self.assertEqual(self.q.pending(), 0)

    def test_notCallable(self) -> None:
        """
        A non-callable task is a TypeError naming it.
        """
        e = self.assertRaises(TypeError, self.q.call, "not a function")
        self.assertIn("not a function", str(e))
        self.assertStillWorks()

    def test_nicenessRange(self) -> None:
        """
        Niceness outside -20..20 is a ValueError.
        """
        for bad in (21, -21, 1000):
            self.assertRaises(ValueError, self.q.call, print, niceness=bad)
        self.assertStillWorks()

    def test_nicenessType(self) -> None:
        """
        Niceness that isn't an int is a TypeError.
        """
        for bad in ("3", 1.5, True, None):
            self.assertRaises(TypeError, self.q.call, print, niceness=bad)
        self.assertStillWorks()

    def test_consumer(self) -> None:
        """
        A consumer that doesn't provide IConsumer is a TypeError.
        """
        self.assertRaises(TypeError, self.q.call, print, consumer=[])
        self.assertStillWorks()

    def test_timeout(self) -> None:
        """
        A timeout that isn't positive is a ValueError.
        """
        for bad in (0, -1):
            self.assertRaises(ValueError, self.q.call, print, timeout=bad)
        self.assertStillWorks()

    def test_submittedTwice(self) -> None:
        """
        A task the queue has taken, whether handed to a free worker at once
        or waiting in the queue, is L{Task.enqueued}, and is refused if
        submitted again (a ValueError); one never submitted is not.
        """
        self.worker.runNow = False
        task: Task[None] = Task(print)
        self.assertFalse(task.enqueued)
        self.q.submit(task)
        self.assertTrue(task.enqueued)
        self.assertRaises(ValueError, self.q.submit, task)
        waiting: Task[None] = Task(print)
        self.q.submit(waiting)
        self.assertEqual(self.q.pending(), 1)
        self.assertTrue(waiting.enqueued)
        self.assertRaises(ValueError, self.q.submit, waiting)


class IterationResultTests(SynchronousTestCase):
    """
    A call returning an iterator gives a Deferator, feeds a consumer, or
    (raw) gives the iterator itself.
    """

    def test_deferator(self) -> None:
        """
        An iterator result arrives as a L{Deferator} with every item.
        """
        q = TaskQueue()
        worker, runner = memoryWorker(batchSize=3)
        q.attachWorker(worker)
        d = q.call(lambda: iter(range(10)))
        runner.performAll()
        dr = self.successResultOf(d)
        self.assertIsInstance(dr, Deferator)
        items = []
        for itemD in dr:
            runner.performAll()
            items.append(self.successResultOf(itemD))
        self.assertEqual(items, list(range(10)))

    def test_raw(self) -> None:
        """
        With C{raw=True} the iterator itself is the result.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        it = iter([1, 2])
        d = q.call(lambda: it, raw=True)
        runner.performAll()
        self.assertIs(self.successResultOf(d), it)

    def test_listIsNotIterated(self) -> None:
        """
        A list (an iterable, not an iterator) is an ordinary result.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        d = q.call(lambda: [1, 2])
        runner.performAll()
        self.assertEqual(self.successResultOf(d), [1, 2])

    def test_consumer(self) -> None:
        """
        With C{consumer=}, every item is written to it and the Deferred
        fires with the consumer.
        """
        q = TaskQueue()
        worker, runner = memoryWorker(batchSize=4)
        q.attachWorker(worker)
        consumer = ListConsumer()
        d = q.call(lambda: (i for i in range(10)), consumer=consumer)
        runner.performAll()
        self.assertIs(self.successResultOf(d), consumer)
        self.assertEqual(consumer.items, list(range(10)))
        self.assertIsNone(consumer.producer)

    def test_consumerFailure(self) -> None:
        """
        An iterator failing midway fails the Deferred with its exception,
        after the items before it were written.
        """

        def gen() -> Any:
            yield 1
            yield 2
            raise OSError("disk")

        q = TaskQueue()
        worker, runner = memoryWorker(batchSize=1)
        q.attachWorker(worker)
        consumer = ListConsumer()
        d = q.call(gen, consumer=consumer)
        runner.performAll()
        self.failureResultOf(d, OSError)
        self.assertEqual(consumer.items, [1, 2])

    def test_nonIteratorWithConsumer(self) -> None:
        """
        A plain result with C{consumer=} is delivered as it is.
        """
        q = TaskQueue()
        w = q.attachWorker(FakeWorker())
        w.runNow = True
        d = q.call(lambda: 5, consumer=ListConsumer())
        self.assertEqual(self.successResultOf(d), 5)


class WorkerFailureTests(SynchronousTestCase):
    """
    A worker that breaks doesn't break the queue.
    """

    def test_runRaises(self) -> None:
        """
        A worker whose C{run} raises fails that call; the queue goes on.
        """
        q = TaskQueue()
        w = FakeWorker()
        calls = 0

        def brokenRun(task: Any) -> Deferred[None]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("broken")
            return FakeWorker.run(w, task)

        w.run = brokenRun  # type: ignore[method-assign]
        w.runNow = True
        q.attachWorker(w)
        self.failureResultOf(q.call(lambda: 1), RuntimeError)
        self.assertEqual(self.successResultOf(q.call(lambda: 2)), 2)

    def test_freedFails(self) -> None:
        """
        A worker whose freed Deferred fails is logged and still reused.
        """
        q = TaskQueue()
        w = q.attachWorker(FakeWorker())
        d = q.call(lambda: 1)
        task = w.current
        assert task is not None and w._freed is not None
        freed = w._freed
        w.current, w._freed = None, None
        task.finish(1)
        freed.errback(Failure(RuntimeError("worker trouble")))
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        w.runNow = True
        self.assertEqual(self.successResultOf(q.call(lambda: 2)), 2)


class SubmitTests(SynchronousTestCase):
    """
    L{TaskQueue.submit} with tasks made elsewhere.
    """

    def test_cancelledBeforeSubmit(self) -> None:
        """
        A task cancelled before it is submitted is not queued: its Deferred
        has failed already, and the queue does not wait for it.
        """
        q = TaskQueue()
        task: Task[Any] = Task(print)
        task.d.cancel()
        d = q.submit(task)
        self.failureResultOf(d, CancelledError)
        self.assertEqual(q.pending(), 0)
        self.successResultOf(q.whenIdle())
        self.successResultOf(q.shutdown())

    def test_cancelledBeforeSubmitWithWorkers(self) -> None:
        """
        With a busy worker too, such a task leaves nothing behind.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        q.call(lambda: None)
        task: Task[Any] = Task(print)
        task.d.cancel()
        q.submit(task).addErrback(lambda _: None)
        runner.performAll()
        stopped = q.shutdown()
        runner.performAll()
        self.successResultOf(stopped)

    def test_submitTwice(self) -> None:
        """
        A task can be submitted once.
        """
        q = TaskQueue()
        task: Task[Any] = Task(print)
        q.submit(task)
        self.assertRaises(ValueError, q.submit, task)
        self.assertEqual(q.pending(), 1)

    def test_freeWorkerStartsAtOnce(self) -> None:
        """
        With a free worker and nothing queued, a call goes to the worker
        without passing through the queue's heap.
        """
        q = TaskQueue()
        worker = FakeWorker()
        q.attachWorker(worker)
        pushed: list[Any] = []
        push = heapq.heappush

        def heappush(heap: list[Any], item: Any) -> None:
            pushed.append(item)
            push(heap, item)

        self.patch(taskqueue.heapq, "heappush", heappush)
        q.call(lambda: None)
        self.assertEqual(len(worker.received), 1)
        self.assertEqual(pushed, [])
        q.call(lambda: None)
        self.assertEqual(len(pushed), 1)
