"""
Running a transaction again: which failures allow it, how long to wait
first, and L{Attempts}, the reactor-side driver that does it (and enforces
the call's timeout across attempts).

The guarantee: a transaction runs again only where it cannot have been
committed. That is when

  - the database answered that it rolled the transaction back: a
    serialization failure (SQLSTATE C{40001}) or a deadlock (C{40P01};
    MySQL/MariaDB error 1213), in answer to any statement or to COMMIT
    itself (an answer to COMMIT that is an error means no commit);
  - MySQL/MariaDB's lock wait timeout (error 1205): InnoDB rolls back only
    the statement that waited, but the error leaves the transaction
    function, and sAsync then rolls the whole transaction back;
  - the connection was lost, or could not be made, before COMMIT was sent
    (without COMMIT the server rolls back);
  - a write was refused because the server is read-only (SQLSTATE
    C{25006} in a transaction not declared read-only): after a failover
    the connection reached a server that is a standby now; nothing was
    written, and the next attempt connects again (a multi-host URL with
    C{target_session_attrs=read-write} then finds the new primary);
  - PostgreSQL only: the connection was lost while COMMIT was in flight,
    and the database, asked on a new connection, says the transaction was
    rolled back or had written nothing (see L{sasync.connection._outcome}).

Never in AUTOCOMMIT mode (each statement commits by itself there), never
for any other error, never once the caller's Deferred has fired (a row
iteration that fails halfway is not run again), and never more than the
call's C{retries}. Every attempt runs the whole transaction function again
from scratch, on whichever connection is free: code with effects outside
the database (sending mail, appending to a list) repeats them.

The first three (L{CONFLICTS}) are what serializable transactions produce
when they collide: the broker's default (C{retries=None}) retries those
only, up to L{CONFLICT_RETRIES} times.

SQLite's C{database is locked} is not retried: it comes after a wait (the
C{timeout} of C{sqlite3}), and only another process can cause it.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy.exc import DBAPIError
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from asynqueue.task import Task

from .errors import TransactionTimeout

log = Logger()
#: Structured events for operators (see C{docs/observability.md}).
retryLog = Logger(namespace="sasync.retry")
timeoutLog = Logger(namespace="sasync.timeout")

#: SQLSTATEs meaning "rolled back, try again": serialization failure and
#: deadlock (PostgreSQL; also what other SQL databases use).
RETRY_SQLSTATES = frozenset({"40001", "40P01"})
#: MySQL/MariaDB error numbers meaning the same: ER_LOCK_DEADLOCK.
RETRY_MYSQL_ERRORS = frozenset({1213})
#: MySQL/MariaDB's ER_LOCK_WAIT_TIMEOUT: retried once the whole transaction
#: was rolled back (sAsync rolls back whenever the body raises).
MYSQL_LOCK_WAIT_TIMEOUT = 1205

#: PostgreSQL's "out of memory" (53200) for its serializable bookkeeping
#: (its conflict pool, its predicate locks), told apart by the message.
_SSI_EXHAUSTED = ("RWConflictPool", "max_pred_locks")

#: Why a failure may be retried (the attribute set on the exception).
_REASON = "_sasyncRetryReason"

SERIALIZATION = "serialization failure"
DEADLOCK = "deadlock"
LOCK_TIMEOUT = "lock wait timeout"
LOST = "connection lost before COMMIT"
NO_CONNECTION = "could not connect"
ROLLED_BACK = "connection lost during COMMIT, which the database rolled back"

#: A write reached a read-only server (a standby after a failover).
READ_ONLY_SERVER = "a write reached a read-only server"
#: PostgreSQL (and MariaDB's SQLSTATE): a write in a read-only transaction.
READ_ONLY_SQLSTATE = "25006"

#: A transaction run READ ONLY because its method had only read so far
#: (PostgreSQL) tried to write: nothing was written; it runs again at once,
#: read-write (see L{sasync.transact.TransactionCall}).
WROTE_READ_ONLY = "a write in a transaction guessed read-only"

#: A call guessed READ ONLY when it was made (so it passed the writer gate
#: by) was not guessed any more when it started: nothing was sent; it goes
#: back through the gate at once (see L{sasync._readguess}).
GUESS_WITHDRAWN = "a read-only guess withdrawn before the transaction began"


class GuessWithdrawn(Exception):
    """
    Raised (worker thread) instead of beginning a transaction that was
    guessed READ ONLY when its call was made but not as it starts: see
    L{GUESS_WITHDRAWN}.
    """


#: What L{SwallowedError} says.
SWALLOWED = (
    "the transaction, run READ ONLY by guess, failed, but its function caught"
    " the error and returned (a write refused, most likely): it runs again,"
    " read-write"
)


class SwallowedError(Exception):
    """
    Raised (worker thread) instead of sending COMMIT for a transaction run
    READ ONLY by guess that is in a failed state although its function
    returned: it caught the database's refusal of a write (SQLSTATE
    C{25006}, which this carries too) and went on. COMMIT would have rolled
    back in silence; the transaction runs again, read-write.
    """

    pgcode = READ_ONLY_SQLSTATE


def inFailedTransaction(dbapiConnection: Any) -> bool:
    """
    Worker thread: whether a PostgreSQL DB-API connection (psycopg2 or
    psycopg 3) is in a failed transaction, read locally (nothing is sent).
    """
    info = getattr(dbapiConnection, "info", None)
    # libpq's PQTRANS_INERROR.
    return getattr(info, "transaction_status", None) == 3


#: The failures that serializable transactions produce when they collide:
#: retried by default (the broker's C{retries=None}).
CONFLICTS = frozenset({SERIALIZATION, DEADLOCK, LOCK_TIMEOUT})
#: What the default retries: the conflicts, and read-only guesses gone
#: wrong.
RETRIED_BY_DEFAULT = CONFLICTS | {WROTE_READ_ONLY, GUESS_WITHDRAWN}
#: How many times a transaction may run again after conflicts, by default.
CONFLICT_RETRIES = 20


def sqlState(e: BaseException | None) -> str | None:
    """
    The SQLSTATE a PostgreSQL driver's own exception carries (psycopg2's
    C{pgcode}, psycopg 3's C{sqlstate}), or C{None}.
    """
    code = getattr(e, "pgcode", None) or getattr(e, "sqlstate", None)
    return code if isinstance(code, str) else None


def errorCode(e: DBAPIError) -> str | int | None:
    """
    The driver's error code: a SQLSTATE string (psycopg2), an error number
    (PyMySQL, sqlite3), or C{None}.
    """
    orig = e.orig
    code = sqlState(orig)
    if code:
        return code
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return getattr(orig, "sqlite_errorcode", None)


def classify(e: BaseException, *, commitSent: bool, autocommit: bool) -> str | None:
    """
    Worker thread: why the transaction that raised C{e} may run again, or
    C{None} if it may not.

    @param commitSent: Whether COMMIT may have been sent when C{e} was
        raised.
    @param autocommit: Whether the connection was in AUTOCOMMIT mode.
    """
    if autocommit:
        return None
    if not isinstance(e, DBAPIError):
        # A driver's own error, from a raw DB-API cursor: SQLAlchemy did not
        # wrap it, but a conflict is a conflict.
        return _conflict(sqlState(e), str(e))
    args = getattr(e.orig, "args", ())
    if args and args[0] in RETRY_MYSQL_ERRORS:
        return DEADLOCK  # (Its SQLSTATE is 40001, too.)
    if args and args[0] == MYSQL_LOCK_WAIT_TIMEOUT:
        return LOCK_TIMEOUT
    code = errorCode(e)
    conflict = _conflict(code, str(e.orig))
    if conflict is not None:
        return conflict
    if e.connection_invalidated and not commitSent:
        return LOST
    if code == READ_ONLY_SQLSTATE and not commitSent:
        return READ_ONLY_SERVER
    return None


def _conflict(code: str | int | None, message: str) -> str | None:
    # The conflict a driver's error code (and message) says, if any.
    if code in RETRY_SQLSTATES:
        return DEADLOCK if code == "40P01" else SERIALIZATION
    if code == "53200" and any(word in message for word in _SSI_EXHAUSTED):
        # PostgreSQL ran out of room to track serializable transactions:
        # the statement failed, nothing committed; fewer at once will do.
        return SERIALIZATION
    return None


def markRetryable(e: BaseException, reason: str) -> None:
    """
    Worker thread: note on C{e} that its transaction may run again, and why.
    """
    setattr(e, _REASON, reason)


def retryReason(e: BaseException) -> str | None:
    """
    Why the transaction that raised C{e} may run again (C{None}: it may
    not).
    """
    reason = getattr(e, _REASON, None)
    return reason if isinstance(reason, str) else None


def isAutocommit(dbapiConnection: Any) -> bool:
    """
    Worker thread: whether a DBAPI connection is in AUTOCOMMIT mode, read
    locally (no statement is sent).
    """
    for name in ("autocommit", "autocommit_mode"):
        value = getattr(dbapiConnection, name, None)
        if isinstance(value, bool):
            return value
    if isinstance(dbapiConnection, sqlite3.Connection):
        # The sqlite3 module's own (legacy) autocommit mode.
        return dbapiConnection.isolation_level is None
    return False


@dataclass(frozen=True)
class Backoff:
    """
    How long to wait before running a transaction again: exponential, with
    "equal jitter" (a random half), so that transactions that collided
    don't collide again at once and yet each wait grows.

    The wait before retry C{n} (1 for the first) is uniform between half
    and all of C{min(maximum, start * factor ** (n - 1))}, where C{start}
    is C{firstReconnect} if no connection could be made (a restarting
    server needs longer), and C{first} otherwise (a conflict, or one lost
    connection, which the worker replaces at once).

    @ivar random: Returns a float in [0, 1); tests pass their own.
    """

    first: float = 0.01
    firstReconnect: float = 0.2
    factor: float = 2.0
    maximum: float = 2.0
    random: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        for name in ("first", "firstReconnect", "maximum"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"Backoff({name}={value!r}): not a number >= 0")
        if not isinstance(self.factor, int | float) or self.factor < 1:
            raise ValueError(f"Backoff(factor={self.factor!r}): not a number >= 1")

    def delay(self, retry: int, reason: str) -> float:
        """
        Seconds to wait before retry number C{retry} (1 for the first) of a
        transaction that failed because of C{reason}.
        """
        if reason in (WROTE_READ_ONLY, GUESS_WITHDRAWN):
            return 0.0  # (Nobody to get out of the way of.)
        # (A restarting server, or a promotion, needs longer.)
        slow = reason in (NO_CONNECTION, READ_ONLY_SERVER)
        start = self.firstReconnect if slow else self.first
        ceiling = min(self.maximum, start * self.factor ** (retry - 1))
        return ceiling * (0.5 + 0.5 * self.random())


DEFAULT_BACKOFF = Backoff()

#: Frames that frame.clear() would close (a suspended generator's), not
#: just clear.
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _forgetFailure(failure: Failure) -> None:
    """
    Reactor thread: let go of the tracebacks of C{failure}, an attempt's
    failure that nobody will see (it is run again), and of the exceptions
    it chains. Their frames' locals often hold the exception itself
    (SQLAlchemy's C{_handle_dbapi_exception} does), a reference cycle only
    the garbage collector would free, and with it whatever those frames
    hold (the call's task, cursors, ORM objects). What L{retryReason}
    reads stays.
    """
    failure.tb = None
    pending: list[object] = [failure.value]
    seen: set[int] = set()
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        tb = error.__traceback__
        if tb is not None:
            error.__traceback__ = None
            _clearFrames(tb)
        pending += (error.__cause__, error.__context__, getattr(error, "orig", None))


def _clearFrames(tb: TracebackType | None) -> None:
    # traceback.clear_frames, sparing suspended generators (clearing their
    # frame would close them).
    while tb is not None:
        frame = tb.tb_frame
        if not frame.f_code.co_flags & _SUSPENDABLE:
            # (One still running, its worker thread's say, raises.)
            with contextlib.suppress(RuntimeError):
                frame.clear()
        tb = tb.tb_next


class _Waiting:
    """
    Sent down the caller's Deferred when it is stopped (cancelled, timed
    out) while an attempt runs that must be waited for (its COMMIT was
    sent): swapped for the Deferred that fires with the attempt's outcome,
    so the caller hears nothing before then.
    """

    def __init__(self, waiter: Deferred[Any]) -> None:
        self.waiter = waiter


def _swapWaiting(result: object) -> object:
    if isinstance(result, _Waiting):
        return result.waiter
    return result


class Attempts:
    """
    One transaction call made of attempts: runs a task, and while it fails
    in a way that allows it (see L{retryReason}) and retries are left, waits
    (see L{Backoff}) and runs a new task from scratch. Enforces the call's
    timeout over all attempts and waits, failing with L{TransactionTimeout}.

    Cancelling L{d} (or the timeout) during a wait ends it at once; during
    an attempt it interrupts the attempt, and L{d} fails at once too if the
    attempt's task is abandonable (a transaction whose COMMIT was not sent:
    it can no longer commit, and its worker rolls back in the background);
    otherwise (its COMMIT in flight) L{d} gets the attempt's outcome.

    Reactor thread only.

    @ivar d: The caller's Deferred.
    @ivar retried: How many times the transaction was run again.
    """

    def __init__(
        self,
        makeTask: Callable[[], Task[Any]],
        submit: Callable[[Task[Any]], Deferred[Any]],
        *,
        retries: int,
        timeout: float | None,
        backoff: Backoff,
        clock: IReactorTime,
        description: str,
        onRetry: Callable[[str], object] | None = None,
        reasons: frozenset[str] | None = None,
        mayRetry: Callable[[str], bool] | None = None,
    ) -> None:
        """
        @param makeTask: Makes a new task for each attempt.
        @param submit: Queues a task; returns its Deferred.
        @param retries: How many times the transaction may run again.
        @param timeout: Seconds for the whole call, or C{None}.
        @param clock: Schedules the waits and the timeout.
        @param description: How the call is named in errors.
        @param onRetry: Called with the reason before each retry (counters).
        @param reasons: The retry reasons allowed (C{None}: every one).
        @param mayRetry: Asked with the reason, once C{retries} allow a
            retry, whether to make it (a broker's start-up waits out a
            missing database by time; see L{sasync.startup}).
        """
        self._makeTask = makeTask
        self._submit = submit
        self._retries = retries
        self._timeout = timeout
        self._backoff = backoff
        self._clock = clock
        self._description = description
        self._onRetry = onRetry
        self._reasons = reasons
        self._mayRetry = mayRetry
        self.retried = 0
        self._task: Task[Any] | None = None
        self._sortKey: tuple[int, int, int] | None = None
        self._wait: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        self._stopReason: BaseException | None = None
        self._waiter: Deferred[Any] | None = None
        self.d: Deferred[Any] = Deferred(self._cancel)
        self.d.addBoth(_swapWaiting)

    def start(self) -> Deferred[Any]:
        """
        Run the first attempt (and start the timeout).

        @return: L{d}.
        """
        if self._timeout is not None:
            self._deadline = self._clock.callLater(self._timeout, self._timedOut)
        self._attempt()
        return self.d

    def adopt(self, task: Task[Any], failure: Failure) -> Deferred[Any]:
        """
        Take over a call whose first attempt, C{task}, was run without me
        and failed with C{failure}: retry it if that allows, keeping its
        place in the queue (there is no timeout to enforce).

        @return: L{d}.
        """
        self._sortKey = task.sortKey
        self._task = task
        self._attempted(failure, task)
        return self.d

    # Attempts -----------------------------------------------------------------

    def _attempt(self) -> None:
        self._wait = None
        task = self._task = self._makeTask()
        if self._sortKey is None:
            self._sortKey = task.sortKey
        else:
            # A retry keeps the call's place among queued transactions.
            task.sortKey = self._sortKey
        self._submit(task).addBoth(self._attempted, task)

    def _attempted(self, result: object, task: Task[Any]) -> None:
        if task is not self._task:
            return
        self._task = None
        if isinstance(result, Failure) and self._stopReason is None:
            error = result.value
            reason = None if error is None else retryReason(error)
            if reason is not None and not (
                self._reasons is None or reason in self._reasons
            ):
                reason = None
            if error is not None and reason is not None:
                if self.retried < self._retries and (
                    self._mayRetry is None or self._mayRetry(reason)
                ):
                    # (Run again: nobody sees this failure.)
                    _forgetFailure(result)
                    self._retry(reason)
                    return
                if self._retries:
                    error.add_note(
                        f"{self._description} failed ({reason}) after"
                        f" {self.retried} retries"
                    )
        self._finish(result)

    def _retry(self, reason: str) -> None:
        self.retried += 1
        delay = self._backoff.delay(self.retried, reason)
        # The start-up's waiting for its database logs once by itself: its
        # retries stay at debug level.
        emit = retryLog.info if self._mayRetry is None else retryLog.debug
        emit(
            "{call} will run again in {delay:.3f} s ({reason}), retry {n} of {m}",
            call=self._description,
            delay=delay,
            reason=reason,
            n=self.retried,
            m=self._retries,
        )
        if self._onRetry is not None:
            self._onRetry(reason)
        self._wait = self._clock.callLater(delay, self._attempt)

    def _finish(self, result: object) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        if (
            isinstance(self._stopReason, TransactionTimeout)
            and isinstance(result, Failure)
            and isinstance(result.value, CancelledError | TimeoutError)
        ):
            # The attempt stopped because the call timed out: say so.
            result = Failure(self._stopReason)  # type: ignore[no-untyped-call]
        target = self._waiter if self._waiter is not None else self.d
        if target.called:
            return
        if isinstance(result, Failure):
            target.errback(result)
        else:
            target.callback(result)

    # Stopping -----------------------------------------------------------------

    def _cancel(self, d: Deferred[Any]) -> None:
        self._stop(CancelledError(f"{self._description} was cancelled"))

    def _timedOut(self) -> None:
        self._deadline = None
        assert self._timeout is not None
        timeoutLog.warn(
            "{call} timed out after {timeout} s ({retries} retries, {state})",
            call=self._description,
            timeout=self._timeout,
            retries=self.retried,
            state="waiting to retry" if self._wait is not None else "queued or running",
        )
        self._stop(
            TransactionTimeout(
                f"{self._description} timed out after {self._timeout:g} s"
                + (f" ({self.retried} retries)" if self.retried else "")
            )
        )

    def _stop(self, reason: BaseException) -> None:
        if self._stopReason is not None or self.d.called:
            return
        self._stopReason = reason
        if self._wait is not None:
            # Between attempts: nothing runs, so stop now.
            if self._wait.active():
                self._wait.cancel()
            self._wait = None
            self._finish(Failure(reason))  # type: ignore[no-untyped-call]
            return
        task = self._task
        if task is None:
            self._finish(Failure(reason))  # type: ignore[no-untyped-call]
            return
        if isinstance(reason, TransactionTimeout):
            assert self._timeout is not None
            task.timeOut(self._timeout)
        else:
            task.d.cancel()
        if not self.d.called:
            # The attempt is being interrupted, and must be waited for (its
            # COMMIT is in flight): wait for the worker.
            self._waiter = Deferred(self._giveUp)
            self.d.callback(_Waiting(self._waiter))

    def _giveUp(self, waiter: Deferred[Any]) -> None:
        # Cancelled again while waiting for the worker: stop waiting (the
        # task's own give-up drops whatever the worker delivers later).
        task = self._task
        if task is not None:
            task.d.cancel()


__all__ = [
    "DEFAULT_BACKOFF",
    "RETRY_MYSQL_ERRORS",
    "RETRY_SQLSTATES",
    "Attempts",
    "Backoff",
    "classify",
    "errorCode",
    "isAutocommit",
    "markRetryable",
    "retryReason",
]
