"""
Unit tests for L{Task.onEnded}: an observer called as a task ends, right
before its Deferred fires, that may replace what it fires with (or make it
wait for another Deferred).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import Task


def _noop() -> None:
    pass


class OnEndedTests(SynchronousTestCase):
    """
    L{Task.onEnded}.
    """

    def _task(self, ended: Any) -> tuple[Task[Any], list[tuple[object, bool]]]:
        task: Task[Any] = Task(_noop)
        heard: list[tuple[object, bool]] = []

        def onEnded(t: Task[Any], outcome: object) -> object:
            self.assertIs(t, task)
            # (Before the Deferred fires.)
            heard.append((outcome, task.d.called))
            return ended(outcome)

        task.onEnded = onEnded
        return task, heard

    def test_value(self) -> None:
        """
        It hears the value before the Deferred fires, which fires with what
        it returns.
        """
        task, heard = self._task(lambda outcome: outcome + 1)
        task.finish(1)
        self.assertEqual(heard, [(1, False)])
        self.assertEqual(self.successResultOf(task.d), 2)

    def test_failure(self) -> None:
        """
        A failed task's Failure goes to it; it may turn it into a value.
        """
        task, heard = self._task(lambda outcome: "handled")
        task.fail(Failure(ValueError("x")))  # type: ignore[no-untyped-call]
        [(outcome, called)] = heard
        self.assertIsInstance(outcome, Failure)
        self.assertFalse(called)
        self.assertEqual(self.successResultOf(task.d), "handled")

    def test_cancelledQueued(self) -> None:
        """
        A task cancelled before it ran ends too: it hears the cancellation.
        """
        task, heard = self._task(lambda outcome: outcome)
        task.d.cancel()
        [(outcome, _)] = heard
        assert isinstance(outcome, Failure)
        self.assertIsInstance(outcome.value, CancelledError)
        self.failureResultOf(task.d, CancelledError)

    def test_raises(self) -> None:
        """
        What it raises is what the Deferred fails with.
        """

        def ended(outcome: object) -> object:
            raise KeyError("oops")

        task, _ = self._task(ended)
        task.finish(1)
        self.failureResultOf(task.d, KeyError)

    def test_followsDeferred(self) -> None:
        """
        A Deferred it returns is waited for: the task's Deferred fires with
        its result.
        """
        inner: Deferred[int] = Deferred()
        task, _ = self._task(lambda outcome: inner)
        task.finish(1)
        self.assertNoResult(task.d)
        inner.callback(7)
        self.assertEqual(self.successResultOf(task.d), 7)

    def test_cancelFollowed(self) -> None:
        """
        Cancelling the task's Deferred while it waits for the returned
        Deferred cancels that one, whose failure it gets.
        """
        cancelled: list[Deferred[int]] = []
        inner: Deferred[int] = Deferred(cancelled.append)
        task, _ = self._task(lambda outcome: inner)
        task.finish(1)
        task.d.cancel()
        self.assertEqual(cancelled, [inner])
        self.failureResultOf(task.d, CancelledError)
