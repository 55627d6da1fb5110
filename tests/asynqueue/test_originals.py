"""
The original AsynQueue's behaviour that its users rely on (issue 20): a
worker class's own series, updates reaching workers attached later, fair
niceness (aging), and the original's call-tuple L{Deferator} refused
clearly. Deterministic: fake and single-stepped workers, a L{Clock}.

The fairness oracles follow the rule as documented in
docs/concepts/queue.md, never the queue's internals.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import (
    AsyncWorker,
    Deferator,
    ProcessQueue,
    ProcessWorker,
    TaskQueue,
    ThreadWorker,
    UnknownSeries,
)

from .helpers import FakeWorker, Recorder, memoryWorker

#: The documented aging rule: within its band, a call of niceness n sorts
#: as if made n * 16 calls later (docs/concepts/queue.md).
STEP = 16


class ClassSeriesTests(SynchronousTestCase):
    """
    C{series="thread"} / C{"process"} name every worker of that class, as
    the original's C{cQualified} did; an unknown series fails at once.
    """

    def test_threadSeries(self) -> None:
        """
        A ThreadWorker runs calls of series "thread" and "local" without
        being told so.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        d = q.call(lambda: "ran", series="thread")
        d2 = q.call(lambda: "local", series="local")
        runner.performAll()
        self.assertEqual(self.successResultOf(d), "ran")
        self.assertEqual(self.successResultOf(d2), "local")

    def test_classSeries(self) -> None:
        """
        Each worker class names its own series; "process" is not a thread's.
        """
        self.assertIn("thread", ThreadWorker.cQualified)
        self.assertIn("process", ProcessWorker.cQualified)
        self.assertNotIn("process", ThreadWorker.cQualified)

    def test_unknownSeriesFailsAtOnce(self) -> None:
        """
        A series no attached worker runs fails at once with
        L{UnknownSeries} naming it, rather than waiting forever; the queue
        goes on.
        """
        q = TaskQueue()
        worker, runner = memoryWorker()
        q.attachWorker(worker)
        d = q.call(lambda: "never", series="process")
        failure = self.failureResultOf(d, UnknownSeries)
        self.assertIn("'process'", str(failure.value))
        self.assertEqual(q.pending(), 0)
        ok = q.call(lambda: "ok")
        runner.performAll()
        self.assertEqual(self.successResultOf(ok), "ok")
        self.successResultOf(q.whenIdle())

    def test_noWorkerAtAll(self) -> None:
        """
        With no worker attached, a series call fails at once too.
        """
        q = TaskQueue()
        self.failureResultOf(q.call(lambda: None, series="db"), UnknownSeries)

    def test_lastQualifiedDetached(self) -> None:
        """
        A series call still queued when the last worker qualified for it is
        detached fails with L{UnknownSeries} once that worker has left.
        """
        q = TaskQueue()
        special = q.attachWorker(FakeWorker(["db"], name="special"))
        q.attachWorker(FakeWorker(name="plain"))
        rec = Recorder()
        running = q.call(rec, "first", series="db")
        queued = q.call(rec, "second", series="db")
        detached = q.detachWorker(special)
        self.assertNoResult(queued)
        special.succeed("first")
        self.assertEqual(self.successResultOf(running), "first")
        self.successResultOf(detached)
        failure = self.failureResultOf(queued, UnknownSeries)
        self.assertIn("detached", str(failure.value))


class LaterWorkerUpdateTests(SynchronousTestCase):
    """
    L{TaskQueue.update} reaches workers attached later, before their first
    call (the original's per-thread setup pattern).
    """

    def test_laterWorker(self) -> None:
        """
        A worker attached after an update runs it first, then queued calls.
        """
        q = TaskQueue()
        first, firstRunner = memoryWorker()
        q.attachWorker(first)
        order: list[tuple[str, str]] = []

        def setUp(tag: str) -> str:
            order.append(("update", tag))
            return tag

        self.assertEqual(
            self.successResultOf(_run(q.update(setUp, "x"), firstRunner)), ["x"]
        )
        later, laterRunner = memoryWorker()
        q.attachWorker(later)
        laterRunner.performAll()
        self.assertEqual(order, [("update", "x"), ("update", "x")])

    def test_threadLocalPattern(self) -> None:
        """
        The original's pattern: an update sets a thread-local value, and a
        call on a worker attached later sees it.
        """
        import threading

        local = threading.local()
        q = TaskQueue()

        def setUp(value: str) -> None:
            local.value = value

        self.successResultOf(q.update(setUp, "x"))
        worker = q.attachWorker(ThreadWorker(callFromThread=_sync, runner=_Inline()))
        d = q.call(lambda: getattr(local, "value", None))
        self.assertEqual(self.successResultOf(d), "x")
        self.assertIsInstance(worker, ThreadWorker)

    def test_laterFailureLogged(self) -> None:
        """
        An update failing on a worker attached later is logged, and the
        worker goes on with its calls.
        """
        q = TaskQueue()

        def broken() -> None:
            raise ValueError("no setup")

        self.successResultOf(q.update(broken))
        worker = FakeWorker()
        worker.runNow = True
        q.attachWorker(worker)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.successResultOf(q.call(lambda: 3)), 3)


class _Inline:
    """
    A job runner that runs each job at once, in the caller's thread.
    """

    quitted = False

    def do(self, job: Any) -> None:
        job()

    def quit(self, then: Any = None) -> None:
        self.quitted = True
        if then is not None:
            then()


def _sync(f: Any, *args: Any) -> None:
    f(*args)


def _run(d: Deferred[Any], runner: Any) -> Deferred[Any]:
    runner.performAll()
    return d


class Line:
    """
    One worker in the reactor; each call takes a second on the clock and
    records when it was made and when it started.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.q = TaskQueue(clock=self.clock)
        self.q.attachWorker(AsyncWorker())
        self.made: list[tuple[int, float]] = []
        self.started: list[tuple[int, float]] = []
        self.running: list[Deferred[None]] = []

    def job(self, label: int) -> Deferred[None]:
        self.started.append((label, self.clock.seconds()))
        d: Deferred[None] = Deferred()
        self.running.append(d)
        return d

    def make(self, niceness: int) -> int:
        label = len(self.made)
        self.made.append((niceness, self.clock.seconds()))
        self.q.call(self.job, label, niceness=niceness)
        return label

    def step(self) -> bool:
        if not self.running:
            return False
        self.clock.advance(1)
        self.running.pop(0).callback(None)
        return True


class FairnessTests(SynchronousTestCase):
    """
    Niceness never starves a call, and a burst still runs lower niceness
    first.
    """

    def test_endlessStream(self) -> None:
        """
        A nice=20 call behind an endless stream of nice=-20 calls (two made
        for each one run) starts within 40 * 16 calls' time.
        """
        line = Line()
        line.make(0)  # keeps the worker busy
        patient = line.make(20)
        for _ in range(2000):
            line.make(-20)
            line.make(-20)
            line.step()
            if any(label == patient for label, _ in line.started):
                break
        [when] = [t for label, t in line.started if label == patient]
        self.assertLessEqual(when, 40 * STEP + 1)

    def test_burst(self) -> None:
        """
        Calls made while the worker is busy, {STEP} or fewer, run in order
        of niceness, then first in, first out.
        """
        line = Line()
        line.make(0)
        nicenesses = [5, -3, 20, -3, 0, -20, 7, 5, 19, -19, 1, 2, 3, 4, 0, 9]
        labels = [line.make(n) for n in nicenesses]
        while line.step():
            pass
        order = [label for label, _ in line.started[1:]]
        expected = sorted(labels, key=lambda label: (line.made[label][0], label))
        self.assertEqual(order, expected)

    def test_originalExample(self) -> None:
        """
        The issue's example: a nice=0 call made after ten nice=10 calls (the
        worker busy) runs first of them.
        """
        line = Line()
        line.make(0)
        for _ in range(10):
            line.make(10)
        urgent = line.make(0)
        line.step()
        self.assertEqual(line.started[1][0], urgent)

    @settings(max_examples=150, deadline=None)
    @given(
        first=st.lists(st.integers(-20, 20), max_size=40),
        rounds=st.lists(st.lists(st.integers(-20, 20), max_size=4), max_size=120),
    )
    def test_noUnboundedWait(self, first: list[int], rounds: list[list[int]]) -> None:
        """
        Under any mix of niceness, a call made C{k} calls after another
        starts before it only if C{k < 16 * (its niceness - the later
        one's)}: at most 639 later calls ever pass a call, so its wait is
        bounded by the calls ahead of it when made plus 640.
        """
        line = Line()
        for n in first:
            line.make(n)
        for made in rounds:
            for n in made:
                line.make(n)
            line.step()
        while line.step():
            pass
        startedAt = {label: i for i, (label, _) in enumerate(line.started)}
        self.assertEqual(len(startedAt), len(line.made))
        for a, (na, _) in enumerate(line.made):
            overtakers = [
                b for b in range(a + 1, len(line.made)) if startedAt[b] < startedAt[a]
            ]
            for b in overtakers:
                nb = line.made[b][0]
                self.assertLess(b - a, STEP * (na - nb), (a, b))
            self.assertLess(len(overtakers), 40 * STEP)
            # In seconds: at most every call made before it, plus the
            # later ones that may pass it.
            waited = line.started[startedAt[a]][1] - line.made[a][1]
            self.assertLessEqual(waited, a + len(overtakers) + 1)


class CallTupleDeferatorTests(SynchronousTestCase):
    """
    The original's C{Deferator("repr", getNext, ...)} is refused clearly.
    """

    def test_callTupleForm(self) -> None:
        """
        A string first and a callable second: TypeError naming the form.
        """

        def getNext() -> Deferred[Any]:
            raise AssertionError("never called")

        with self.assertRaises(TypeError) as cm:
            Deferator("rep", getNext)  # type: ignore[arg-type]
        self.assertIn("call-tuple", str(cm.exception))

    def test_stringItems(self) -> None:
        """
        A string as the items is refused too: it would hand out characters.
        """
        with self.assertRaises(TypeError):
            Deferator("abc")


class MainFunctionTests(SynchronousTestCase):
    """
    A C{ProcessQueue} refuses a function of C{__main__} that is not at its
    top level at C{call()} time, saying to move it to a module (the child
    process can't find it). Top-level ones run: see test_mainprocess.
    """

    def test_refusedAtCall(self) -> None:
        """
        The TypeError comes from C{call()} itself, names the function and
        the fix; nothing is queued and no process is started.
        """

        def analyze() -> None:
            pass

        analyze.__module__ = "__main__"
        q = ProcessQueue(1, clock=Clock())
        with self.assertRaises(TypeError) as cm:
            q.call(analyze)
        self.assertIn("__main__", str(cm.exception))
        self.assertIn("move it to a module", str(cm.exception))
        self.assertEqual(q.pending(), 0)
        self.successResultOf(q.shutdown())
