"""
L{AccessBroker}: asynchronous access to one database, to be subclassed.

A broker's life: made (in the reactor thread, or before the reactor runs);
on the next reactor turn its L{startup} runs, then L{first} as the first
transaction; then it is L{running}. Transactions called before that wait
for it (except the ones L{startup} itself makes). L{shutdown} refuses new
work, lets accepted work finish, and lets go of the engine.

The broker's own attributes all start with C{_} (besides its methods and
the few public properties), so that tables can be plain words: the table
C{url} is C{self.url}.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self, TypeVar

import sqlalchemy as SA
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from asynqueue.task import Task, TaskState

from . import _stats, migrations, multicore, notifications, retry, startup, tables
from ._protocols import WorkQueue
from .connection import (
    ConnectionWorker,
    checkReactorThread,
    currentConnection,
    currentSession,
    state,
)
from .connection import _engines as engines
from .connection import _positions as positions
from .connection import _replicas as replicas
from .errors import BrokerStopped, NotSupported, Overloaded
from .statements import SelectHolder, StatementCache, selectHolder
from .transact import (
    ALWAYS_STREAM,
    CallOptions,
    TransactionCall,
    describeCall,
    transact,
)

T = TypeVar("T")

log = Logger()

#: The broker whose startup() is running in this context (its calls are
#: queued at once instead of waiting for the startup to finish).
_starting: contextvars.ContextVar[AccessBroker | None] = contextvars.ContextVar(
    "sasyncStarting", default=None
)

#: Per @transact function: did its last call return rows? (Worker threads
#: write it, one item at a time.) Decides server-side cursor streaming.
_returnsRows: dict[Callable[..., Any], bool] = {}
#: Per @transact function: was it seen writing (True) or only reading
#: (False)? Decides READ ONLY guesses on PostgreSQL (same threading).
_wrote: dict[Callable[..., Any], bool] = {}

#: Seconds C{shutdown(timeout=...)} waits for the workers to close once
#: every caller has heard, before it leaves the ones still busy to finish
#: by themselves.
SHUTDOWN_GRACE = 1.0

_NEW, _STARTING, _RUNNING, _FAILED, _STOPPED = (
    "new",
    "starting",
    "running",
    "failed",
    "stopped",
)


@functools.lru_cache(maxsize=512)
def _text(sql: str) -> SA.TextClause:
    # The same SQL text, the same (immutable) TextClause: parsed once.
    return SA.text(sql)


def _interrupt(task: Task[Any], reactor: Any, reason: BaseException) -> None:
    # Reactor thread, when a running task is cancelled or times out.
    worker = task.worker
    if isinstance(worker, ConnectionWorker):
        worker.canceller.interrupt(task, reactor)


def _inWorker(setup: Callable[[Connection], T]) -> Callable[[], T]:
    # A setup job (table creation): runs in a worker thread, outside any
    # user transaction, on that thread's connection. Setup jobs are
    # idempotent, so a missing or lost connection allows running it again.
    def job() -> T:
        worker = state.worker
        assert worker is not None, "setup jobs run in sAsync worker threads"
        try:
            connection = worker.connection()
        except DBAPIError as e:
            retry.markRetryable(e, retry.NO_CONNECTION)
            raise
        try:
            return setup(connection)
        except DBAPIError as e:
            if e.connection_invalidated:
                # (The worker replaces the connection before its next job.)
                retry.markRetryable(e, retry.LOST)
            raise
        finally:
            # Whatever it raised: the connection is shared by every broker
            # on this database, and must not stay inside a transaction.
            worker.leaveTransaction()

    job.__qualname__ = getattr(setup, "__qualname__", "setup")
    return job


class AccessBroker:
    """
    Asynchronous access to a database through SQLAlchemy: subclass me,
    set up tables in L{startup}, and write transactions as methods decorated
    with L{transact}.

    Made with a URL (C{AccessBroker("sqlite:///x.db")}) or, without one,
    with the global engine of L{sasync.setup}. Brokers with the same URL and
    keywords share one engine and one queue of connection workers.

    Reliability options, also keywords, for every call of this broker:
    C{retries} and C{timeout} (the defaults of the call-time keywords),
    C{maxPending} (refuse calls with L{sasync.errors.Overloaded} while that
    many wait), C{backoff}, and C{startupTimeout} (how long the start-up
    waits for a database that is not up yet; see L{sasync.startup}). See
    L{sasync.connection} and C{docs/reliability.md}. C{slowTransaction}
    (seconds): a call that takes longer is logged (C{docs/observability.md}).

    Keywords go to C{sqlalchemy.create_engine}, except the broker options
    C{connections}, C{overflowConnections} and C{batchSize} (see
    L{sasync.connection}), and C{processes}: with C{processes=N} (server
    databases only) transactions run in N worker processes, each with its
    own instance of the broker's class (see L{sasync.multicore}).
    """

    #: False for a worker process's broker (processes=N): first() runs once,
    #: sent by the parent.
    _runsFirst = True
    _madeWith: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})

    def __new__(cls, *args: Any, **kw: Any) -> Self:
        self = super().__new__(cls)
        # What it was made with: under processes=N each worker process makes
        # its own instance the same way (see sasync.multicore).
        self._madeWith = (args, kw)
        return self

    def __init__(
        self, url: str | SA.URL | None = None, *, reactor: Any = None, **engineKw: Any
    ) -> None:
        """
        @param url: The database URL; C{None} for the global engine.
        @param reactor: The reactor (the global one by default, resolved
            lazily).
        @raise NoEngineError: no URL and no global engine.
        """
        processes = engineKw.pop("processes", None)
        slowTransaction = _stats.checkSlowTransaction(
            engineKw.pop("slowTransaction", None)
        )
        replicaOptions = replicas.ReplicaOptions.take(engineKw, url)
        self._reactor = reactor
        self._spec = engines.resolveSpec(url, engineKw)
        # The last write this broker committed (a WAL position), if known.
        self._writePosition: int | None = None
        self._metadata = SA.MetaData()
        self._tables: dict[str, SA.Table] = {}
        self._tablesPending: dict[str, Deferred[SA.Table]] = {}
        self._statements = StatementCache()
        self._phase = _NEW
        self._accepting = True
        self._startupFailure: Failure | None = None
        self._startupDone: Deferred[None] | None = None
        self._startupWait: startup.StartupWait | None = None
        self._waitingTasks: list[tuple[Task[Any], float | None]] = []
        self._runningWaiters: list[Deferred[None]] = []
        self._tracked: set[Deferred[Any]] = set()
        self._drainTimer: Any = None
        # When shutdown's timeout runs out (reactor.seconds()), if given.
        self._drainDeadline: float | None = None
        self._idleWaiters: list[Deferred[None]] = []
        self._shutdownDone: Deferred[None] | None = None
        self._listeners = notifications.ListenerSet()
        # A worker process's own broker leaves first() to the parent's.
        self._runsFirst = not multicore.isMakingChildBroker()
        self._pool = multicore.attach(
            type(self),
            self._madeWith,
            processes,
            self._spec,
            reactor=reactor,
            onTables=self._learnTables,
        )
        self._engine: engines.EngineHandle | None = None
        self._handle: WorkQueue
        if self._pool is None:
            self._engine = self._handle = engines.acquire(
                self._spec, self, reactor=reactor
            )
        else:
            # The pool stands in for the engine handle (submit, queue, close).
            self._handle = self._pool
        self._callStats = _stats.CallStats(
            type(self).__name__,
            self._spec.url.render_as_string(hide_password=True),
            self._handle,
            slowTransaction,
        )
        self._replicas = replicas.attach(
            replicaOptions, self._spec, self, processes, reactor=reactor
        )
        if self._replicas is not None and self._engine is not None:
            # Session consistency needs each write's position.
            self._engine.trackWritePositions()
        r = self._getReactor()
        self._triggerID = r.addSystemEventTrigger("before", "shutdown", self.shutdown)
        # Next turn: a subclass's __init__ finishes before startup() runs.
        r.callLater(0, self._start)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._spec.url.render_as_string()} {self._phase}>"
        )

    def _getReactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _engineHandle(self) -> WorkQueue:
        return self._handle

    def _learnTables(self, tables: dict[str, SA.Table]) -> None:
        # Under processes=N: the tables a worker process's broker made, set
        # here too (self.entries) for building statements in the reactor
        # thread. The first process to run tells.
        if self._tables:
            return
        for name, table in tables.items():
            self._tables[name] = table
            setattr(self, name, table)

    def _checkThread(self, method: str) -> None:
        # Deferreds live in the reactor thread: a call of a public method
        # from any other thread (while the reactor runs) is refused.
        checkReactorThread(
            self._getReactor(), lambda: f"{type(self).__name__}.{method}"
        )

    @classmethod
    def setup(cls, url: str | SA.URL, **kw: Any) -> None:
        """
        Set the global engine used by brokers made without a URL; see
        L{sasync.setup}.
        """
        engines.setup(url, **kw)

    # Overridables -------------------------------------------------------------

    def startup(self) -> Any:
        """
        Override: runs in the reactor thread before any transaction; may
        return a Deferred or be a coroutine function. Set up tables here
        with L{table}. Transactions it calls run at once; everybody else's
        wait until it (and L{first}) are done.
        """
        return None

    def first(self) -> Any:
        """
        Override: runs as the first transaction, after L{startup}, before any
        other (it need not be decorated with L{transact}).
        """
        return None

    # Starting -----------------------------------------------------------------

    def _start(self) -> None:
        if self._phase != _NEW:
            return
        self._phase = _STARTING
        self._startupWait = startup.StartupWait(
            self._spec.startupWait, self._getReactor(), self
        )
        if not self._accepting:
            # Started by shutdown() for the calls waiting: don't wait long.
            self._startupWait.stop()
        token = _starting.set(self)
        try:
            self._startupDone = Deferred.fromCoroutine(self._startup())
        finally:
            _starting.reset(token)

    async def _startup(self) -> None:
        try:
            # processes=N: startup() runs in each worker process instead.
            result = self.startup() if self._pool is None else self._pool.start()
            if inspect.isawaitable(result):
                await result
            cls = type(self)
            if cls.first is not AccessBroker.first and self._runsFirst:
                first = getattr(cls.first, "__sasyncTransaction__", cls.first)
                await self._attempts(
                    first, (), {}, CallOptions(doNext=True), self._retries(), None
                )
        except BaseException:
            failure = Failure()  # type: ignore[no-untyped-call]
            if self._startupWait is not None:
                self._startupWait.end()
            self._phase = _FAILED
            self._startupFailure = failure
            log.failure("{broker} failed to start", failure, broker=self)
            waiting, self._waitingTasks = self._waitingTasks, []
            for task, _ in waiting:
                if not task.d.called:
                    task.d.errback(self._startupError())
            self._fireRunningWaiters()
            return
        if self._phase == _STARTING:
            self._phase = _RUNNING
        waiting, self._waitingTasks = self._waitingTasks, []
        for task, timeout in waiting:
            if task.state is TaskState.QUEUED:  # (not cancelled meanwhile)
                self._handle.submit(task, timeout)
        self._fireRunningWaiters()

    def _startupError(self) -> Failure:
        assert self._startupFailure is not None
        return startup.startupError(
            type(self).__name__,
            self._spec.url.render_as_string(hide_password=True),
            self._startupFailure,
            self._startupWait,
        )

    def _inStartup(self) -> bool:
        # Work of the start-up itself (it waits for a missing database).
        return self._phase == _STARTING and _starting.get() is self

    def _fireRunningWaiters(self) -> None:
        waiters, self._runningWaiters = self._runningWaiters, []
        for d in waiters:
            if self._phase == _FAILED:
                d.errback(self._startupError())
            else:
                d.callback(None)

    @property
    def running(self) -> bool:
        """
        True once startup (and L{first}) finished, until L{shutdown}.
        """
        return self._phase == _RUNNING and self._accepting

    def waitUntilRunning(self) -> Deferred[None]:
        """
        A Deferred that fires once the broker runs (at once if it does), or
        fails with L{sasync.errors.StartupError} if its startup failed.

        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._checkThread("waitUntilRunning")
        if self._phase == _RUNNING:
            return succeed(None)
        if self._phase == _STOPPED:
            return fail(BrokerStopped(f"{type(self).__name__} is shut down"))
        if self._phase == _FAILED:
            return fail(self._startupError())
        d: Deferred[None] = Deferred()
        self._runningWaiters.append(d)
        return d

    def callWhenRunning(
        self, f: Callable[..., Any], *args: Any, **kw: Any
    ) -> Deferred[Any]:
        """
        Call C{f(*args, **kw)} once the broker runs.

        @return: A Deferred firing with C{f}'s result (waited for if it is a
            Deferred or coroutine).
        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._checkThread("callWhenRunning")

        def call(_: None) -> Any:
            result = f(*args, **kw)
            if inspect.iscoroutine(result):
                return Deferred.fromCoroutine(result)
            return result

        return self.waitUntilRunning().addCallback(call)

    def stats(self) -> _stats.BrokerStats:
        """
        A snapshot of this broker: its queue, connections and call counts;
        cheap (a few counters read). See L{sasync._stats.BrokerStats}.
        """
        return self._callStats.snapshot(len(self._waitingTasks))

    # Transactions -------------------------------------------------------------

    def _newTask(
        self,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
        mayGuessReadOnly: bool = False,
    ) -> Task[Any]:
        # mayGuessReadOnly: the call runs again after a wrong read-only guess.
        call = TransactionCall(
            self,
            options.target or self._engine,
            f,
            options,
            _returnsRows,
            _wrote if mayGuessReadOnly else None,
        )
        task: Task[Any] = Task(
            call,
            args,
            kw,
            niceness=options.niceness,
            doNext=options.doNext,
            doLast=options.doLast,
            raw=options.raw,
            consumer=options.consumer,
        )
        # A stop (cancel, timeout) interrupts it at the driver. Its caller
        # hears at once while COMMIT was not sent (then it cannot commit),
        # and waits for the worker only once COMMIT was sent: see
        # transact._commitPoint. (Worker processes decide in their own
        # process: the caller waits for them.)
        task.abandonable = self._pool is None
        if not options.readOnly and self._engine and self._engine.tracksWritePosition:
            task.d.addCallback(self._wrotePosition, call)
        task.onInterrupt(functools.partial(_interrupt, task, self._getReactor()))
        return task

    def _transact(
        self,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
    ) -> Deferred[Any]:
        """
        Reactor thread: queue C{f} as a transaction; see L{transact}.
        """
        if self._refusing() and options.target is None:
            return fail(
                BrokerStopped(
                    f"{describeCall(self, f, args, kw)} was called after"
                    f" {type(self).__name__}.shutdown(): the broker takes no new work"
                )
            )
        spec = self._spec
        if spec.maxPending is not None:
            pending = self._pendingCount()
            if pending >= spec.maxPending:
                return fail(
                    Overloaded(
                        f"{describeCall(self, f, args, kw)} was refused at once:"
                        f" {pending} transactions already wait for a connection"
                        f" (maxPending={spec.maxPending})"
                    )
                )
        if (
            self._replicas is not None
            and options.readOnly
            and options.target is None
            and not self._inStartup()
        ):
            # It may run on a replica (see sasync.connection._replicas).
            d = self._replicas.route(
                self._writePosition,
                None if options.after is None else positions.parseLSN(options.after),
                lambda h: self._transact(
                    f, args, kw, dataclasses.replace(options, target=h or self._engine)
                ),
            )
            self._track(d)
            return d
        retries = spec.retries if options.retries is None else options.retries
        timeout = spec.timeout if options.timeout is None else options.timeout
        reasons = None
        if retries is None:
            if self._pool is None and not self._spec.isSQLite:
                # The default: conflicts of serializable transactions run
                # again (worker processes do that themselves; SQLite has
                # none).
                retries, reasons = retry.CONFLICT_RETRIES, retry.RETRIED_BY_DEFAULT
                if timeout is None and not self._inStartup():
                    return self._retryingConflicts(f, args, kw, options)
            else:
                retries = 0
        if not retries and timeout is None and not self._inStartup():
            return self._submit(self._newTask(f, args, kw, options), None)
        if self._inStartup():
            # The start-up's own work: its policy decides (sasync.startup).
            reasons = None
        return self._attempts(f, args, kw, options, retries, timeout, reasons)

    def _retries(self) -> int:
        # The broker's retries for its start-up work (conflicts only by
        # default: sasync.startup waits for a missing database by time).
        retries = self._spec.retries
        return retry.CONFLICT_RETRIES if retries is None else retries

    def _retryingConflicts(
        self,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
    ) -> Deferred[Any]:
        # The common case, kept as cheap as a call without retries: one task,
        # and only if it fails with a conflict does retry.Attempts take over
        # (its Deferred chained into the task's, which shutdown tracks).
        task = self._newTask(f, args, kw, options, True)
        now = _starting.get() is self

        def conflicted(failure: Failure) -> Any:
            error = failure.value
            reason = None if error is None else retry.retryReason(error)
            if reason not in retry.RETRIED_BY_DEFAULT:
                return failure
            attempts = self._newAttempts(
                lambda: self._newTask(f, args, kw, options, True),
                lambda task: self._submit(task, None, now, track=False),
                describeCall(self, f, args, kw),
                retry.CONFLICT_RETRIES,
                None,
                retry.RETRIED_BY_DEFAULT,
            )
            # Tracked too: shutdown(timeout=) cancels what is not called yet,
            # and task.d is (it waits for this one).
            self._track(attempts.d)
            return attempts.adopt(task, failure)

        task.d.addErrback(conflicted)
        return self._submit(task, None, now)

    def _attempts(
        self,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
        retries: int,
        timeout: float | None,
        reasons: frozenset[str] | None = None,
    ) -> Deferred[Any]:
        # A call with retries or a timeout, or made by the start-up: driven
        # by retry.Attempts, which makes a new task for each attempt.
        if reasons is None and options.retries != retries:
            # (Seen by the transaction: it prepares the COMMIT lookup when
            # lost connections may be retried.)
            options = dataclasses.replace(options, retries=retries)
        now = _starting.get() is self  # (Retries run outside this context.)

        def makeTask() -> Task[Any]:
            return self._newTask(f, args, kw, options, retries > 0)

        def submit(task: Task[Any]) -> Deferred[Any]:
            return self._submit(task, None, now, track=False)

        return self._retrying(
            makeTask, submit, describeCall(self, f, args, kw), retries, timeout, reasons
        )

    def _retrying(
        self,
        makeTask: Callable[[], Task[Any]],
        submit: Callable[[Task[Any]], Deferred[Any]],
        description: str,
        retries: int,
        timeout: float | None,
        reasons: frozenset[str] | None = None,
    ) -> Deferred[Any]:
        # Its Deferred is the one tracked.
        attempts = self._newAttempts(
            makeTask, submit, description, retries, timeout, reasons
        )
        self._track(attempts.d)
        return attempts.start()

    def _newAttempts(
        self,
        makeTask: Callable[[], Task[Any]],
        submit: Callable[[Task[Any]], Deferred[Any]],
        description: str,
        retries: int,
        timeout: float | None,
        reasons: frozenset[str] | None,
    ) -> retry.Attempts:
        # The start-up's own work waits for a missing database by time (see
        # sasync.startup), not by count.
        handle = self._handle
        mayRetry = None
        wait = self._startupWait
        if wait is not None and self._inStartup():
            mayRetry = wait.policy(retries)
            retries = sys.maxsize

        def counted(reason: str) -> None:
            self._callStats.retry(reason)
            counter = getattr(handle, "retries", None)
            if counter is not None:
                counter[reason] += 1

        return retry.Attempts(
            makeTask,
            submit,
            retries=retries,
            timeout=timeout,
            backoff=self._spec.backoff,
            clock=self._getReactor(),
            description=description,
            onRetry=counted,
            mayRetry=mayRetry,
            reasons=reasons,
        )

    def _pendingCount(self) -> int:
        # Transactions waiting for a connection on this broker's engine:
        # queued, or handed to a busy worker to run after its current one
        # (running() counts those too, beyond one per worker).
        queue = getattr(self._handle, "queue", None)
        if queue is None:
            return len(self._waitingTasks)
        handedAhead = max(0, int(queue.running()) - len(queue.workers))
        return int(queue.pending()) + handedAhead + len(self._waitingTasks)

    def _refusing(self) -> bool:
        # After shutdown() only the broker's own startup may still add work.
        return not self._accepting and _starting.get() is not self

    def _submit(
        self,
        task: Task[Any],
        timeout: float | None,
        now: bool = False,
        track: bool = True,
    ) -> Deferred[Any]:
        if track:
            self._track(task.d)
        if now or self._phase == _RUNNING or _starting.get() is self:
            target = getattr(task.f, "_handle", None) or self._handle
            return target.submit(task, timeout)
        if self._phase == _FAILED:
            task.d.errback(self._startupError())
            return task.d
        if self._phase == _STOPPED:
            stopped = BrokerStopped(f"{task.info} was refused: the broker is shut down")
            task.d.errback(Failure(stopped))  # type: ignore[no-untyped-call]
            return task.d
        # Startup is not done yet: queue it when it is.
        self._waitingTasks.append((task, timeout))
        return task.d

    def _wrotePosition(self, result: T, call: TransactionCall) -> T:
        # Reactor thread: the call's write committed at call.writePosition.
        position = call.writePosition
        if position is not None and (
            self._writePosition is None or position > self._writePosition
        ):
            self._writePosition = position
        return result

    @property
    def writePosition(self) -> str | None:
        """
        The WAL position (C{"0/16B3740"}) of the last write this broker
        committed, or C{None} (none yet, or not PostgreSQL). Hand it to a
        read-only call elsewhere as C{after=} to read this write there.

        Learning it costs one short query per write transaction, so a
        broker without replicas learns it only from the first time this is
        read (C{None} until a write commits after that).
        """
        if self._engine is not None and not self._engine.tracksWritePosition:
            self._engine.trackWritePositions()
        p = self._writePosition
        return None if p is None else positions.formatLSN(p)

    def _track(self, d: Deferred[Any]) -> None:
        # Reactor thread: shutdown waits until every tracked Deferred fired
        # (and, given a timeout, cancels those left).
        tracked = self._tracked
        tracked.add(d)

        def landed(result: object) -> object:
            tracked.discard(d)
            if not tracked and self._idleWaiters:
                waiters, self._idleWaiters = self._idleWaiters, []
                for w in waiters:
                    w.callback(None)
            return result

        d.addBoth(landed)

    def _whenIdle(self) -> Deferred[None]:
        if not self._tracked:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idleWaiters.append(d)
        return d

    # Inside a transaction -----------------------------------------------------

    @property
    def conn(self) -> Connection:
        """
        The current transaction's C{Connection} (worker thread only).

        @raise NotInTransaction: outside a transaction.
        """
        return currentConnection()

    connection = conn

    @property
    def session(self) -> Session:
        """
        An ORM C{Session} on the current transaction's connection and
        transaction (worker thread only): flushed before COMMIT, its objects
        not expired by it.

        @raise NotInTransaction: outside a transaction.
        """
        return currentSession()

    def s(self, *args: Any) -> Any:
        """
        The statement cache: C{s(name)} selects C{name} and says whether a
        statement is cached under it; C{s([cols], *where)} or
        C{s(statement)} caches one under the selected name; C{s()} returns
        it, to C{.execute(**params)} in the current transaction. See
        L{sasync.statements}.
        """
        return self._statements.s(*args)

    # Tables -------------------------------------------------------------------

    def table(self, name: str, *columns: Any, **kw: Any) -> Deferred[SA.Table]:
        """
        Create table C{name} with C{columns} if it is missing, with the
        indexes named by C{index_NAME=[cols]} and C{unique_NAME=[cols]}
        keywords (database names C{ix_<table>_<NAME>} and
        C{ux_<table>_<NAME>}), and set C{self.<name>} to the C{Table}.
        Other keywords go to C{sqlalchemy.Table}.

        Idempotent: an existing table or index is left alone, and losing a
        race with another broker creating them is no error. An existing
        table is compared with the declaration: missing nullable or
        server-defaulted columns and missing indexes are added (not with
        C{evolve=False}); any other difference fails with
        L{SchemaMismatch<sasync.errors.SchemaMismatch>} (see
        C{docs/schema.md}).

        @return: A Deferred firing with the C{Table}.
        @raise TableNameError: C{name} would shadow a method or attribute.
        @raise WrongThread: called from a thread other than the reactor's.
        @raise SchemaMismatch: (in the Deferred) the database's table
            differs from the declaration in a way not added by itself.
        """
        self._checkThread("table")
        if name in self._tables:
            return succeed(self._tables[name])
        if name in self._tablesPending:
            d: Deferred[SA.Table] = Deferred()

            def passOn(t: SA.Table) -> SA.Table:
                d.callback(t)
                return t

            self._tablesPending[name].addCallback(passOn)
            return d
        if self._refusing():
            return fail(BrokerStopped(f"table({name!r}) was called after shutdown()"))
        if self._phase == _FAILED:
            return fail(self._startupError())
        tables.checkTableName(self, name, self._tables)
        indexes, tableKw = tables.splitIndexKeywords(name, kw)
        table = tables.defineTable(self._metadata, name, columns, indexes, tableKw)
        create = _inWorker(functools.partial(tables.createTable, table=table))

        def makeTask() -> Task[None]:
            return Task(create, niceness=-20)

        # Only a missing or lost connection makes it run again (see _inWorker).
        done = self._retrying(
            makeTask,
            self._handle.submit,
            f"{type(self).__name__}.table({name!r})",
            self._retries(),
            None,
        )

        def created(_: None) -> SA.Table:
            del self._tablesPending[name]
            self._tables[name] = table
            setattr(self, name, table)
            return table

        def failed(failure: Failure) -> Failure:
            del self._tablesPending[name]
            self._metadata.remove(table)
            return failure

        pending = self._tablesPending[name] = done.addCallbacks(created, failed)
        return pending

    def migrate(
        self, scriptLocation: str | os.PathLike[str], revision: str = "head"
    ) -> Deferred[str]:
        """
        Upgrade the database with Alembic (extra C{sAsync[migrations]}) to
        C{revision}, with the script directory at C{scriptLocation}: in a
        worker thread, on the broker's engine, the worker's connection
        passed to C{env.py} as C{config.attributes["connection"]}. Brokers
        and processes migrating at once take turns on a database lock: one
        migrates, the others then find it done. Usually called from
        L{startup} before its L{table} calls; see C{docs/schema.md} and
        L{sasync.migrations}.

        @return: A Deferred firing with the revision now current (several
            heads joined with C{","}; C{""} if none).
        @raise MigrationFailed: (in the Deferred) a migration failed; it
            names the revision.
        """
        if self._refusing():
            return fail(BrokerStopped("migrate() was called after shutdown()"))
        if self._phase == _FAILED:
            return fail(self._startupError())
        try:
            migrations.requireAlembic()
        except ImportError:
            return fail()
        job = _inWorker(
            functools.partial(
                migrations.upgrade,
                scriptLocation=os.fspath(scriptLocation),
                revision=revision,
                pooled=self._spec.pooler is not None,
            )
        )
        return self._retrying(
            lambda: Task(job, niceness=-20),
            self._handle.submit,
            f"{type(self).__name__}.migrate({os.fspath(scriptLocation)!r})",
            self._retries(),
            None,
        )

    # Conveniences -------------------------------------------------------------

    def select(self, *args: Any, **kw: Any) -> SA.Select[Any]:
        """
        C{sqlalchemy.select(*args, **kw)}, at once (no Deferred).
        """
        return SA.select(*args, **kw)

    @contextmanager
    def selex(self, *args: Any, **kw: Any) -> Iterator[SelectHolder]:
        """
        A context manager yielding a placeholder for C{select(*args)}: call
        its generative methods (C{where}, C{order_by}, ...) inside the
        block, then call it for the result. Inside a transaction that is the
        C{Result}; outside, a Deferred from a transaction run with the
        call-time keywords C{kw}::

            with self.selex(t.c.id) as sh:
                sh.where(t.c.value > 10)
            rows = yield sh(asList=True)
        """
        yield from selectHolder(self.execute, args, kw)

    @transact
    def _selectRows(self, statement: Any) -> Any:
        return self.conn.execute(statement)

    def selectorator(
        self,
        statement: Any,
        consumer: Any = None,
        de: Deferred[None] | None = None,
        N: int = 1,
    ) -> Deferred[Any]:
        """
        Run C{statement} as a transaction and iterate its rows: the Deferred
        fires with a L{Deferator} of rows (of lists of C{N} rows if C{N} >
        1), or, given a C{consumer}, with the consumer once every row was
        written to it. C{de}, if given, fires once the statement has run,
        before the iteration.
        """
        self._checkThread("selectorator")
        if isinstance(N, bool) or not isinstance(N, int) or N < 1:
            raise ValueError(f"selectorator(N={N!r}): N must be a positive int")
        options = CallOptions(consumer=consumer, groupSize=N)
        if consumer is not None:
            from .transact import checkOptions

            checkOptions("selectorator", options)
        fn = type(self)._selectRows.__sasyncTransaction__  # type: ignore[attr-defined]
        d = self._transact(fn, (statement,), {}, options)
        if de is not None:

            def executed(result: Any) -> Any:
                if not de.called:
                    de.callback(None)
                return result

            d.addCallback(executed)
        return d

    @transact
    def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        """
        A transaction running C{statement} (a string is taken as SQL text)
        with parameters C{args} (a dict or a list of dicts) or keywords;
        the result is handled as any transaction's (a L{Deferator} of rows,
        a list with C{asList=True}, ...).
        """
        if isinstance(statement, str):
            statement = _text(statement)
        if kw:
            return self.conn.execute(statement, kw)
        return self.conn.execute(statement, *args)

    def sql(self, text: str, **params: Any) -> Deferred[list[Row[Any]]]:
        """
        Run SQL text (with C{:name} parameters from C{params}) as a
        transaction; fires with the list of rows (call-time keywords such as
        C{niceness} may be given too).
        """
        if "consumer" not in params and "raw" not in params:
            params.setdefault("asList", True)
        return self.execute(_text(text), **params)

    @transact
    def produceRows(
        self,
        /,
        f: Callable[[Any], Any] | None,
        iterator: Any,
        table: SA.Table | str,
        colName: str,
        **constants: Any,
    ) -> list[Any]:
        """
        One transaction inserting a row for each item of C{iterator} into
        C{table} (a C{Table} or a table name): column C{colName} gets
        C{f(item)} (the item itself if C{f} is C{None}), and the other
        columns the C{constants}. Fires with the new rows' primary keys, in
        order. C{f} runs in the transaction's worker thread and returns the
        value itself: a Deferred or coroutine from it is refused with
        C{TypeError} (the original sAsync took one; resolve those values
        first and pass C{f=None}).
        """
        if isinstance(table, str):
            table = getattr(self, table)
        assert isinstance(table, SA.Table)
        conn = self.conn
        keys = []
        for item in iterator:
            value = item if f is None else f(item)
            if isinstance(value, Deferred) or inspect.isawaitable(value):
                raise TypeError(
                    f"produceRows: {f!r} returned {value!r} for {item!r}; f runs in"
                    " a worker thread and must return the value: resolve the"
                    " values first and pass f=None (see docs/originals.md)"
                )
            result = conn.execute(table.insert().values({colName: value, **constants}))
            primaryKey = result.inserted_primary_key
            keys.append(
                primaryKey[0]
                if primaryKey is not None and len(primaryKey) == 1
                else primaryKey
            )
        return keys

    def listen(
        self, channel: str, callback: Callable[[str], object]
    ) -> Deferred[notifications.Listener]:
        """
        PostgreSQL: call C{callback(payload)} in the reactor thread for each
        notification sent on C{channel}, in the order sent, from a
        connection and thread of the listener's own. After a lost
        connection it listens again by itself, then calls
        C{callback.onReconnect()} if there is one (notifications sent
        meanwhile are missed). Stop it with L{sasync.Listener.stop}
        or the broker's L{shutdown}. See C{docs/notifications.md}.

        @return: Fires with the L{sasync.Listener} once C{LISTEN} is
            active; fails with L{sasync.errors.NotSupported} elsewhere than
            PostgreSQL, and behind a transaction-mode pooler (C{pooled=True}).
        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._checkThread("listen")
        if self._refusing():
            return fail(
                BrokerStopped(f"listen({channel!r}) was called after shutdown()")
            )
        if self._spec.pooler is not None:
            # LISTEN stays on the server connection it ran on, which a
            # transaction-mode pooler lends to others after each statement.
            return fail(
                NotSupported(
                    f"listen({channel!r}): LISTEN needs a connection of its own,"
                    " which a transaction-mode pooler (pooled=True) can't keep:"
                    " listen through a broker on a direct URL"
                )
            )
        return notifications.listen(
            self._spec.url,
            dict(self._spec.engineKw),
            channel,
            callback,
            backoff=self._spec.backoff,
            listeners=self._listeners,
            whenRunning=self.waitUntilRunning(),
            reactor=self._getReactor(),
        )

    @transact
    def notify(self, channel: str, payload: str = "") -> None:
        """
        PostgreSQL: send C{payload} on C{channel}. Called from the reactor
        thread it is a transaction of its own (a C{Deferred[None]});
        called inside a transaction it joins it, and the notification is
        delivered when that transaction commits, never if it rolls back.

        @raise NotSupported: Elsewhere than PostgreSQL.
        """
        notifications.notifyIn(self.conn, channel, payload)

    def deferToQueue(
        self, func: Callable[..., Any], *args: Any, niceness: int = 0, **kw: Any
    ) -> Deferred[Any]:
        """
        Run C{func(*args, **kw)} in one of the broker's worker threads (not
        in a transaction), once the broker runs, with the queue's keywords
        (C{niceness}, C{doNext}, C{timeout}, ...).

        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._checkThread("deferToQueue")
        if self._refusing():
            return fail(
                BrokerStopped(f"deferToQueue({func!r}) was called after shutdown()")
            )
        queue = self._handle.queue

        def call(_: None) -> Deferred[Any]:
            d = queue.call(func, *args, niceness=niceness, **kw)
            return d

        if self._phase == _RUNNING or _starting.get() is self:
            d = call(None)
        else:
            d = self.waitUntilRunning().addCallback(call)
        self._track(d)
        return d

    # Shutting down ------------------------------------------------------------

    def shutdown(self, timeout: float | None = None) -> Deferred[None]:
        """
        Refuse new work, wait for queued and running transactions and for
        the Deferreds of L{wait}-decorated methods, then let go of the engine
        (the last broker on it closes its connections, each in its thread,
        and disposes it). Idempotent; runs by itself before the reactor
        stops; safe before startup finished.

        @param timeout: Seconds to let accepted work finish; then whatever
            is left is cancelled: queued transactions fail with
            C{CancelledError} without running, running ones too, at once
            (they are interrupted at the driver and roll back in the
            background), except a transaction whose COMMIT was already
            sent, whose outcome is waited for. Either way each caller hears
            how its call ended; nothing is dropped silently. Then the
            workers get L{SHUTDOWN_GRACE} more seconds to close; any still
            busy (in code of yours that never returns to the database, or
            on a server that does not answer) is left to end by itself,
            and logged. A later call with a timeout may shorten the wait of
            an earlier one.
        @raise ValueError: C{timeout} is not a number >= 0.
        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._checkThread("shutdown")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or timeout < 0
        ):
            raise ValueError(f"shutdown(timeout={timeout!r}): not a number >= 0")
        if self._shutdownDone is None:
            self._accepting = False
            if self._startupWait is not None:
                self._startupWait.stop()
            self._shutdownDone = Deferred.fromCoroutine(self._shutdown())
        if timeout is not None and not self._shutdownDone.called:
            self._armDrainTimer(timeout)
        d: Deferred[None] = Deferred()

        def passOn(result: object) -> object:
            if isinstance(result, Failure):
                d.errback(result)
                return None
            d.callback(None)
            return result

        self._shutdownDone.addBoth(passOn)
        return d

    def _armDrainTimer(self, timeout: float) -> None:
        reactor = self._getReactor()
        deadline = reactor.seconds() + timeout
        if self._drainDeadline is None or deadline < self._drainDeadline:
            self._drainDeadline = deadline
        timer = self._drainTimer
        if timer is not None and timer.active():
            if timer.getTime() <= reactor.seconds() + timeout:
                return
            timer.cancel()
        self._drainTimer = reactor.callLater(timeout, self._cancelLeft)

    def _cancelLeft(self) -> None:
        # Reactor thread: the drain timeout ran out. A Deferred already
        # called here waits for an honest stop: leave it be (cancelling it
        # again would stop waiting for the worker).
        self._drainTimer = None
        left = [d for d in self._tracked if not d.called]
        if left:
            log.info(
                "{broker}: shutdown's timeout ran out; cancelling {n} calls",
                broker=self,
                n=len(left),
            )
        for d in left:
            if not d.called:
                d.cancel()

    async def _shutdown(self) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            # (Already fired or removed.)
            self._getReactor().removeSystemEventTrigger(self._triggerID)
        await self._listeners.stopAll()
        if self._phase == _NEW and self._waitingTasks:
            # Calls accepted before startup ran: start, so that they run.
            self._start()
        if self._phase == _STARTING and self._startupDone is not None:
            await self._startupDone
        await self._whenIdle()
        timer, self._drainTimer = self._drainTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self._phase != _FAILED:
            self._phase = _STOPPED
        closing = engines.release(self._handle, self)
        if self._replicas is not None:
            closing = replicas.closeBoth(closing, self._replicas)
        if self._drainDeadline is None:
            await closing
            return
        # With a timeout: every caller has heard by now; wait a little for
        # the workers to finish and close, but not for ones stuck (in code
        # that never returns to the database, or on a server that does not
        # answer: those are cut, see sasync.connection._cancel).
        reactor = self._getReactor()
        wait = max(self._drainDeadline - reactor.seconds(), 0.0) + SHUTDOWN_GRACE
        try:
            await closing.addTimeout(wait, reactor)
        except defer.TimeoutError:
            abandon = getattr(self._handle, "abandon", None)
            if abandon is not None:
                abandon()


for _method in (AccessBroker.execute, AccessBroker._selectRows):
    ALWAYS_STREAM.add(_method.__sasyncTransaction__)  # type: ignore[attr-defined]
del _method

__all__ = ["AccessBroker"]
