"""
L{sasync.retry}, deterministic: which failures are retried, the backoff,
and the attempts driver (with a L{Clock} and tasks the test finishes by
hand). No reactor, no threads, no sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import OutcomeUnknown, Task, TaskTimeout
from asynqueue.task import TaskState
from sasync import Backoff, TransactionTimeout, retry
from sasync.connection._engines import EngineSpec


class FakeDriverError(Exception):
    """
    A driver exception with a SQLSTATE (like psycopg2's) or an error number
    (like PyMySQL's, in C{args[0]}).
    """

    def __init__(self, *args: Any, pgcode: str | None = None) -> None:
        super().__init__(*args)
        self.pgcode = pgcode


def dbapiError(
    pgcode: str | None = None, errno: int | None = None, lost: bool = False
) -> DBAPIError:
    """
    A SQLAlchemy-wrapped driver error.
    """
    orig = FakeDriverError(*(() if errno is None else (errno, "x")), pgcode=pgcode)
    return OperationalError("SELECT 1", {}, orig, connection_invalidated=lost)


def test_classifySerializableExhaustion() -> None:
    """
    PostgreSQL's 53200 is retried when it is about its serializable
    bookkeeping (nothing committed), not when it is any other out of memory.
    """
    orig = FakeDriverError(
        "not enough elements in RWConflictPool to record a read/write conflict",
        pgcode="53200",
    )
    error = OperationalError("INSERT", {}, orig)
    assert retry.classify(error, commitSent=False, autocommit=False) == (
        retry.SERIALIZATION
    )
    other = OperationalError(
        "SELECT", {}, FakeDriverError("out of memory", pgcode="53200")
    )
    assert retry.classify(other, commitSent=False, autocommit=False) is None


def test_classify() -> None:
    """
    Serialization failures and deadlocks are retried wherever they happen
    (the database rolled back); a lost connection only before COMMIT was
    sent; nothing in AUTOCOMMIT mode; other errors never.
    """
    classify = retry.classify
    assert classify(dbapiError("40001"), commitSent=True, autocommit=False) == (
        retry.SERIALIZATION
    )
    assert classify(dbapiError("40P01"), commitSent=False, autocommit=False) == (
        retry.DEADLOCK
    )
    assert classify(dbapiError(errno=1213), commitSent=False, autocommit=False) == (
        retry.DEADLOCK
    )
    assert classify(dbapiError(errno=1205), commitSent=False, autocommit=False) == (
        retry.LOCK_TIMEOUT
    )
    assert classify(dbapiError(lost=True), commitSent=False, autocommit=False) == (
        retry.LOST
    )
    assert classify(dbapiError(lost=True), commitSent=True, autocommit=False) is None
    assert classify(dbapiError("40001"), commitSent=False, autocommit=True) is None
    assert classify(dbapiError("23505"), commitSent=False, autocommit=False) is None
    assert classify(ValueError("40001"), commitSent=False, autocommit=False) is None


def test_classifyRawDriverError() -> None:
    """
    A PostgreSQL driver's own conflict (from a raw DB-API cursor, which
    SQLAlchemy does not wrap) is retried like a wrapped one; its other
    errors, and anything in AUTOCOMMIT mode, are not.
    """
    classify = retry.classify
    raw = FakeDriverError("could not serialize", pgcode="40001")
    assert classify(raw, commitSent=True, autocommit=False) == retry.SERIALIZATION
    deadlock = FakeDriverError("deadlock detected", pgcode="40P01")
    assert classify(deadlock, commitSent=False, autocommit=False) == retry.DEADLOCK
    assert classify(raw, commitSent=False, autocommit=True) is None
    duplicate = FakeDriverError("duplicate key", pgcode="23505")
    assert classify(duplicate, commitSent=False, autocommit=False) is None


def test_backoff() -> None:
    """
    Each wait lies between half and all of an exponentially growing ceiling
    (capped); connection problems start higher than conflicts.
    """
    low = Backoff(random=lambda: 0.0)
    high = Backoff(random=lambda: 0.999999)
    assert low.delay(1, retry.DEADLOCK) == pytest.approx(0.005)
    assert high.delay(1, retry.DEADLOCK) == pytest.approx(0.01, rel=1e-5)
    assert high.delay(4, retry.SERIALIZATION) == pytest.approx(0.08, rel=1e-5)
    assert high.delay(30, retry.DEADLOCK) == pytest.approx(2.0, rel=1e-5)
    assert low.delay(1, retry.LOST) == pytest.approx(0.005)
    assert low.delay(1, retry.NO_CONNECTION) == pytest.approx(0.1)
    assert low.delay(2, retry.NO_CONNECTION) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        Backoff(first=-1)
    with pytest.raises(ValueError):
        Backoff(factor=0.5)


def test_policiesFromKeywords() -> None:
    """
    retries, timeout, maxPending and backoff are taken out of the engine
    keywords, checked, and don't decide which brokers share an engine.
    """
    plain = EngineSpec.fromArgs("sqlite:///x.db", {})
    spec = EngineSpec.fromArgs(
        "sqlite:///x.db",
        {"retries": 3, "timeout": 2.5, "maxPending": 10, "echo": False},
    )
    assert (spec.retries, spec.timeout, spec.maxPending) == (3, 2.5, 10)
    assert spec.engineKw == {"echo": False}
    assert spec.key == plain.key
    for bad in (
        {"retries": -1},
        {"retries": True},
        {"timeout": 0},
        {"maxPending": 0},
        {"backoff": 1.0},
    ):
        with pytest.raises(ValueError):
            EngineSpec.fromArgs("sqlite:///x.db", bad)


class Attempted:
    """
    Makes the tasks of an L{retry.Attempts} and plays the queue and worker:
    a submitted task starts running at once (honestly interruptible), and
    the test ends it with L{succeed} or L{fail}.
    """

    def __init__(self, abandonable: bool = False) -> None:
        self.tasks: list[Task[Any]] = []
        self.interrupted: list[Task[Any]] = []
        self.abandonable = abandonable

    def makeTask(self) -> Task[Any]:
        task: Task[Any] = Task(lambda: None, niceness=len(self.tasks) % 3)
        task.abandonable = self.abandonable
        task.onInterrupt(lambda reason: self.interrupted.append(task))
        self.tasks.append(task)
        return task

    def submit(self, task: Task[Any]) -> Deferred[Any]:
        task.start(object())
        return task.d

    def succeed(self, value: object) -> None:
        self.tasks[-1].finish(value)

    def fail(self, error: BaseException) -> None:
        self.tasks[-1].fail(Failure(error))  # type: ignore[no-untyped-call]


def retryable(reason: str = retry.SERIALIZATION) -> BaseException:
    """
    An error marked as its worker would mark a retryable one.
    """
    error = dbapiError("40001")
    retry.markRetryable(error, reason)
    return error


class AttemptsTests(SynchronousTestCase):
    """
    L{retry.Attempts}: retries, waits, timeouts, cancellation.
    """

    def attempts(
        self, retries: int = 3, timeout: float | None = None, abandonable: bool = False
    ) -> tuple[retry.Attempts, Attempted, Clock]:
        clock = Clock()
        made = Attempted(abandonable)
        attempts = retry.Attempts(
            made.makeTask,
            made.submit,
            retries=retries,
            timeout=timeout,
            backoff=Backoff(random=lambda: 0.0),
            clock=clock,
            description="B.f()",
        )
        attempts.start()
        return attempts, made, clock

    def test_retriesUntilSuccess(self) -> None:
        """
        A retryable failure runs a new task after the backoff; the caller
        sees only the final success. Each retry keeps the first task's
        place in the queue.
        """
        attempts, made, clock = self.attempts()
        made.fail(retryable())
        self.assertNoResult(attempts.d)
        self.assertEqual(len(made.tasks), 1)
        clock.advance(0.005)
        self.assertEqual(len(made.tasks), 2)
        self.assertEqual(made.tasks[1].sortKey, made.tasks[0].sortKey)
        made.fail(retryable(retry.DEADLOCK))
        clock.advance(0.01)
        made.succeed(42)
        self.assertEqual(self.successResultOf(attempts.d), 42)
        self.assertEqual(attempts.retried, 2)
        self.assertFalse(clock.getDelayedCalls())

    def test_notRetryable(self) -> None:
        """
        Any other failure goes to the caller at once, unchanged.
        """
        attempts, made, _clock = self.attempts()
        error = dbapiError(lost=True)  # not marked: e.g. lost during COMMIT
        made.fail(error)
        self.assertIs(self.failureResultOf(attempts.d).value, error)
        self.assertEqual(len(made.tasks), 1)

    def test_retriesRunOut(self) -> None:
        """
        After the last retry the failure goes to the caller, with a note.
        """
        attempts, made, clock = self.attempts(retries=2)
        for _ in range(2):
            made.fail(retryable())
            clock.advance(10)
        made.fail(retryable())
        failure = self.failureResultOf(attempts.d, OperationalError)
        self.assertIn("after 2 retries", "\n".join(failure.value.__notes__))
        self.assertEqual(len(made.tasks), 3)

    def test_cancelWhileWaiting(self) -> None:
        """
        Cancelled between attempts: CancelledError at once, and no further
        attempt is made.
        """
        attempts, made, clock = self.attempts()
        made.fail(retryable())
        attempts.d.cancel()
        self.failureResultOf(attempts.d, CancelledError)
        clock.advance(10)
        self.assertEqual(len(made.tasks), 1)
        self.assertFalse(clock.getDelayedCalls())

    def test_cancelRunningIsHonest(self) -> None:
        """
        Cancelled during an attempt: the attempt is interrupted, and the
        caller hears only once the worker has finished with it; a retryable
        failure then is not retried.
        """
        attempts, made, clock = self.attempts()
        attempts.d.cancel()
        self.assertEqual(made.interrupted, made.tasks)
        self.assertNoResult(attempts.d)
        made.fail(retryable())
        self.failureResultOf(attempts.d, CancelledError)
        clock.advance(10)
        self.assertEqual(len(made.tasks), 1)

    def test_cancelTwiceGivesUp(self) -> None:
        """
        A second cancel stops waiting for the worker, with OutcomeUnknown:
        the attempt may still commit (here it does), so not CancelledError.
        """
        attempts, made, _clock = self.attempts()
        attempts.d.cancel()
        attempts.d.cancel()
        self.failureResultOf(attempts.d, OutcomeUnknown)
        made.succeed("late")  # dropped

    def test_timeoutThenCancelGivesUp(self) -> None:
        """
        Timed out while its COMMIT was in flight (the caller waits), then
        cancelled: the caller stops waiting with OutcomeUnknown, neither
        TransactionTimeout nor CancelledError, which both say it did not
        commit; the attempt's late success is dropped.
        """
        attempts, made, clock = self.attempts(timeout=1.0)
        clock.advance(1.0)
        self.assertNoResult(attempts.d)
        attempts.d.cancel()
        failure = self.failureResultOf(attempts.d, OutcomeUnknown)
        self.assertNotIsInstance(failure.value, CancelledError | TimeoutError)
        made.succeed("late")  # dropped

    def test_timeoutDuringAttempt(self) -> None:
        """
        The timeout interrupts the running attempt; the caller gets
        TransactionTimeout (a TaskTimeout) once the worker stopped.
        """
        attempts, made, clock = self.attempts(timeout=1.0)
        clock.advance(1.0)
        self.assertEqual(made.interrupted, made.tasks)
        self.assertNoResult(attempts.d)
        made.fail(CancelledError("stopped"))
        failure = self.failureResultOf(attempts.d, TransactionTimeout)
        self.assertIsInstance(failure.value, TaskTimeout)
        self.assertIn("1 s", str(failure.value))

    def test_timeoutBeforeCommitAtDeadline(self) -> None:
        """
        A transaction's attempt (abandonable) whose COMMIT was not sent:
        TransactionTimeout exactly at the deadline, though the worker has not
        stopped yet (it is interrupted, and may no longer commit); what it
        delivers later is dropped.
        """
        attempts, made, clock = self.attempts(timeout=2.0, abandonable=True)
        clock.advance(2.0)
        self.failureResultOf(attempts.d, TransactionTimeout)
        self.assertEqual(made.interrupted, made.tasks)
        self.assertFalse(made.tasks[0].passPointOfNoReturn())
        made.fail(CancelledError("rolled back"))
        self.assertEqual(len(made.tasks), 1)

    def test_cancelBeforeCommitAtOnce(self) -> None:
        """
        The same for a cancel, retries or not.
        """
        attempts, made, _clock = self.attempts(abandonable=True)
        attempts.d.cancel()
        self.failureResultOf(attempts.d, CancelledError)
        self.assertEqual(made.interrupted, made.tasks)
        self.assertFalse(made.tasks[0].passPointOfNoReturn())

    def test_commitInFlightWaitsForOutcome(self) -> None:
        """
        A COMMIT in flight when the deadline hits: the caller waits for its
        outcome and gets it (committed: the result), never a timeout for a
        transaction that committed.
        """
        attempts, made, clock = self.attempts(timeout=2.0, abandonable=True)
        self.assertTrue(made.tasks[0].passPointOfNoReturn())
        clock.advance(2.0)
        self.assertEqual(made.interrupted, made.tasks)
        self.assertNoResult(attempts.d)
        clock.advance(10)
        self.assertNoResult(attempts.d)
        made.succeed("committed")
        self.assertEqual(self.successResultOf(attempts.d), "committed")

    def test_commitInFlightFails(self) -> None:
        """
        ... and if that COMMIT failed, the caller gets its error.
        """
        attempts, made, clock = self.attempts(timeout=2.0, abandonable=True)
        self.assertTrue(made.tasks[0].passPointOfNoReturn())
        clock.advance(2.0)
        self.assertNoResult(attempts.d)
        error = dbapiError(lost=True)
        made.fail(error)
        self.assertIs(self.failureResultOf(attempts.d).value, error)

    def test_timeoutSpansRetries(self) -> None:
        """
        The timeout counts from the call, over attempts and waits: it may
        end a wait between attempts.
        """
        attempts, made, clock = self.attempts(timeout=0.5, retries=50)
        while True:
            made.fail(retryable())
            delay = 0.005 * 2 ** (len(made.tasks) - 1)  # (random() is 0)
            if clock.seconds() + delay >= 0.5:
                break
            clock.advance(delay)
        clock.advance(0.5 - clock.seconds())
        failure = self.failureResultOf(attempts.d, TransactionTimeout)
        self.assertIn(f"({len(made.tasks)} retries)", str(failure.value))
        self.assertFalse(clock.getDelayedCalls())
        self.assertTrue(all(t.state is TaskState.DONE for t in made.tasks))

    def test_successCancelsTimeout(self) -> None:
        """
        A call that succeeds leaves no timer behind.
        """
        attempts, made, clock = self.attempts(timeout=5.0)
        made.succeed("ok")
        self.assertEqual(self.successResultOf(attempts.d), "ok")
        self.assertFalse(clock.getDelayedCalls())
