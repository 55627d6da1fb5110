"""
Unit tests for L{asynqueue.mailbox}: calls from threads to the reactor, many
per wake-up. The reactor is a stand-in whose C{callFromThread} only records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import ThreadWorker
from asynqueue._util import globalReactor
from asynqueue.mailbox import Mailbox, mailboxFor
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
