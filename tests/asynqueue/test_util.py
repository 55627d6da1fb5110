"""
Unit tests for L{asynqueue._util}: the helpers shared by asynqueue (and
sAsync): follow, Waiters, checkNumber and the lazy reactor.
"""

from __future__ import annotations

import math

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue._util import (
    LazyReactor,
    Waiters,
    checkNumber,
    follow,
    globalReactor,
    reactorClock,
)


class FollowTests(SynchronousTestCase):
    """
    L{follow} fires with C{None} when its Deferred fires, never changing
    what that Deferred's own callbacks get.
    """

    def test_firesWithNone(self) -> None:
        """
        A follower fires (with C{None}) when the followed Deferred does;
        the followed one keeps its result.
        """
        d: Deferred[int] = Deferred()
        out = follow(d)
        self.assertNoResult(out)
        d.callback(7)
        self.assertIsNone(self.successResultOf(out))
        self.assertEqual(self.successResultOf(d), 7)

    def test_failureStaysWithFollowed(self) -> None:
        """
        A failure fires the follower with C{None} and stays on the followed
        Deferred, for its own callbacks to handle.
        """
        d: Deferred[None] = Deferred()
        out = follow(d)
        d.errback(Failure(KeyError("x")))
        self.assertIsNone(self.successResultOf(out))
        self.failureResultOf(d, KeyError)

    def test_firedAlready(self) -> None:
        """
        Following a Deferred that has fired already fires at once.
        """
        d: Deferred[None] = Deferred()
        d.callback(None)
        self.assertIsNone(self.successResultOf(follow(d)))

    def test_cancelFollowerOnly(self) -> None:
        """
        Cancelling a follower leaves the followed Deferred waiting.
        """
        d: Deferred[None] = Deferred()
        out = follow(d)
        out.cancel()
        self.failureResultOf(out, CancelledError)
        self.assertNoResult(d)
        d.callback(None)
        self.assertIsNone(self.successResultOf(d))


class WaitersTests(SynchronousTestCase):
    """
    L{Waiters}: Deferreds fired together.
    """

    def test_fireAll(self) -> None:
        """
        L{Waiters.fire} fires every waiting Deferred once; those that wait
        after it wait for the next call.
        """
        waiters = Waiters()
        first, second = waiters.wait(), waiters.wait()
        self.assertEqual(len(waiters), 2)
        waiters.fire()
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertEqual(len(waiters), 0)
        later = waiters.wait()
        self.assertNoResult(later)
        waiters.fire()
        self.successResultOf(later)

    def test_failAll(self) -> None:
        """
        L{Waiters.fail} fails every waiting Deferred with the failure.
        """
        waiters = Waiters()
        first, second = waiters.wait(), waiters.wait()
        waiters.fail(Failure(KeyError("x")))
        self.failureResultOf(first, KeyError)
        self.failureResultOf(second, KeyError)
        self.assertFalse(waiters)

    def test_cancelStopsWaiting(self) -> None:
        """
        A cancelled waiter stops waiting: it fails with C{CancelledError}
        and the next L{Waiters.fire} passes it over.
        """
        waiters = Waiters()
        gone, staying = waiters.wait(), waiters.wait()
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        self.assertEqual(len(waiters), 1)
        waiters.fire()
        self.successResultOf(staying)


class CheckNumberTests(SynchronousTestCase):
    """
    L{checkNumber}: a numeric argument's type and range, with a message
    naming the argument, what it should be, and what it was.
    """

    def test_passes(self) -> None:
        """
        A good value is handed back as it is.
        """
        self.assertEqual(checkNumber(3, "n", integer=True, positive=True), 3)
        self.assertEqual(
            checkNumber(-20, "niceness", integer=True, low=-20, high=20), -20
        )
        self.assertEqual(checkNumber(0.5, "timeout", positive=True), 0.5)
        self.assertEqual(checkNumber(1.0, "backoff", low=1.0, high=2.0), 1.0)
        self.assertIsNone(checkNumber(None, "timeout", positive=True, noneOk=True))

    def test_wrongType(self) -> None:
        """
        A value of the wrong type (a C{bool} included) is a C{TypeError}
        naming the argument and what it must be.
        """
        for bad in ("3", 1.5, True, None):
            e = self.assertRaises(
                TypeError, checkNumber, bad, "niceness", integer=True, low=-20, high=20
            )
            self.assertEqual(
                str(e), f"niceness must be an int from -20 to 20, not {bad!r}"
            )
        self.assertRaises(TypeError, checkNumber, "1", "timeout", positive=True)

    def test_typeErrorChosen(self) -> None:
        """
        An API whose contract is C{ValueError} for any bad value gets it for
        the wrong type too.
        """
        self.assertRaises(
            ValueError,
            checkNumber,
            1.5,
            "N",
            integer=True,
            positive=True,
            typeError=ValueError,
        )

    def test_outOfRange(self) -> None:
        """
        A value out of range, or NaN, is a C{ValueError} saying the range.
        """
        e = self.assertRaises(
            ValueError, checkNumber, 0, "N", integer=True, positive=True
        )
        self.assertEqual(str(e), "N must be a positive int, not 0")
        e = self.assertRaises(ValueError, checkNumber, 3, "backoff", low=1.0, high=2.0)
        self.assertEqual(str(e), "backoff must be a number from 1.0 to 2.0, not 3")
        e = self.assertRaises(
            ValueError, checkNumber, -1, "retries", integer=True, low=0
        )
        self.assertEqual(str(e), "retries must be an int >= 0, not -1")
        e = self.assertRaises(
            ValueError, checkNumber, 0, "timeout", positive=True, noneOk=True
        )
        self.assertEqual(str(e), "timeout must be a positive number or None, not 0")
        self.assertRaises(ValueError, checkNumber, math.nan, "timeout", positive=True)


class ReactorTests(SynchronousTestCase):
    """
    The lazy reactor.
    """

    def test_theGlobalReactor(self) -> None:
        """
        L{globalReactor} and L{reactorClock} give the global reactor.
        """
        from twisted.internet import reactor

        self.assertIs(globalReactor(), reactor)
        self.assertIs(reactorClock(), reactor)

    def test_lazyReactor(self) -> None:
        """
        A L{LazyReactor}'s C{reactor} is the one it was given, else the
        global one once asked for.
        """
        from twisted.internet import reactor
        from twisted.internet.task import Clock

        given = LazyReactor()
        clock = Clock()
        given._reactor = clock
        self.assertIs(given.reactor, clock)
        self.assertIs(LazyReactor().reactor, reactor)
