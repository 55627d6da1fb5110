"""
How a broker's calls get in: refused after shutdown or while too many wait
(C{maxPending}), routed to a replica, run again after failures that allow
it (L{sasync.retry}), held at the writer gate (L{sasync._writegate}) or
until the start-up is done, and tracked for shutdown.

L{Admission} holds no broker: the object whose method a call runs is
passed with each call (C{owner}), and the rest (the engine handle, the
broker's L{Lifecycle}, its counters) are handed in. It is what
C{@transact} calls (L{sasync._protocols.TransactionSite}). Reactor thread
only.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from asynqueue import Task

from . import retry
from ._lifecycle import Lifecycle, Phase, starting
from ._protocols import WorkQueue
from ._readguess import CallGuess, methodMix
from ._stats import COMMITTED, CallRecord, CallStats
from ._writegate import WriterGate
from .connection import ConnectionWorker, checkReactorThread
from .connection import _engines as engines
from .connection import _positions as positions
from .connection import _replicas as replicas
from .errors import BrokerStopped, Overloaded
from .transact import DEFAULT_OPTIONS, CallOptions, TransactionCall, describeCall

T = TypeVar("T")

#: Per @transact function: did its last call return rows? (Worker threads
#: write it, one item at a time.) Decides server-side cursor streaming.
_returnsRows: dict[Callable[..., Any], bool] = {}
#: Per @transact function: was it seen writing (True) or only reading
#: (False)? Decides READ ONLY guesses on PostgreSQL (same threading).
_wrote: dict[Callable[..., Any], bool] = {}


_RUNNING = Phase.RUNNING


class Admission:
    """
    A broker's calls on their way to its queue.

    @ivar handle: Where its tasks go: the engine handle, or under
        C{processes=N} its pool of worker processes.
    @ivar stats: Its call counters.
    @ivar writePosition: The WAL position of the last write it committed,
        if known.
    @ivar gate: Its writer gate (L{sasync._writegate}), or C{None}.
    """

    def __init__(
        self,
        *,
        name: str,
        spec: engines.EngineSpec,
        handle: WorkQueue,
        engine: engines.EngineHandle | None,
        replicaSet: replicas.ReplicaSet | None,
        lifecycle: Lifecycle,
        stats: CallStats,
        getReactor: Callable[[], Any],
    ) -> None:
        """
        @param name: The broker's class name, for messages.
        @param engine: The engine handle (C{None} under C{processes=N}).
        @param replicaSet: Its replicas, if any.
        """
        self._name = name
        self._spec = spec
        self.handle = handle
        self._engine = engine
        self._replicas = replicaSet
        self._life = lifecycle
        self.stats = stats
        self._getReactor = getReactor
        self._inPool = engine is None
        self.writePosition: int | None = None
        self.gate = _writerGate(spec, engine)
        # Whether calls may run READ ONLY by guess (and then pass the gate
        # by): PostgreSQL at SERIALIZABLE (see sasync._readguess).
        self._readersKnown = engine is not None and engine.guessesReadOnly
        # Whether transact() has either to look at (neither, at READ
        # COMMITTED, say: then it skips both at once, per call).
        self._gatesOrGuesses = self.gate is not None or self._readersKnown
        # Whether a call that sets none of its own policies (retries,
        # timeout) gets the default conflict retries and nothing else from
        # the broker's: then, while the broker runs, transact() goes
        # straight to the common case (per call).
        self._plainRetries = (
            engine is not None
            and not spec.isSQLite
            and spec.retries is None
            and spec.timeout is None
            and spec.maxPending is None
        )
        # Under processes=N, the same for a call that sets neither: the
        # worker process retries it, so the parent has nothing to add while
        # the broker runs, and the pool queues it (see transact).
        poolTransact = getattr(handle, "submitTransaction", None)
        self._plainInPool = (
            self._inPool
            and poolTransact is not None
            and spec.retries is None
            and spec.timeout is None
            and spec.maxPending is None
        )
        self._poolTransact: Callable[..., Deferred[Any]] = poolTransact or _noPool
        # Bound once: every call waiting in the queue would hold its own.
        self._countRows = stats.addRows
        self._inPoolEndedBound = self._inPoolEnded
        self._poolHold = lifecycle.hold
        self._poolRelease = lifecycle.release
        self._firstEndedBound = self._firstEnded
        self._interruptBound = self._interrupt
        self._letIn = self._submitLetIn
        self._release = lifecycle.release
        self._letInNow = self._submitLetInNow

    # What @transact calls (sasync._protocols.TransactionSite) -----------------

    def checkThread(self, method: str) -> None:
        """
        Deferreds live in the reactor thread: a call of a public method
        from any other thread (while the reactor runs) is refused.
        """
        checkReactorThread(self._getReactor(), lambda: f"{self._name}.{method}")

    def track(self, d: Deferred[Any]) -> None:
        """
        Make shutdown wait for C{d}.
        """
        self._life.track(d)

    def transact(
        self,
        owner: object,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
        counted: str | None = None,
        record: CallRecord | None = None,
    ) -> Deferred[Any]:
        """
        Queue C{f(owner, *args, **kw)} as a transaction; see
        L{sasync.transact.transact}.

        @param counted: The method name to count the call under in
            L{stats} where it ends, whichever way; C{None}: not counted
            here.
        @param record: The call's record (see L{CallStats.begin}) if it is
            timed or traced.
        """
        life = self._life
        running = life.phase is _RUNNING
        if not (
            self._plainRetries
            and running
            and life.accepting
            and (
                options is DEFAULT_OPTIONS
                or (
                    options.retries is None
                    and options.timeout is None
                    and not (options.readOnly and self._replicas is not None)
                )
            )
        ):
            # (Else what _admit does comes to the common case below, in
            # more steps: not refused, no replica to route to, no start-up's
            # own work.)
            d = self._admit(owner, f, args, kw, options, counted, record)
            if d is not None:
                return d
        # The common case: the default conflict retries, kept as cheap as a
        # call without retries: one task, and only if it fails with a
        # conflict does retry.Attempts take over (its Deferred chained into
        # the task's, which shutdown tracks). Each attempt that may write
        # passes the writer gate.
        # (_newTask, inline for the first attempt: this runs per call. The
        # engine is known here: not in a worker process.)
        engine: Any = self._engine
        target: Any = options.target or engine
        call = TransactionCall(
            owner,
            target,
            f,
            options,
            _returnsRows,
            _wrote,
            self._countRows,
            record,
        )
        # (options.task(call, args, kw), its common case inline: per call.)
        task = (
            Task.plain(call, args, kw)
            if options is DEFAULT_OPTIONS
            else options.task(call, args, kw)
        )
        task.abandonable = True
        readOnly = options.readOnly
        if not readOnly and engine.tracksWritePosition:
            task.d.addCallback(self._wrotePosition, call)
        # (task.interruptWith(...), inline: per call. The task is new, known
        # to no other thread.)
        task._interrupter = self._interruptBound
        # (Lifecycle.inStartupContext, inline.)
        now = starting.get() is life
        # One observer for what the call's end sets off (see _firstEnded),
        # called as the task ends (no callback on its Deferred): one bound
        # method for all calls, what it needs kept on the call itself. Every
        # call waiting in the queue would hold a partial or closure of its
        # own (and its arguments), more objects for each full collection of
        # the garbage collector to traverse (see docs/latency.md).
        if now:
            call.startedInStartup = True
        if counted is not None:
            call.countedAs = counted
        task.onEnded = self._firstEndedBound
        # Tracked for shutdown without an observer of the tracker's:
        # _firstEnded releases it.
        life.hold(task.d)
        if self._gatesOrGuesses:
            # (Only there: a writer gate, or READ ONLY guesses, or both.)
            gate = self.gate
            # (_gated, inline: a guess below may still let it by.)
            gated = gate is not None and not readOnly and options.consumer is None
            if self._readersKnown and not readOnly:
                # (Its observer above lets it learn what the call did; the
                # CallGuess that carries it across attempts is made only if
                # there are more: see _firstEnded.)
                if methodMix.guess(f, _wrote.get(f)):
                    # (Asked again as it starts: TransactionCall.stillGuessed.)
                    call.guess = True
                    gated = False
                else:
                    call.guess = False
            if gated:
                assert gate is not None
                # (The gate hears how it ended first, before a retry holds
                # on.)
                call.gateEntry = gate.enter(task)
                return gate.submit(task, self._letInNow if now else self._letIn)
        if running:
            # (submit's answer, without the call: its task's handle.)
            return target.enqueue(task)  # type: ignore[no-any-return]
        return self.submit(task, None, now, False)

    def _admit(
        self,
        owner: object,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
        counted: str | None,
        record: CallRecord | None,
    ) -> Deferred[Any] | None:
        # What transact does for a call that is not surely the common case:
        # refuse it, route it, or give it its own retries or timeout; None:
        # the common case after all (transact goes on).
        life = self._life
        if (
            self._plainInPool
            and life.phase is _RUNNING
            and life.accepting
            and options.retries is None
            and options.timeout is None
        ):
            # Under processes=N, while the broker runs, a call with no
            # retries or timeout of its own: the worker process runs it as
            # a broker in one process would (retries, guesses, the writer
            # gate); the pool makes its task and queues it (see
            # ProcessPool.submitTransaction). Here it is counted as it
            # ends, and shutdown waits for it, from one observer called as
            # its task ends (no callback on its Deferred).
            return self._poolTransact(
                owner,
                f,
                args,
                kw,
                options,
                record,
                functools.partial(self._inPoolEndedBound, counted, record),
                self._poolHold,
            )
        if life.refusing() and options.target is None:
            return self._counted(
                fail(
                    BrokerStopped(
                        f"{describeCall(owner, f, args, kw)} was called after"
                        f" {self._name}.shutdown(): the broker takes no new work"
                    )
                ),
                counted,
                record,
            )
        spec = self._spec
        if spec.maxPending is not None:
            pending = self.pendingCount()
            if pending >= spec.maxPending:
                return self._counted(
                    fail(
                        Overloaded(
                            f"{describeCall(owner, f, args, kw)} was refused at"
                            f" once: {pending} transactions already wait for a"
                            f" connection (maxPending={spec.maxPending})"
                        )
                    ),
                    counted,
                    record,
                )
        inStartup = life.inStartup()
        if (
            self._replicas is not None
            and options.readOnly
            and options.target is None
            and not inStartup
        ):
            return self._counted(
                self._routed(owner, f, args, kw, options, record), counted, record
            )
        retries = spec.retries if options.retries is None else options.retries
        timeout = spec.timeout if options.timeout is None else options.timeout
        reasons = None
        if retries is None:
            if not self._inPool and not spec.isSQLite:
                # The default: conflicts of serializable transactions run
                # again (worker processes do that themselves; SQLite has
                # none).
                retries, reasons = retry.CONFLICT_RETRIES, retry.RETRIED_BY_DEFAULT
                if timeout is None and not inStartup:
                    return None
            else:
                retries = 0
        if not retries and timeout is None and not inStartup:
            d = self.submit(
                self._newTask(owner, f, args, kw, options, record=record), None
            )
        else:
            if inStartup:
                # The start-up's own work: its policy decides (sasync.startup).
                reasons = None
            d = self.attempts(
                owner, f, args, kw, options, retries, timeout, reasons, record
            )
        return self._counted(d, counted, record)

    def _inPoolEnded(
        self,
        counted: str | None,
        record: CallRecord | None,
        task: Task[Any],
        result: object,
    ) -> object:
        # A call the pool queued (see transact) ended: shutdown stops
        # waiting for it, and it is counted (as counted, if given).
        self._poolRelease(task.d)
        if counted is not None:
            self.stats.ended(result, counted, record)
        return result

    def _routed(
        self,
        owner: object,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
        record: CallRecord | None,
    ) -> Deferred[Any]:
        # A read-only call that may run on a replica (see
        # sasync.connection._replicas). (A method of its own: the lambda's
        # cells would cost every call of _admit.)
        assert self._replicas is not None
        d = self._replicas.route(
            self.writePosition,
            None if options.after is None else positions.parseLSN(options.after),
            lambda h: self.transact(
                owner,
                f,
                args,
                kw,
                dataclasses.replace(options, target=h or self._engine),
                None,
                record,
            ),
        )
        self.track(d)
        return d

    def _counted(
        self, d: Deferred[T], counted: str | None, record: CallRecord | None
    ) -> Deferred[T]:
        # Count the call as C{counted} once d fires (see transact).
        if counted is None:
            return d
        return self.stats.watch(counted, d, record)

    # Tasks --------------------------------------------------------------------

    def _newTask(
        self,
        owner: object,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
        mayGuessReadOnly: bool = False,
        guess: CallGuess | None = None,
        record: CallRecord | None = None,
    ) -> Task[Any]:
        # mayGuessReadOnly: the call runs again after a wrong read-only guess;
        # guess: whether it runs READ ONLY by guess, and learns what it did;
        # record: the call's, if it is timed or traced. (A first attempt
        # with the default retries is made in transact, which does the
        # same.)
        call = TransactionCall(
            owner,
            options.target or self._engine,
            f,
            options,
            _returnsRows,
            _wrote if mayGuessReadOnly else None,
            self._countRows,
            record,
        )
        task = options.task(call, args, kw)
        # A stop (cancel, timeout) interrupts it at the driver. Its caller
        # hears at once while COMMIT was not sent (then it cannot commit),
        # and waits for the worker only once COMMIT was sent: see
        # transact._commitPoint. (Worker processes decide in their own
        # process: the caller waits for them.)
        task.abandonable = not self._inPool
        if guess is not None and mayGuessReadOnly:
            if guess.readOnly and not methodMix.guess(f, _wrote.get(f)):
                # (A retry: what calls did since the last attempt was made
                # says no more.)
                guess.readOnly = False
            if not guess.readOnly:
                call.guess = False
            else:
                # A guess withdrawn by the time the call starts (its method
                # seen writing meanwhile, or writing more often) sends it
                # back through the gate: it passed the gate by, and must
                # not run read-write beside the writers let in.
                call.guess = True
            task.d.addBoth(guess.ended, methodMix, call)
        engine = self._engine
        if not options.readOnly and engine is not None and engine.tracksWritePosition:
            task.d.addCallback(self._wrotePosition, call)
        # (The task is new: nothing can have stopped it, and no other thread
        # knows it.)
        task.interruptWith(self._interruptBound)
        return task

    def _interrupt(self, task: Task[Any], reason: BaseException) -> None:
        # Reactor thread, when a running task is cancelled or times out.
        worker = task.worker
        if isinstance(worker, ConnectionWorker):
            worker.canceller.interrupt(task, self._getReactor())

    def submit(
        self,
        task: Task[Any],
        timeout: float | None,
        now: bool = False,
        track: bool = True,
    ) -> Deferred[Any]:
        """
        Queue C{task} (tracked for shutdown unless C{track} is false): now
        if the broker runs (or C{now}, for the start-up's work), else once
        its start-up is done.
        """
        if track:
            self.track(task.d)
        life = self._life
        # (Lifecycle.submit's answer while the broker runs, without the call.)
        if life.phase is _RUNNING or life.submit(task, timeout, now):
            target = getattr(task.f, "_handle", None) or self.handle
            return target.submit(task, timeout)
        return task.d

    def _wrotePosition(self, result: T, call: TransactionCall) -> T:
        # The call's write committed at call.writePosition.
        position = call.writePosition
        if position is not None and (
            self.writePosition is None or position > self.writePosition
        ):
            self.writePosition = position
        return result

    def waiting(self) -> int:
        """
        Transactions waiting before the engine's queue: for the start-up,
        or at the writer gate.
        """
        gate = self.gate
        return self._life.waiting + (0 if gate is None else gate.waiting)

    def pendingCount(self) -> int:
        """
        Transactions waiting for a connection on this broker's engine:
        queued, or handed to a busy worker to run after its current one
        (C{running()} counts those too, beyond one per worker), or waiting
        for the start-up or at the writer gate.
        """
        waiting = self.waiting()
        queue = getattr(self.handle, "queue", None)
        if queue is None:
            return waiting
        handedAhead = max(0, int(queue.running()) - len(queue.workers))
        return int(queue.pending()) + handedAhead + waiting

    # Retries ------------------------------------------------------------------

    def startupRetries(self) -> int:
        """
        The broker's retries for its start-up work (conflicts only by
        default: L{sasync.startup} waits for a missing database by time).
        """
        retries = self._spec.retries
        return retry.CONFLICT_RETRIES if retries is None else retries

    def _firstEnded(self, task: Task[Any], result: object) -> Any:
        # The first attempt of a call with the default conflict retries
        # ended (one observer for all this, as each costs every call): the
        # writer gate frees its place (entry, if it passed the gate); its
        # read-only guess learns what it did; a conflict runs it again (the
        # task's Deferred then waits for the retries); otherwise the call
        # ended here, and is counted. (And shutdown stops waiting for its
        # first task: see transact.)
        call: TransactionCall = task.f  # type: ignore[assignment]
        # (What transact kept on the call for this; whether it was made in
        # the start-up only matters to retries, read there.)
        counted = call.countedAs
        guess = None
        try:
            if self._gatesOrGuesses:
                # (Only there may the call have passed the gate, or guessed.)
                entry = call.gateEntry
                if entry is not None:
                    assert self.gate is not None
                    call.gateEntry = None
                    self.gate.ended(result, entry)
                if call.guess is not None:
                    if result.__class__ is Failure:
                        # (The guess, across the attempts to come if any.)
                        guess = CallGuess(call.guess)
                        guess.ended(result, methodMix, call)
                    elif call.wroteNow is not None:
                        # (CallGuess.ended's common case, inline: the call
                        # ended, and what it did counts once.)
                        methodMix.ended(call.f, call.wroteNow)
            record = call.record
            if result.__class__ is Failure:
                error = result.value
                reason = None if error is None else retry.retryReason(error)
                if reason in retry.RETRIED_BY_DEFAULT:
                    # A conflict: retry.Attempts runs the call again (each
                    # retry a new task).
                    owner, f, options = call.broker, call.f, call.options
                    args, kw = task.args, task.kw
                    now = call.startedInStartup
                    attempts = self._newAttempts(
                        lambda: self._newTask(
                            owner, f, args, kw, options, True, guess, record=record
                        ),
                        lambda task: self._submitWriter(
                            task, guess, options, now, False
                        ),
                        describeCall(owner, f, args, kw),
                        retry.CONFLICT_RETRIES,
                        None,
                        retry.RETRIED_BY_DEFAULT,
                    )
                    # Tracked too: shutdown(timeout=) cancels what is not called
                    # yet (task.d waits for this one).
                    self.track(attempts.d)
                    # (Counted once its last attempt ended.)
                    return self._counted(attempts.adopt(task, result), counted, record)
            elif record is None and counted is not None:
                # (CallStats.ended's common case, inline: per call.)
                self.stats.outcomes[counted, COMMITTED] += 1
                return result
            if counted is not None:
                self.stats.ended(result, counted, record)
            return result
        finally:
            self._release(task.d)

    def _guessFor(
        self, f: Callable[..., Any], options: CallOptions
    ) -> CallGuess | None:
        # Whether a call of f runs READ ONLY by guess (see sasync._readguess),
        # where that is done; None where it is not.
        if not self._readersKnown or options.readOnly:
            return None
        return CallGuess(methodMix.guess(f, _wrote.get(f)))

    def _gated(self, guess: CallGuess | None, options: CallOptions) -> bool:
        # Whether an attempt may write, and passes the writer gate. One
        # declared or guessed READ ONLY passes it by. A call with a
        # consumer passes it by too: its Deferred fires only once every row
        # was written, and a consumer may pause for good (it would hold its
        # place as long, as an iteration handed back does not).
        return (
            self.gate is not None
            and not options.readOnly
            and options.consumer is None
            and not (guess is not None and guess.readOnly)
        )

    def _submitWriter(
        self,
        task: Task[Any],
        guess: CallGuess | None,
        options: CallOptions,
        now: bool,
        track: bool,
    ) -> Deferred[Any]:
        # Submit an attempt of a call with the default conflict retries:
        # through the writer gate unless it runs READ ONLY. (A retry after a
        # wrong read-only guess is not guessed again.)
        gate = self.gate
        if gate is None or not self._gated(guess, options):
            return self.submit(task, None, now, track)
        if track:
            self.track(task.d)
        return gate.submit(task, self._letInNow if now else self._letIn)

    def _submitLetIn(self, task: Task[Any]) -> Deferred[Any]:
        # A task the writer gate lets in (tracked already).
        return self.submit(task, None, False, track=False)

    def _submitLetInNow(self, task: Task[Any]) -> Deferred[Any]:
        # The same, for the start-up's own work.
        return self.submit(task, None, True, track=False)

    def attempts(
        self,
        owner: object,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
        retries: int,
        timeout: float | None,
        reasons: frozenset[str] | None = None,
        record: CallRecord | None = None,
    ) -> Deferred[Any]:
        """
        A call with retries or a timeout, or made by the start-up: driven
        by L{retry.Attempts}, which makes a new task for each attempt.
        """
        if reasons is None and options.retries != retries:
            # (Seen by the transaction: it prepares the COMMIT lookup when
            # lost connections may be retried.)
            options = dataclasses.replace(options, retries=retries)
        now = self._life.inStartupContext()  # (Retries run outside it.)
        # The default conflict retries: the writer gate applies.
        gated = reasons is retry.RETRIED_BY_DEFAULT
        guess = self._guessFor(f, options) if retries > 0 else None

        def makeTask() -> Task[Any]:
            return self._newTask(
                owner, f, args, kw, options, retries > 0, guess, record=record
            )

        def submit(task: Task[Any]) -> Deferred[Any]:
            if gated:
                return self._submitWriter(task, guess, options, now, False)
            return self.submit(task, None, now, track=False)

        return self.retrying(
            makeTask,
            submit,
            describeCall(owner, f, args, kw),
            retries,
            timeout,
            reasons,
        )

    def retrying(
        self,
        makeTask: Callable[[], Task[Any]],
        submit: Callable[[Task[Any]], Deferred[Any]],
        description: str,
        retries: int,
        timeout: float | None,
        reasons: frozenset[str] | None = None,
    ) -> Deferred[Any]:
        """
        Run tasks made by C{makeTask} until one succeeds or may not run
        again (see L{retry.Attempts}); the Deferred returned is tracked.
        """
        attempts = self._newAttempts(
            makeTask, submit, description, retries, timeout, reasons
        )
        self.track(attempts.d)
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
        handle = self.handle
        mayRetry = None
        wait = self._life.startupWait
        if wait is not None and self._life.inStartup():
            mayRetry = wait.policy(retries)
            retries = sys.maxsize

        def counted(reason: str) -> None:
            self.stats.retry(reason)
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

    def setupJob(self, job: Callable[[], T], description: str) -> Deferred[T]:
        """
        Run C{job} (table creation, a migration: idempotent, outside any
        transaction) first thing in a worker thread, again after a missing
        or lost connection.
        """
        return self.retrying(
            lambda: Task(job, niceness=-20),
            self.handle.submit,
            description,
            self.startupRetries(),
            None,
        )


def _noPool(*args: object) -> Deferred[Any]:
    # The pool's submitTransaction where there is no pool.
    raise RuntimeError("no process pool")


def _writerGate(
    spec: engines.EngineSpec, engine: engines.EngineHandle | None
) -> WriterGate | None:
    """
    The writer gate of a broker (see L{sasync._writegate}): where its
    default conflict retries apply (SERIALIZABLE on a server database, in
    the process that runs the transactions), unless C{writers=0}.
    """
    writers = spec.writers
    if (
        engine is None
        or not engine.serializable
        or spec.retries is not None
        or writers == 0
    ):
        return None
    if writers is not None:
        return WriterGate(start=writers, maximum=writers, fixed=True)
    return WriterGate(
        start=engine.connections,
        maximum=engine.connections + spec.overflowConnections,
    )


__all__ = ["Admission"]
