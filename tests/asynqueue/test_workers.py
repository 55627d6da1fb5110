"""
Unit tests for the workers: L{ThreadWorker} (single-stepped), L{AsyncWorker},
L{MemoryJobRunner}, and every L{IWorker} implementation's interface; plus
L{Info}.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from asynqueue import (
    AsIs,
    AsyncWorker,
    Deferator,
    Info,
    IWorker,
    ListConsumer,
    ProcessWorker,
    Task,
    TaskQueue,
    ThreadWorker,
    WorkerError,
    iteratorToProducer,
)
from asynqueue.workers import JobThread, MemoryJobRunner

from .helpers import FakeWorker, cyclicGarbage, memoryWorker, ours


class InterfaceTests(SynchronousTestCase):
    """
    Every worker provides L{IWorker}.
    """

    @staticmethod
    def boomTask(o: object) -> bool:
        return isinstance(o, Task) and o.f is _boom

    def test_threadWorker(self) -> None:
        """
        L{ThreadWorker} provides IWorker.
        """
        verifyClass(IWorker, ThreadWorker)
        verifyObject(IWorker, memoryWorker()[0])

    def test_asyncWorker(self) -> None:
        """
        L{AsyncWorker} provides IWorker.
        """
        verifyObject(IWorker, AsyncWorker())

    def test_fakeWorker(self) -> None:
        """
        The tests' fake worker provides IWorker too.
        """
        verifyObject(IWorker, FakeWorker())


class ThreadWorkerTests(SynchronousTestCase):
    """
    A thread worker, its thread replaced by a L{MemoryJobRunner}.
    """

    def test_callRunsInRunner(self) -> None:
        """
        L{ThreadWorker.call} runs in the worker's runner and gives the result
        or the failure.
        """
        worker, runner = memoryWorker()
        d1 = worker.call(lambda: 3)

        def boom() -> None:
            raise ValueError("x")

        d2 = worker.call(boom)
        self.assertNoResult(d1)
        runner.performAll()
        self.assertEqual(self.successResultOf(d1), 3)
        self.failureResultOf(d2, ValueError)

    def test_stopAfterQueuedJobs(self) -> None:
        """
        Stopping lets jobs already given finish; later calls fail with
        L{WorkerError}; stopping twice is fine.
        """
        worker, runner = memoryWorker()
        d = worker.call(lambda: "before")
        stopped = worker.stop()
        self.failureResultOf(worker.call(lambda: "after"), WorkerError)
        self.assertNoResult(stopped)
        runner.performAll()
        self.assertEqual(self.successResultOf(d), "before")
        self.successResultOf(stopped)
        self.successResultOf(worker.stop())
        self.assertTrue(runner.quitted)

    def test_runAfterStop(self) -> None:
        """
        A stopped worker refuses tasks.
        """
        worker, _ = memoryWorker()
        worker.stop()
        self.assertRaises(RuntimeError, worker.run, Task(print))

    def test_crash(self) -> None:
        """
        Crashing hands back the task in progress and stops the worker.
        """
        q = TaskQueue()
        worker, _runner = memoryWorker()
        q.attachWorker(worker)
        q.call(print)
        tasks = worker.crash()
        self.assertEqual(len(tasks), 1)
        self.assertEqual(worker.crash(), [])

    def test_series(self) -> None:
        """
        A worker's series qualify it.
        """
        worker, _ = memoryWorker(["a", "b"])
        self.assertEqual(worker.iQualified, ["a", "b"])

    def test_openIterationAfterStop(self) -> None:
        """
        An iteration still open when its worker stops fails on its next
        fetch with L{WorkerError} instead of waiting forever.
        """
        q = TaskQueue()
        worker, runner = memoryWorker(batchSize=2)
        q.attachWorker(worker)
        d = q.call(lambda: iter(range(100)))
        runner.performAll()
        dr = self.successResultOf(d)
        stopped = q.shutdown()
        runner.performAll()
        self.successResultOf(stopped)
        got: list[Any] = []
        for itemD in dr:
            runner.performAll()
            itemD.addCallbacks(got.append, lambda f: got.append(f.value))
            if isinstance(got[-1], Exception):
                break
        self.assertIsInstance(got[-1], WorkerError)

    def test_repr(self) -> None:
        """
        The repr names the thread.
        """
        worker = ThreadWorker(name="repr-test", runner=JobThread("repr-test"))
        self.assertIn("repr-test", repr(worker))


class BatchSizeTests(SynchronousTestCase):
    """
    A batch size below 1 would fetch empty batches for ever: every worker,
    and L{iteratorToProducer}, refuses it when made.
    """

    def test_refused(self) -> None:
        """
        C{batchSize} 0 or less is a C{ValueError} naming it; one that is not
        an int, a C{TypeError}.
        """
        makers = [
            lambda size: ThreadWorker(batchSize=size, runner=MemoryJobRunner()),
            lambda size: AsyncWorker(batchSize=size),
            lambda size: ProcessWorker(batchSize=size),
            lambda size: iteratorToProducer([1], ListConsumer(), batchSize=size),
        ]
        for make in makers:
            for bad in (0, -1):
                e = self.assertRaises(ValueError, make, bad)
                self.assertIn("batchSize", str(e))
            for wrong in (1.5, "10", None, True):
                self.assertRaises(TypeError, make, wrong)


class HoldingWorker(ThreadWorker):
    """
    Records what L{ThreadWorker.holdChanged} tells it.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.holds: list[bool] = []

    def holdChanged(self, held: bool) -> None:
        self.holds.append(held)


class HoldChangedTests(SynchronousTestCase):
    """
    L{ThreadWorker.holdChanged} says when an iteration starts and stops
    holding a worker with C{holdIterations}.
    """

    def worker(self, **kw: Any) -> tuple[TaskQueue, HoldingWorker, MemoryJobRunner]:
        runner = MemoryJobRunner()
        worker = HoldingWorker(
            runner=runner, callFromThread=lambda f, *a: f(*a), batchSize=2, **kw
        )
        q = TaskQueue()
        q.attachWorker(worker)
        return q, worker, runner

    def test_heldUntilExhausted(self) -> None:
        """
        True when the call delivers an open iteration, False once its
        source is exhausted, after the queue heard that the worker is free.
        """
        q, worker, runner = self.worker(holdIterations=True)
        d = q.call(lambda: iter(range(20)))
        runner.performAll()
        dr = self.successResultOf(d)
        self.assertEqual(worker.holds, [True])
        items = []
        for itemD in dr:
            runner.performAll()
            items.append(self.successResultOf(itemD))
        self.assertEqual(items, list(range(20)))
        self.assertEqual(worker.holds, [True, False])
        self.assertIsNone(worker.task)

    def test_heldUntilStopped(self) -> None:
        """
        Stopping the iteration ends the hold.
        """
        q, worker, runner = self.worker(holdIterations=True)
        d = q.call(lambda: iter(range(100)))
        runner.performAll()
        self.successResultOf(d).stop()
        runner.performAll()
        self.assertEqual(worker.holds, [True, False])

    def test_heldUntilDropped(self) -> None:
        """
        An iteration dropped unfinished ends the hold once it is collected
        and closed.
        """
        q, worker, runner = self.worker(holdIterations=True)
        d = q.call(lambda: iter(range(100)))
        runner.performAll()
        d.addCallback(lambda _: None)
        gc.collect()
        runner.performAll()
        self.assertEqual(worker.holds, [True, False])
        self.assertIsNone(worker.task)

    def test_notHeld(self) -> None:
        """
        Nothing is said for an iteration done in its first batch, for other
        results, or without C{holdIterations}.
        """
        q, worker, runner = self.worker(holdIterations=True)
        q.call(lambda: iter(range(1)))
        q.call(lambda: 3)
        runner.performAll()
        q2, worker2, runner2 = self.worker()
        q2.call(lambda: iter(range(100)))
        runner2.performAll()
        self.assertEqual(worker.holds, [])
        self.assertEqual(worker2.holds, [])


class AsIsTests(SynchronousTestCase):
    """
    A task that returns L{AsIs} gives its caller the value as it is.
    """

    @staticmethod
    def boomTask(o: object) -> bool:
        return isinstance(o, Task) and o.f is _boom

    def test_threadWorker(self) -> None:
        """
        An iterator wrapped in L{AsIs} is delivered itself, not as a
        L{Deferator}, even to a call with a consumer.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        it = iter(range(3))
        d1 = q.call(lambda: AsIs(it))
        consumer = ListConsumer()
        d2 = q.call(lambda: AsIs(it), consumer=consumer)
        d3 = q.call(lambda: AsIs(5))
        runner.performAll()
        self.assertIs(self.successResultOf(d1), it)
        self.assertIs(self.successResultOf(d2), it)
        self.assertEqual(consumer.items, [])
        self.assertEqual(self.successResultOf(d3), 5)

    def test_asyncWorker(self) -> None:
        """
        The same on an L{AsyncWorker}, also from a Deferred.
        """
        q = TaskQueue()
        q.attachWorker(AsyncWorker())
        it = iter(range(3))
        self.assertIs(self.successResultOf(q.call(lambda: AsIs(it))), it)
        inner: Deferred[Any] = Deferred()
        d = q.call(lambda: inner)
        inner.callback(AsIs(it))
        self.assertIs(self.successResultOf(d), it)

    def test_fakeWorker(self) -> None:
        """
        L{Task.finish} unwraps it, whatever the worker.
        """
        q = TaskQueue()
        worker = q.attachWorker(FakeWorker())
        d = q.call(print)
        worker.succeed(AsIs([1]))
        self.assertEqual(self.successResultOf(d), [1])

    def test_repr(self) -> None:
        """
        It shows what it wraps.
        """
        self.assertEqual(repr(AsIs([1])), "AsIs([1])")


class MemoryJobRunnerTests(SynchronousTestCase):
    """
    The test runner runs jobs only when told.
    """

    def test_quit(self) -> None:
        """
        After quit, jobs already given run, then C{then}; new jobs are
        refused.
        """
        runner = MemoryJobRunner()
        done: list[str] = []
        runner.do(lambda: done.append("job"))
        runner.quit(lambda: done.append("then"))
        self.assertRaises(WorkerError, runner.do, print)
        self.assertEqual(runner.performAll(), 2)
        self.assertEqual(done, ["job", "then"])
        self.assertFalse(runner.perform())


class JobThreadTests(SynchronousTestCase):
    """
    The thread that runs a L{ThreadWorker}'s jobs.
    """

    def test_quit(self) -> None:
        """
        After quit, the jobs already given run in order, then the first
        quit's C{then}, and the thread ends; new jobs are refused, also
        once the thread has started (when C{do} is the queue's C{put}).
        """
        runner = JobThread("jobthread-test")
        done: list[object] = []
        runner.do(lambda: done.append(1))
        runner.do(lambda: done.append(2))
        runner.quit(lambda: done.append("then"))
        runner.quit(lambda: done.append("again"))
        self.assertRaises(WorkerError, runner.do, print)
        thread = runner.thread
        assert thread is not None
        thread.join(60)
        self.assertFalse(thread.is_alive())
        self.assertEqual(done, [1, 2, "then"])


class AsyncWorkerTests(SynchronousTestCase):
    """
    The reactor-thread worker.
    """

    def setUp(self) -> None:
        self.q = TaskQueue()
        self.worker = self.q.attachWorker(AsyncWorker())

    def test_values(self) -> None:
        """
        Plain values, failures and Deferreds all come back.
        """
        self.assertEqual(self.successResultOf(self.q.call(lambda: 1)), 1)

        def boom() -> None:
            raise KeyError("k")

        self.failureResultOf(self.q.call(boom), KeyError)
        inner: Deferred[int] = Deferred()
        d = self.q.call(lambda: inner)
        self.assertNoResult(d)
        inner.callback(5)
        self.assertEqual(self.successResultOf(d), 5)

    def test_oneAtATime(self) -> None:
        """
        The next call waits for the Deferred of the one before.
        """
        inner: Deferred[int] = Deferred()
        d1 = self.q.call(lambda: inner)
        d2 = self.q.call(lambda: 2)
        self.assertNoResult(d2)
        inner.callback(1)
        self.assertEqual(self.successResultOf(d1), 1)
        self.assertEqual(self.successResultOf(d2), 2)

    def test_iterator(self) -> None:
        """
        An iterator result is a L{Deferator} fetching in the reactor.
        """
        self.worker.batchSize = 4
        dr = self.successResultOf(self.q.call(lambda: iter(range(10))))
        self.assertIsInstance(dr, Deferator)
        self.assertEqual([self.successResultOf(d) for d in dr], list(range(10)))

    def test_stop(self) -> None:
        """
        Stopping waits for the running call, then refuses new ones.
        """
        inner: Deferred[int] = Deferred()
        self.q.call(lambda: inner)
        stopped = self.worker.stop()
        self.assertNoResult(stopped)
        inner.callback(1)
        self.successResultOf(stopped)
        self.assertRaises(RuntimeError, self.worker.run, Task(print))

    def test_crash(self) -> None:
        """
        Crashing hands back the task in progress.
        """
        self.q.call(lambda: Deferred())
        self.assertEqual(len(self.worker.crash()), 1)


def _module_function(x: int) -> int:
    return x


class InfoTests(SynchronousTestCase):
    """
    Calls are described readably.
    """

    def test_function(self) -> None:
        """
        A function is named with its module and its arguments shortened.
        """
        info = Info(_module_function, (1, "x" * 100), {"n": [1, 2, 3, 4, 5, 6]})
        text = str(info)
        self.assertTrue(text.startswith(f"{__name__}._module_function(1, 'xxx"))
        self.assertIn("...", text)
        self.assertIn("n=[1, 2, 3, 4, ...]", text)
        self.assertLess(len(text), 200)
        self.assertIn("Info", repr(info))

    def test_method(self) -> None:
        """
        A bound method is named Class.method.
        """
        self.assertEqual(Info(self.test_method).name, "InfoTests.test_method")

    def test_callableObject(self) -> None:
        """
        A callable without a name is described by its repr.
        """

        class C:
            def __call__(self) -> None:
                pass

            def __repr__(self) -> str:
                return "<C>"

        self.assertEqual(Info(C()).name, "<C>")


def _boom() -> None:
    raise KeyError("k")


class CycleTests(SynchronousTestCase):
    """
    A failing task leaves no reference cycle: what it made is freed by
    reference counting as it ends, not left to the garbage collector.
    """

    @staticmethod
    def boomTask(o: object) -> bool:
        return isinstance(o, Task) and o.f is _boom

    def test_threadWorker(self) -> None:
        """
        On a L{ThreadWorker}.
        """
        worker, runner = memoryWorker()
        q = TaskQueue()
        q.attachWorker(worker)
        with cyclicGarbage() as found:
            for _ in range(5):
                d = q.call(_boom)
                runner.performAll()
                self.failureResultOf(d, KeyError)
            del d
        self.assertEqual(ours(found, self.boomTask), {})

    def test_asyncWorker(self) -> None:
        """
        On an L{AsyncWorker}.
        """
        q = TaskQueue()
        q.attachWorker(AsyncWorker())
        with cyclicGarbage() as found:
            for _ in range(5):
                self.failureResultOf(q.call(_boom), KeyError)
        self.assertEqual(ours(found, self.boomTask), {})
