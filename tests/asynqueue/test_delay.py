"""
Unit tests for L{asynqueue.delay.Delay}, on a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import Delay


class Checker:
    """
    A check that turns true on its C{n}th call, noting when it was called.
    """

    def __init__(self, clock: Clock, n: int) -> None:
        self.clock = clock
        self.n = n
        self.times: list[float] = []

    def __call__(self) -> bool:
        self.times.append(self.clock.seconds())
        return len(self.times) >= self.n


class DelayTests(SynchronousTestCase):
    """
    Polling at growing intervals until true or timed out.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_trueAtOnce(self) -> None:
        """
        A check that is true at once fires C{True} without waiting.
        """
        checker = Checker(self.clock, 1)
        d = Delay(clock=self.clock).untilEvent(checker)
        self.assertIs(self.successResultOf(d), True)
        self.assertEqual(checker.times, [0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backoff(self) -> None:
        """
        Each wait is C{backoff} times the one before.
        """
        checker = Checker(self.clock, 4)
        d = Delay(interval=1.0, backoff=2.0, clock=self.clock).untilEvent(checker)
        self.clock.pump([0.5] * 20)
        self.assertIs(self.successResultOf(d), True)
        self.assertEqual(checker.times, [0, 1, 3, 7])

    def test_timeout(self) -> None:
        """
        Time running out fires C{False}, with the last check on the deadline.
        """
        checker = Checker(self.clock, 1000)
        d = Delay(interval=1.0, backoff=2.0, timeout=5, clock=self.clock).untilEvent(
            checker
        )
        self.clock.pump([1] * 10)
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual(checker.times, [0, 1, 3, 5])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deferredCheck(self) -> None:
        """
        A check may return a Deferred; the next check waits for it.
        """
        answers: list[Deferred[bool]] = []

        def check() -> Deferred[bool]:
            answers.append(Deferred())
            return answers[-1]

        d = Delay(interval=1, clock=self.clock).untilEvent(check)
        self.clock.advance(10)
        self.assertEqual(len(answers), 1)
        answers[0].callback(False)
        self.clock.advance(1)
        self.assertEqual(len(answers), 2)
        answers[1].callback(True)
        self.assertIs(self.successResultOf(d), True)

    def test_coroutineCheck(self) -> None:
        """
        A check may be a coroutine function.
        """
        async def check() -> bool:
            return True

        self.assertTrue(self.successResultOf(Delay(clock=self.clock).untilEvent(check)))

    def test_checkRaises(self) -> None:
        """
        A check that raises fails the Deferred and stops the polling.
        """
        def check() -> bool:
            raise OSError("gone")

        d = Delay(clock=self.clock).untilEvent(check)
        self.failureResultOf(d, OSError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        """
        Cancelling stops the polling.
        """
        checker = Checker(self.clock, 1000)
        d = Delay(interval=1, clock=self.clock).untilEvent(checker)
        self.clock.advance(1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(len(checker.times), 2)

    def test_call(self) -> None:
        """
        Calling a Delay waits C{interval}, or the seconds given; cancelling
        the wait cancels its timer.
        """
        delay = Delay(interval=2, clock=self.clock)
        d1, d2 = delay(), delay(5)
        self.clock.advance(2)
        self.successResultOf(d1)
        self.assertNoResult(d2)
        self.clock.advance(3)
        self.successResultOf(d2)
        d3 = delay()
        d3.cancel()
        self.failureResultOf(d3, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badParameters(self) -> None:
        """
        Out-of-range parameters and a non-callable check are refused.
        """
        self.assertRaises(ValueError, Delay, interval=0)
        self.assertRaises(ValueError, Delay, backoff=0.5)
        self.assertRaises(ValueError, Delay, backoff=3)
        self.assertRaises(ValueError, Delay, timeout=0)
        self.assertRaises(TypeError, Delay(clock=self.clock).untilEvent, 42)
