"""
Unit tests for L{asynqueue.mailbox}: calls from threads to the reactor, many
per wake-up. The reactor is a stand-in whose C{callFromThread} only records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.base import ReactorBase
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import Task, ThreadWorker
from asynqueue._util import globalReactor
from asynqueue.mailbox import (
    GIVE_WAY_AFTER,
    TIMER_LATE_AFTER,
    Mailbox,
    mailboxFor,
)
from asynqueue.workers import MemoryJobRunner


class RecordingReactor:
    """
    A C{callFromThread} that keeps what it is given, for the test to run.
    """

    def __init__(self) -> None:
        self.asked: list[Callable[[], object]] = []

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        self.asked.append(lambda: f(*args))

    def runAsked(self) -> None:
        asked, self.asked = self.asked, []
        for f in asked:
            f()


class MailboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = RecordingReactor()
        self.mailbox = Mailbox(self.reactor.callFromThread)
        self.ran: list[object] = []

    def test_oneWakeUpForCallsThatArriveTogether(self) -> None:
        """
        Calls posted before the reactor runs the first ask it once, and all
        run in the order they were posted.
        """
        for n in range(5):
            self.mailbox.post(self.ran.append, n)
        self.assertEqual(len(self.reactor.asked), 1)
        self.assertEqual(self.ran, [])
        self.reactor.runAsked()
        self.assertEqual(self.ran, [0, 1, 2, 3, 4])

    def test_askedAgainAfterARun(self) -> None:
        """
        A call posted after a run has started asks for another run: none is
        left waiting.
        """
        self.mailbox.post(self.ran.append, 1)
        self.reactor.runAsked()
        self.mailbox.post(self.ran.append, 2)
        self.assertEqual(len(self.reactor.asked), 1)
        self.reactor.runAsked()
        self.assertEqual(self.ran, [1, 2])

    def test_postedDuringARun(self) -> None:
        """
        A call posted by a call being run (from the reactor thread, or by a
        thread meanwhile) runs too, after the calls posted before it.
        """

        def postMore() -> None:
            self.ran.append("first")
            self.mailbox.post(self.ran.append, "posted during the run")

        self.mailbox.post(postMore)
        self.mailbox.post(self.ran.append, "second")
        self.reactor.runAsked()
        self.assertEqual(self.ran, ["first", "second", "posted during the run"])
        # The run asked for meanwhile finds nothing left: harmless.
        self.reactor.runAsked()
        self.assertEqual(len(self.ran), 3)

    def test_errorLoggedAndTheRestRun(self) -> None:
        """
        A call that raises is logged, as C{callFromThread} would, and the
        calls after it still run.
        """
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def fails() -> None:
            raise ZeroDivisionError("boom")

        self.mailbox.post(fails)
        self.mailbox.post(self.ran.append, "after")
        self.reactor.runAsked()
        self.assertEqual(self.ran, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(any("log_failure" in event for event in events))


class GiveWayTests(SynchronousTestCase):
    """
    L{Mailbox.giveWay}: a thread between two tasks waits for a reactor that
    has been kept from its results, and only then.
    """

    def setUp(self) -> None:
        self.reactor = RecordingReactor()
        self.time = 100.0
        self.mailbox = Mailbox(self.reactor.callFromThread, now=lambda: self.time)
        self.ran: list[object] = []

    def test_nothingAsked(self) -> None:
        """
        With no run asked of the reactor, nobody waits.
        """
        self.assertFalse(self.mailbox.giveWay(most=60))

    def test_askedJustNow(self) -> None:
        """
        A run asked no longer than C{after} ago is the reactor's normal
        wake-up, not a reactor kept from its results: nobody waits.
        """
        self.mailbox.post(self.ran.append, 1)
        self.time += GIVE_WAY_AFTER
        self.assertFalse(self.mailbox.giveWay(most=60))

    def test_afterTheRun(self) -> None:
        """
        Once the reactor has run what was asked, nobody waits, however long
        it took.
        """
        self.mailbox.post(self.ran.append, 1)
        self.time += 1
        self.reactor.runAsked()
        self.assertFalse(self.mailbox.giveWay(most=60))

    def test_waitsForTheRun(self) -> None:
        """
        A thread that finds the reactor behind waits until the reactor has
        run every call posted, then goes on.
        """
        self.mailbox.post(self.ran.append, "result")
        self.time += 1
        seen: list[object] = []

        def worker() -> None:
            seen.append(self.mailbox.giveWay(most=60))
            seen.append(list(self.ran))

        thread = threading.Thread(target=worker)
        thread.start()
        # Until the thread waits (bounded, should it return at once).
        for _ in range(10000):
            if self.mailbox._ran is not None or not thread.is_alive():
                break
            thread.join(0.001)
        self.assertTrue(thread.is_alive(), "returned without waiting")
        self.reactor.runAsked()
        thread.join(10)
        self.assertFalse(thread.is_alive(), "still waiting after the run")
        self.assertEqual(seen, [True, ["result"]])
        self.assertIsNone(self.mailbox._ran)

    def test_waitBounded(self) -> None:
        """
        A thread waits at most C{most} seconds, and the next run drops what
        it waited on.
        """
        self.mailbox.post(self.ran.append, 1)
        self.time += 1
        self.assertTrue(self.mailbox.giveWay(most=0))
        self.reactor.runAsked()
        self.assertIsNone(self.mailbox._ran)
        self.assertEqual(self.ran, [1])


class FakeLoop(ReactorBase):
    """
    Twisted's own reactor base with no waker and a clock of the test's:
    its timers are really kept, never run.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__()

    def installWaker(self) -> None:
        pass

    def seconds(self) -> float:
        return self.now


class LateTimerTests(SynchronousTestCase):
    """
    L{Mailbox.giveWay} looking at a Twisted loop's timers: a thread that
    finds the earliest more than C{timerAfter} seconds late (the reactor
    waits for the GIL it holds) asks a run of the reactor, which it makes in
    the timer's turn, and waits until it has ended.
    """

    def setUp(self) -> None:
        self.reactor = RecordingReactor()
        self.loop = FakeLoop()
        self.loop.running = True
        self.time = 100.0
        self.mailbox = Mailbox(
            self.reactor.callFromThread, now=lambda: self.time, timers=self.loop
        )

    def _late(self, seconds: float) -> None:
        # A timer due in a second, and the loop's clock that much past it.
        self.loop.callLater(2, list)
        self.loop.callLater(1, list)
        self.loop.timeout()  # (Where the reactor takes new calls into its heap.)
        self.loop.now += 1 + seconds

    def test_notLate(self) -> None:
        """
        With no run asked and no timer, or the earliest less than
        C{timerAfter} late, nobody waits and nothing is asked.
        """
        self.assertFalse(self.mailbox.giveWay(most=0))
        self._late(TIMER_LATE_AFTER / 2)
        self.assertFalse(self.mailbox.giveWay(most=0))
        self.assertEqual(self.reactor.asked, [])

    def test_waitsForTheTimersTurn(self) -> None:
        """
        A thread that finds a timer late asks one run of the reactor, and
        waits until it has ended.
        """
        self._late(2 * TIMER_LATE_AFTER)
        seen: list[bool] = []
        thread = threading.Thread(target=lambda: seen.append(self.mailbox.giveWay()))
        thread.start()
        for _ in range(10000):
            if self.reactor.asked or not thread.is_alive():
                break
            thread.join(0.001)
        self.assertTrue(thread.is_alive(), "returned without waiting")
        self.assertEqual(len(self.reactor.asked), 1)
        self.reactor.runAsked()
        thread.join(10)
        self.assertFalse(thread.is_alive(), "still waiting after the run")
        self.assertEqual(seen, [True])
        self.assertIsNone(self.mailbox._ran)
        self.assertFalse(self.mailbox._asked)

    def test_waitBounded(self) -> None:
        """
        The wait for a late timer's turn is bounded by C{most} too, and a
        second thread meanwhile finds the run asked (just now) and does not
        ask another.
        """
        self._late(1)
        self.assertTrue(self.mailbox.giveWay(most=0))
        self.assertFalse(self.mailbox.giveWay(most=0))
        self.assertEqual(len(self.reactor.asked), 1)
        self.reactor.runAsked()
        self.assertIsNone(self.mailbox._ran)

    def test_askedRunDecides(self) -> None:
        """
        While a run is asked, its age decides, not the timers: a run asked
        just now is the reactor's normal wake-up.
        """
        self._late(1)
        self.mailbox.post(list, ())
        self.assertFalse(self.mailbox.giveWay(most=0))

    def test_notRunning(self) -> None:
        """
        The timers of a reactor that is not running (stopped, or not yet
        started) run at no time soon: nobody waits for them.
        """
        self._late(1)
        self.loop.running = False
        self.assertFalse(self.mailbox.giveWay(most=0))
        self.assertEqual(self.reactor.asked, [])

    def test_notTwistedsLoop(self) -> None:
        """
        A reactor whose timers are not Twisted's own heap (a C{Clock}, a
        test's stand-in) is not looked at.
        """
        for other in (Clock(), RecordingReactor()):
            self.assertIsNone(Mailbox(self.reactor.callFromThread, timers=other)._loop)

    def test_mailboxForLooksAtTimers(self) -> None:
        """
        The reactor's shared mailbox looks at its timers.
        """
        mailbox = mailboxFor(self.loop)
        self._late(1)
        self.assertTrue(mailbox.giveWay(most=0))
        self.assertEqual(len(self.loop.threadCallQueue), 1)


class WorkerGivesWayTests(SynchronousTestCase):
    """
    A L{ThreadWorker} whose results go through a mailbox gives way to the
    reactor between a task and the one given ahead of time, not otherwise.
    """

    def setUp(self) -> None:
        self.reactor = RecordingReactor()
        self.mailbox = Mailbox(self.reactor.callFromThread)
        self.gaveWay: list[int] = []
        self.mailbox.giveWay = self._giveWay  # type: ignore[method-assign]
        self.runner = MemoryJobRunner()
        self.worker = ThreadWorker(runner=self.runner, callFromThread=self.mailbox.post)
        self.freed: list[object] = []

    def _giveWay(self, after: float = 0, most: float = 0) -> bool:
        self.gaveWay.append(len(self.worker._pending))
        return False

    def _give(self, n: int) -> None:
        task: Task[int] = Task(lambda: n, (), {})
        self.worker.give(task, lambda worker, task: self.freed.append(task))

    def test_betweenATaskAndTheNext(self) -> None:
        """
        With a task given ahead, the thread looks whether to give way once
        it has handed the first result over; with none, it does not.
        """
        self._give(1)
        self._give(2)
        self.runner.perform()
        self.assertEqual(self.gaveWay, [1])
        self.runner.perform()
        self.assertEqual(self.gaveWay, [1])
        self.reactor.runAsked()
        self.assertEqual(len(self.freed), 2)

    def test_giveWayBetweenSteps(self) -> None:
        """
        L{ThreadWorker.giveWay} (for a long task's steps) asks the mailbox
        each time, whether or not a run is asked of the reactor: a timer of
        the reactor's may be due (L{Mailbox.giveWay} decides).
        """
        self.assertFalse(self.worker.giveWay())
        self.assertEqual(len(self.gaveWay), 1)
        self.mailbox.post(self.freed.append, "result")
        self.assertFalse(self.worker.giveWay())
        self.assertEqual(len(self.gaveWay), 2)

    def test_notWithoutAMailbox(self) -> None:
        """
        A worker given a plain C{callFromThread} never gives way.
        """
        worker = ThreadWorker(
            runner=MemoryJobRunner(), callFromThread=self.reactor.callFromThread
        )
        self.assertIsNone(worker._mailbox)
        self.assertFalse(worker.giveWay())


class MailboxForTests(SynchronousTestCase):
    def test_oneMailboxPerReactor(self) -> None:
        """
        Every worker of a reactor posts to the same mailbox; another reactor
        has its own.
        """
        one, other = RecordingReactor(), RecordingReactor()
        self.assertIs(mailboxFor(one), mailboxFor(one))
        self.assertIsNot(mailboxFor(one), mailboxFor(other))

    def test_threadWorkersShareTheReactorsMailbox(self) -> None:
        """
        Thread workers made without a C{callFromThread} hand their results
        to the global reactor through its one mailbox, so that results of
        several workers arriving together wake it once.
        """
        workers = [ThreadWorker(runner=MemoryJobRunner()) for _ in range(2)]
        expected = mailboxFor(globalReactor()).post
        self.assertEqual([w._callFromThread for w in workers], [expected] * 2)

    def test_givenCallFromThreadKept(self) -> None:
        """
        A C{callFromThread} given (a test's) is used as it is.
        """
        reactor = RecordingReactor()
        worker = ThreadWorker(
            runner=MemoryJobRunner(), callFromThread=reactor.callFromThread
        )
        self.assertEqual(worker._callFromThread, reactor.callFromThread)
