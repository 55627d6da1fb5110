"""
Starting a broker before its database: which failures of the start-up's
database work run again, for how long, and what a broker that did not start
says about it.

Services often start before their database does (containers, systemd
units started together, a database still recovering). So a broker's
start-up waits for its database: each piece of database work it does (a
C{table()}, a transaction its C{startup()} calls, C{first()}) that fails
because no connection could be made, or because the connection was lost
before anything was committed (L{retry.NO_CONNECTION}, L{retry.LOST}), runs
again after the broker's L{retry.Backoff} wait, for as long as the broker's
C{startupTimeout} (seconds, counted from the start) has not run out.

Any other error fails the start-up at once (a bad table definition does not
get better by waiting), except the conflicts a call's C{retries} allow
anyway (a serialization failure of a transaction C{startup()} calls). The
count of C{retries} does not bound the waiting: time does.

A broker whose start-up failed never runs: every call of it fails with
L{StartupError}, whose message says so and names the database (without its
password). Make a new broker once the cause is fixed.

Reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import retry
from .errors import StartupError

log = Logger()

#: The failures a start-up waits out: the database is not there (yet).
WAITED_OUT = frozenset({retry.NO_CONNECTION, retry.LOST})


class StartupWait:
    """
    A broker's start-up waiting for its database: shared by every piece of
    database work the start-up does, so that all of them together wait at
    most C{timeout} seconds.

    @ivar timeout: Seconds from the start during which a missing database is
        waited for.
    @ivar retried: How many times start-up work ran again because the
        database could not be reached.
    @ivar stopped: Whether L{stop} was called (the broker is shutting down).
    """

    def __init__(self, timeout: float, clock: IReactorTime, broker: object) -> None:
        """
        @param broker: Named in the log when the waiting starts.
        """
        self.timeout = timeout
        self._broker = broker
        self._clock = clock
        self._started = clock.seconds()
        self._ended: float | None = None
        self.retried = 0
        self.stopped = False

    def elapsed(self) -> float:
        """
        Seconds the start-up took (so far, or until L{end}).
        """
        end = self._clock.seconds() if self._ended is None else self._ended
        return end - self._started

    def end(self) -> None:
        """
        The start-up is over (done or failed): L{elapsed} stays as it is.
        """
        if self._ended is None:
            self._ended = self._clock.seconds()

    def stop(self) -> None:
        """
        Wait no more: the next failure to reach the database fails the
        start-up (the broker is shutting down).
        """
        self.stopped = True

    def policy(self, retries: int) -> Callable[[str], bool]:
        """
        The decision, for one piece of start-up work, whether a failure for
        a given reason runs it again (see L{retry.Attempts}'s C{mayRetry}).

        @param retries: How many times a failure that is not the database's
            absence (a conflict) may run it again: the call's C{retries}.
        """
        conflicts = 0

        def mayRetry(reason: str) -> bool:
            nonlocal conflicts
            if reason in WAITED_OUT:
                if self.stopped or self.elapsed() >= self.timeout:
                    return False
                if not self.retried:
                    log.info(
                        "{broker}: the database can't be reached ({reason});"
                        " waiting for it, up to {timeout:g} s (startupTimeout)",
                        broker=self._broker,
                        reason=reason,
                        timeout=self.timeout,
                    )
                self.retried += 1
                return True
            if conflicts < retries:
                conflicts += 1
                return True
            return False

        return mayRetry


def startupError(
    brokerName: str, url: str, failure: Failure, wait: StartupWait | None
) -> Failure:
    """
    The failure every call of a broker that did not start fails with: a
    L{StartupError} saying that the broker is dead, why, and what to do,
    with the original error as its C{__cause__}.

    @param url: The database's URL, without password.
    @param wait: How the start-up waited for the database, if it did.
    """
    cause = failure.value
    if (
        wait is not None
        and cause is not None
        and retry.retryReason(cause) in WAITED_OUT
    ):
        if wait.stopped:
            why = "shutdown() was called while it waited for the database"
        else:
            why = (
                "the database did not accept connections within"
                f" startupTimeout={wait.timeout:g} s"
                f" ({wait.retried} retries in {wait.elapsed():.1f} s)"
            )
        fix = "the database accepts connections. The last error"
    else:
        why = "its start-up failed"
        fix = "this error is fixed"
    error = StartupError(
        f"{brokerName} did not start on {url}: {why}. This broker will not run"
        f" (each of its calls fails with StartupError): make a new one once"
        f" {fix}: {failure.getErrorMessage()}"
    )
    error.__cause__ = cause
    return Failure(error)  # type: ignore[no-untyped-call]


__all__ = ["WAITED_OUT", "StartupWait", "startupError"]
