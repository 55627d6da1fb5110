"""
L{sasync.startup}: how a broker's start-up waits for a missing database
(deterministic, with a L{Clock}), the C{startupTimeout} option, and the
L{StartupError} of a broker that did not start.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sasync import StartupError, retry
from sasync.connection._engines import DEFAULT_STARTUP_TIMEOUT, EngineSpec
from sasync.retry import Backoff
from sasync.startup import StartupWait, startupError
from tests.sasync.brokers import LogBroker
from tests.sasync.test_retry import Attempted, dbapiError, retryable


def test_startupTimeoutOption() -> None:
    """
    startupTimeout is a broker option (not an engine keyword, not deciding
    which brokers share an engine): a number of seconds >= 0, by default
    30 s on server databases and 0 on SQLite.
    """
    pg = "postgresql://u@h/db"
    assert EngineSpec.fromArgs(pg, {}).startupWait == DEFAULT_STARTUP_TIMEOUT == 30
    assert EngineSpec.fromArgs("sqlite:///x.db", {}).startupWait == 0
    spec = EngineSpec.fromArgs(pg, {"startupTimeout": 5})
    assert (spec.startupWait, spec.engineKw) == (5.0, {})
    assert spec.key == EngineSpec.fromArgs(pg, {}).key
    assert EngineSpec.fromArgs("sqlite:///x.db", {"startupTimeout": 2}).startupWait == 2
    assert EngineSpec.fromArgs(pg, {"startupTimeout": 0}).startupWait == 0
    for bad in (-1, True, "30", None, math.nan):
        with pytest.raises(ValueError, match="startupTimeout must be a number"):
            EngineSpec.fromArgs(pg, {"startupTimeout": bad})


class StartupWaitTests(SynchronousTestCase):
    """
    L{StartupWait.policy}: a missing database is waited for by time, over
    all of the start-up's work; conflicts by the call's count.
    """

    def test_waitsByTime(self) -> None:
        """
        A failure to connect, or a lost connection, may run again for as
        long as the timeout (counted from the start) has not run out,
        however often; once it has, not any more.
        """
        clock = Clock()
        wait = StartupWait(10, clock, "B")
        mayRetry = wait.policy(0)
        for _ in range(100):
            self.assertTrue(mayRetry(retry.NO_CONNECTION))
        clock.advance(9.9)
        self.assertTrue(mayRetry(retry.LOST))
        # Another piece of work of the same start-up shares the deadline.
        clock.advance(0.1)
        self.assertFalse(wait.policy(5)(retry.NO_CONNECTION))
        self.assertFalse(mayRetry(retry.LOST))
        self.assertEqual(wait.retried, 101)
        self.assertEqual(wait.elapsed(), 10)

    def test_stop(self) -> None:
        """
        Once stopped (shutdown), a missing database is waited for no more.
        """
        wait = StartupWait(10, Clock(), "B")
        mayRetry = wait.policy(3)
        wait.stop()
        self.assertFalse(mayRetry(retry.NO_CONNECTION))
        self.assertTrue(wait.stopped)

    def test_zero(self) -> None:
        """
        startupTimeout=0: no waiting at all.
        """
        self.assertFalse(StartupWait(0, Clock(), "B").policy(3)(retry.NO_CONNECTION))

    def test_conflictsByCount(self) -> None:
        """
        Other retryable failures (a serialization failure) run again only as
        often as the call's retries allow, counted per piece of work.
        """
        wait = StartupWait(10, Clock(), "B")
        mayRetry = wait.policy(2)
        self.assertTrue(mayRetry(retry.SERIALIZATION))
        self.assertTrue(mayRetry(retry.DEADLOCK))
        self.assertFalse(mayRetry(retry.SERIALIZATION))
        self.assertTrue(wait.policy(1)(retry.SERIALIZATION))
        self.assertFalse(wait.policy(0)(retry.SERIALIZATION))
        self.assertEqual(wait.retried, 0)

    def test_attemptsAskIt(self) -> None:
        """
        L{retry.Attempts} with C{mayRetry}: a missing database is retried
        with the reconnect backoff until the start-up's time runs out; then
        the caller gets the driver's error.
        """
        clock = Clock()
        made = Attempted()
        wait = StartupWait(1, clock, "B")
        attempts = retry.Attempts(
            made.makeTask,
            made.submit,
            retries=sys.maxsize,
            timeout=None,
            backoff=Backoff(firstReconnect=0.2, maximum=0.2, random=lambda: 1.0),
            clock=clock,
            description="B.table('t')",
            mayRetry=wait.policy(0),
        )
        d = attempts.start()
        for _ in range(5):
            made.fail(retryable(retry.NO_CONNECTION))
            self.assertNoResult(d)
            clock.advance(0.2)
        error = retryable(retry.NO_CONNECTION)
        made.fail(error)
        self.assertIs(self.failureResultOf(d).value, error)
        self.assertEqual((len(made.tasks), attempts.retried), (6, 5))


def test_startupErrorSays() -> None:
    """
    The StartupError says the broker will not run and what to do, names the
    URL it is given and the original error, and has it as its cause; a
    missing database is told apart from other errors.
    """
    clock = Clock()
    wait = StartupWait(2, clock, "B")
    clock.advance(2.5)
    wait.end()
    clock.advance(100)
    lost = dbapiError(None)
    retry.markRetryable(lost, retry.NO_CONNECTION)
    error = startupError("Ledger", "postgresql://u:***@h/db", Failure(lost), wait)
    assert isinstance(error.value, StartupError)
    message = str(error.value)
    assert message.startswith("Ledger did not start on postgresql://u:***@h/db:")
    assert "within startupTimeout=2 s (0 retries in 2.5 s)" in message
    assert "This broker will not run (each of its calls fails with" in message
    assert "make a new one once the database accepts connections" in message
    assert error.value.__cause__ is lost
    other = startupError("Ledger", "sqlite://", Failure(ZeroDivisionError("x")), wait)
    assert "its start-up failed" in str(other.value)
    assert "make a new one once this error is fixed: x" in str(other.value)
    wait.stop()
    stopped = startupError("Ledger", "sqlite://", Failure(lost), wait)
    assert "shutdown() was called while it waited" in str(stopped.value)


async def test_sqliteFailsAtOnce(tmp_path: Any, brokers: Any) -> None:
    """
    SQLite: a database file that can't be opened fails the start-up at once
    by default (no server to wait for), with the clear StartupError.
    """
    url = f"sqlite:///{tmp_path}/missing/dir/x.db"
    broker = brokers(LogBroker, url)
    with pytest.raises(StartupError, match="will not run") as info:
        await broker.waitUntilRunning()
    # At once: no retry (not a wall-clock bound, which a loaded machine
    # can overrun).
    assert "startupTimeout=0 s (0 retries in " in str(info.value)
