"""
A task: one call waiting in a L{TaskQueue}, running on a worker, or done.

A task's Deferred is created, fired and chained in the reactor thread only.
A worker thread may read L{Task.stopRequested} and call L{currentTask}, and
nothing else.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from enum import Enum
from typing import Any, Generic, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from ._util import checkNumber
from .info import Info

T = TypeVar("T")

log = Logger()

_sequence = itertools.count()

#: Fair niceness (aging). Within its band, a call of niceness C{n} sorts
#: as if it had been made C{n * NICENESS_STEP} calls later than it was
#: (counting the calls made on every queue of the process), first in,
#: first out on a tie. So a waiting call's priority improves with every
#: call made after it: one made C{k} calls later runs first only if
#: C{k < NICENESS_STEP * (its niceness - the later one's)}, never when
#: C{k >= 40 * NICENESS_STEP} (640), and among calls made within
#: C{NICENESS_STEP} of each other lower niceness always runs first. See
#: docs/concepts/queue.md.
NICENESS_STEP = 16


class _TaskLocal(threading.local):
    # The task running in this thread; None in every thread at first.
    task: Task[Any] | None = None


_local = _TaskLocal()
#: Per thread: its C{task} is what L{currentTask} returns, read without the
#: call where that costs (per statement, per transaction). Written by
#: workers only (see L{setCurrentTask}).
current = _local
_interruptLock = threading.Lock()


class TaskState(Enum):
    """
    Where a task is in its life.
    """

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class TaskDeferred(Deferred[T]):
    """
    The Deferred of a L{Task}: cancelling it stops the task, and when the
    task is running and can be interrupted, fires only once the worker has
    really finished with it (an I{honest} cancellation: the caller hears
    nothing before then).

    Reactor thread only, like every Deferred.

    @ivar task: The task, until the Deferred fires (set by the task: a
        Deferred is made per call, and Deferred's own C{__init__} is all
        it runs).
    """

    task: Task[T] | None = None
    #: Set when the task's L{Task.onEnded} answered with a Deferred: this
    #: one fires as that one does, and cancelling this cancels that.
    following: Deferred[T] | None = None

    def cancel(self) -> None:
        """
        Stop the task: a queued one is removed and this fails at once; a
        running one is asked to stop and this fires once it has (or at once,
        if it can't be interrupted, if it is L{abandonable<Task.abandonable>}
        and short of its point of no return; cancelled a second time while
        it waits, it fails at once with L{OutcomeUnknown
        <asynqueue.errors.OutcomeUnknown>}).
        """
        if not self.called:
            following = self.following
            if following is not None:
                # The task has ended: what this waits for is stopped.
                following.cancel()
                return
            task = self.task
            if task is not None:
                task.stopEarly(CancelledError(f"{task.info} was cancelled"))
            if not self.called and (task is None or not task._waiting):
                self.task = None
                self.errback(Failure(CancelledError()))  # type: ignore[no-untyped-call]
        elif isinstance(self.result, Deferred):
            self.result.cancel()


def currentTask() -> Task[Any] | None:
    """
    The task whose callable is running in this thread right now, or C{None}.

    Long-running task code uses it to learn that it should stop
    (L{Task.stopRequested}) or to register an interrupter
    (L{Task.onInterrupt}).
    """
    return _local.task


def setCurrentTask(task: Task[Any] | None) -> None:
    """
    For workers: mark C{task} as the one running in this thread.
    """
    _local.task = task


def checkNiceness(niceness: object) -> int:
    """
    @raise TypeError: C{niceness} is not an C{int}.
    @raise ValueError: C{niceness} is outside -20..20.
    """
    checkNumber(niceness, "niceness", integer=True, low=-20, high=20)
    assert isinstance(niceness, int)
    return niceness


class AsIs(Generic[T]):
    """
    What a task returns to have its caller get C{value} as it is, even if
    it is an iterator (which would otherwise be delivered as a
    L{Deferator}, or written to the call's consumer): the task's own
    C{raw=True}, decided while it runs. L{Task.finish} unwraps it, so the
    caller never sees it.

    Picklable (if C{value} is), so a task may return it from a worker
    process too.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"AsIs({self.value!r})"


class Task(Generic[T]):
    """
    One call of C{f(*args, **kw)} and the Deferred its caller holds.

    Tasks sort by band (C{doNext} first, C{doLast} last), then by the
    order they were made in pushed back by their niceness (see
    L{NICENESS_STEP}), then the order they were made in.

    @ivar d: The caller's Deferred. Cancelling it while the task is queued
        removes the task; while it runs, the task's interrupters are called
        and the Deferred fails with
        L{twisted.internet.defer.CancelledError} only after the worker
        has finished with it (if the task cannot be interrupted, at once).
    @ivar stopRequested: True once the task was cancelled or timed out.
        Safe to read from the worker thread: long loops should check it
        and give up.
    """

    def __init__(
        self,
        f: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kw: dict[str, Any] | None = None,
        *,
        niceness: int = 0,
        doNext: bool = False,
        doLast: bool = False,
        series: str | None = None,
        raw: bool = False,
        consumer: Interface | None = None,
    ) -> None:
        if not callable(f):
            raise TypeError(f"a task must be callable, not {f!r}")
        sequence = next(_sequence)
        rank = sequence
        if niceness or niceness.__class__ is not int:
            if niceness.__class__ is not int or not -20 <= niceness <= 20:
                checkNiceness(niceness)
            self.niceness = niceness
            rank += NICENESS_STEP * niceness
        self.f = f
        self.args = args
        self.kw = {} if kw is None else kw
        if series is not None:
            self.series = series
        if raw:
            self.raw = raw
        if consumer is not None:
            self.consumer = consumer
        self.sortKey = (0 if doNext else (2 if doLast else 1), rank, sequence)
        d: TaskDeferred[T] = TaskDeferred()
        d.task = self
        self.d = d

    @classmethod
    def plain(
        cls, f: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]
    ) -> Task[Any]:
        """
        C{Task(f, args, kw)}, every scheduling keyword at its default, made
        with none of the checks and choices of C{__init__} (for callers that
        make a task per call; C{f} must be callable, C{kw} a dict).
        """
        # (__init__'s common case: what it sets, and nothing else.)
        task = cls.__new__(cls)
        sequence = next(_sequence)
        task.f = f
        task.args = args
        task.kw = kw
        task.sortKey = (1, sequence, sequence)
        d: TaskDeferred[Any] = TaskDeferred()
        d.task = task
        task.d = d
        return task

    # Class-level defaults: most tasks never change these, and a task is
    # made per call, so each assignment saved counts.
    niceness: int = 0
    series: str | None = None
    raw: bool = False
    consumer: Any = None
    state: TaskState = TaskState.QUEUED
    worker: object | None = None
    #: Set by the queue: a worker this task must run on (or None).
    pinnedTo: object | None = None
    stopReason: BaseException | None = None
    # Read by the worker thread; written in the reactor thread under
    # _interruptLock (a plain bool: an Event per task costs too much).
    stopRequested: bool = False
    #: For queues and workers: the call prepared for a worker (e.g. the
    #: pickled call of a ProcessQueue), or None.
    payload: Any = None
    _interrupters: tuple[()] | list[Callable[[BaseException], object]] = ()
    # Given by interruptWith (called with the task too), or None.
    _interrupter: Callable[[Task[Any], BaseException], object] | None = None
    _delivered: bool = False
    #: Its caller was told L{OutcomeUnknown<asynqueue.errors.OutcomeUnknown>}.
    _outcomeUntold: bool = False
    #: Cancelled (or timed out) while running, and waiting for its worker
    #: to finish before telling the caller (an honest stop).
    _waiting: bool = False
    #: Set by whoever makes the task: a stop tells its caller at once,
    #: without waiting for the worker, until the call passes its point of
    #: no return (see L{passPointOfNoReturn}). The worker still stops the
    #: call, and takes no other task before it has.
    abandonable: bool = False
    # Written by the worker thread (see passPointOfNoReturn).
    _pastNoReturn: bool = False
    # Written by the first requestStop, under _interruptLock: whether the
    # call had passed its point of no return (the stop waits for it).
    _stopSawPast: bool = False
    _producer: Any = None
    #: Set by the queue for a task with a C{consumer}: the clock that
    #: schedules the writing to it (see L{IterationProducer}); None: the
    #: reactor.
    clock: IReactorTime | None = None
    _onRemove: Callable[[Task[Any]], None] | None = None
    #: Set by the queue while the task waits on a worker that runs another
    #: one (see ThreadWorker.takesAhead): puts it back in the queue if the
    #: worker has not started it yet.
    _takeBack: Callable[[Task[Any]], object] | None = None
    #: Set by whoever makes the task: C{onEnded(task, outcome)} is called
    #: once, in the reactor thread, right before L{d} fires, with the value
    #: or C{Failure} it would fire with; L{d} fires with what it returns
    #: instead (if that is a Deferred, with what that fires with: L{d}
    #: waits for it, and cancelling L{d} cancels it). What a first callback
    #: on L{d} would do, without the Deferred's callback machinery (a
    #: task is made per call).
    onEnded: Callable[[Task[Any], Any], Any] | None = None

    def __lt__(self, other: Task[Any]) -> bool:
        return self.sortKey < other.sortKey

    @property
    def info(self) -> Info:
        """
        A readable description of the call.
        """
        return Info(self.f, self.args, self.kw)

    def __repr__(self) -> str:
        return f"<Task {self.info} {self.state.value}>"

    # Stopping ---------------------------------------------------------------

    def onInterrupt(self, interrupter: Callable[[BaseException], object]) -> None:
        """
        Register C{interrupter(reason)}, called once if the task is cancelled
        or times out while running. It should make the running call stop
        soon (e.g. a database driver's cancel), and must not block. A task
        with an interrupter is I{honest}: its caller hears of the
        cancellation only after the worker has finished with it.

        May be called from the worker thread while the task runs. The
        interrupter is normally called in the reactor thread; if the stop
        was already requested when it is registered, it is called at once,
        in the registering thread, so that the stop is never missed.
        """
        with _interruptLock:
            if not self.stopRequested:
                if self._interrupters:
                    self._interrupters.append(interrupter)
                else:
                    # (The first: () until now.)
                    self._interrupters = [interrupter]
                return
            reason = self.stopReason
        assert reason is not None
        interrupter(reason)

    def interruptWith(
        self, interrupter: Callable[[Task[Any], BaseException], object]
    ) -> None:
        """
        L{onInterrupt} for whoever has just made the task, before it is
        queued or known to any other thread: nothing can have stopped it
        yet, so no lock is taken (this runs per call). C{interrupter} is
        called as C{interrupter(task, reason)}, before any interrupter
        registered with L{onInterrupt}: one callable (a bound method, say)
        serves every task, and nothing is made per task. It replaces any
        given before with this method.
        """
        self._interrupter = interrupter

    def passPointOfNoReturn(self) -> bool:
        """
        Worker thread: the call is about to do what a stop could no longer
        undo (sAsync: send a transaction's COMMIT). Atomic with
        L{requestStop}: either the stop came first, and this returns False
        (the call must not go on, but undo its work: roll back), or this
        came first, and a stop waits for the call's outcome even if the
        task is L{abandonable}.

        No lock is taken unless a stop was requested (this runs per call):
        this marks the point passed, then looks for a stop; L{requestStop}
        sets the stop, then looks for the mark (under the lock). The GIL
        runs these in one order, so at least one of them sees the other's
        write: a stop this does not see sees the mark, and waits for the
        outcome. One this sees has decided already (under the lock) by
        what it saw, and this abides by it.
        """
        self._pastNoReturn = True
        if not self.stopRequested:
            return True
        with _interruptLock:
            if self._stopSawPast:
                # It saw the mark first: it waits for the outcome.
                return True
            self._pastNoReturn = False
            return False

    def requestStop(self, reason: BaseException) -> bool:
        """
        Ask the running task to stop because of C{reason}. Reactor thread only.

        @return: True if the caller is to wait for the worker: the task has
            interrupters, and is not L{abandonable} short of its point of
            no return.
        """
        # The lock makes each interrupter run exactly once even when the
        # worker thread registers one at this very moment, and decides
        # "stopped before the point of no return" atomically with
        # passPointOfNoReturn.
        with _interruptLock:
            if self.stopReason is None:
                self.stopReason = reason
            stopped = self.stopRequested
            # (Set, then the mark read: see passPointOfNoReturn.)
            self.stopRequested = True
            if not stopped:
                # The first stop decides whether the call passed the point.
                self._stopSawPast = self._pastNoReturn
            interrupters, self._interrupters = self._interrupters, []
            first, self._interrupter = self._interrupter, None
            abandon = self.abandonable and not self._stopSawPast
        if first is not None:
            try:
                first(self, reason)
            except Exception:
                log.failure("Interrupter of {task} failed", task=self)
        for interrupter in interrupters:
            try:
                interrupter(reason)
            except Exception:
                log.failure("Interrupter of {task} failed", task=self)
        return (first is not None or bool(interrupters)) and not abandon

    def timeOut(self, seconds: float) -> None:
        """
        The task's timeout ran out: fail it with L{TaskTimeout}, after
        stopping it if it is running. Reactor thread only.
        """
        from .errors import TaskTimeout

        if self._delivered or self._waiting or self.d.called:
            return
        self.stopEarly(TaskTimeout(f"{self.info} timed out after {seconds:g} s"))

    def stopEarly(self, reason: BaseException) -> None:
        """
        Stop the task because of C{reason}, whatever it is doing: a queued
        task fails at once and leaves its queue; a running one is asked to
        stop (see L{requestStop}); one whose items are still being written
        to its consumer stops that. Reactor thread only: cancelling the
        task's Deferred, its timeout and its queue call this.
        """
        if self._takeBack is not None:
            # Given to a busy worker: if it has not started, it is queued again.
            self._takeBack(self)
        if self.state is TaskState.QUEUED:
            self.state = TaskState.DONE
            self._delivered = True
            # The caller hears first, then the queue: whoever waits for the
            # queue to drain (shutdown) finds every call answered.
            self._fire(Failure(reason))  # type: ignore[no-untyped-call]
            if self._onRemove is not None:
                self._onRemove(self)
        elif self.state is TaskState.RUNNING:
            if self._waiting:
                # Stopped again while waiting for an honest stop: stop
                # waiting; whatever the worker delivers later is dropped.
                # Not the stop's own error: the call may still take effect
                # (a COMMIT sent), and that error would say it will not.
                self._waiting = False
                self._delivered = True
                self._outcomeUntold = True
                self._fire(Failure(self._outcomeUnknown(reason)))  # type: ignore[no-untyped-call]
                return
            # Set before the interrupters run: one may make the worker
            # deliver at once (an AsyncWorker's cancelled Deferred).
            self._waiting = True
            if not self.requestStop(reason) and self._waiting:
                # Nothing can stop it, or it cannot have had an effect yet
                # (abandonable): tell the caller now, drop its result.
                self._waiting = False
                self._delivered = True
                self._fire(Failure(reason))  # type: ignore[no-untyped-call]
        elif self._producer is not None and not self._delivered:
            # Done, but its items are still being written to the consumer.
            self.stopReason = reason
            self._delivered = True
            self._producer.stopProducing()
            self._fire(Failure(reason))  # type: ignore[no-untyped-call]

    def _outcomeUnknown(self, reason: BaseException) -> BaseException:
        # The error of a caller that stops waiting (see stopEarly).
        from .errors import OutcomeUnknown

        error = OutcomeUnknown(
            f"{self.info}: stopped waiting ({reason!r}) for a call asked to"
            f" stop before ({self.stopReason!r}); it may still take effect"
        )
        error.__cause__ = reason
        return error

    # The queue's side (reactor thread) ---------------------------------------

    def enqueue(self, onRemove: Callable[[Task[Any]], None]) -> None:
        """
        For the queue: the task is queued, and C{onRemove(task)} is to be
        called if it is stopped (cancelled, timed out) while still queued.
        """
        self._onRemove = onRemove

    @property
    def enqueued(self) -> bool:
        """
        Whether a queue has taken the task: queued (see L{enqueue}), or
        handed to a worker (a queue with a free worker hands it over at
        once, and calls L{enqueue} only for a task that waits).
        """
        return self._onRemove is not None or self.worker is not None

    def start(
        self,
        worker: object,
        takeBack: Callable[[Task[Any]], object] | None = None,
    ) -> None:
        """
        For the queue: the task is handed to C{worker}.

        @param takeBack: Given when the worker is still busy with another
            task (the task is I{given ahead}): C{takeBack(task)} puts it
            back in the queue if the worker has not started it, and is
            called if the task is stopped meanwhile.
        """
        self.state = TaskState.RUNNING
        self.worker = worker
        if takeBack is not None:
            self._takeBack = takeBack

    def startedAhead(self) -> None:
        """
        For the queue: the task given ahead is its worker's current one now,
        so it can no longer be taken back.
        """
        self._takeBack = None

    def requeue(self) -> None:
        """
        For the queue: the task given ahead was taken back, and is queued
        again.
        """
        self._takeBack = None
        self.state = TaskState.QUEUED
        self.worker = None

    # Delivery (reactor thread, from workers) ---------------------------------

    def finish(self, result: Any) -> None:
        """
        For workers: the call returned C{result}. If the caller gave a
        C{consumer} and the result is a L{Deferator}, it is produced to the
        consumer and the Deferred fires with the consumer when all is written.
        An L{AsIs} result is unwrapped.
        """
        self.state = TaskState.DONE
        if result.__class__ is AsIs:
            result = result.value
        if self.consumer is None:
            if not (self._waiting or self._delivered):
                # The common case of _deliver, without the call.
                self._delivered = True
                self._fire(result)
            else:
                self._deliver(result)
            return
        from .deferator import Deferator
        from .producer import IterationProducer

        if isinstance(result, Deferator) and not self._delivered:
            try:
                producer = self._producer = IterationProducer(
                    result, self.consumer, clock=self.clock
                )
                producing = producer.run()
            except Exception:
                # Never lost in the worker's delivery: the caller hears
                # of it, and the iteration lets go of its worker.
                self._producer = None
                result.stop()
                self._deliver(Failure())  # type: ignore[no-untyped-call]
                return
            producing.addCallbacks(self._produced, self._produced)
            return
        self._deliver(result)

    def _produced(self, result: Any) -> None:
        self._producer = None
        self._deliver(result)

    def fail(self, failure: Failure) -> None:
        """
        For workers: the call raised; C{failure} holds the exception. (Also
        for whoever fails a task that will never reach a queue.)
        """
        self.state = TaskState.DONE
        if self._waiting:
            # The interruption made the call fail: report why it was stopped
            # (past its point of no return, its own error is the truth: a
            # COMMIT that failed may not mean "rolled back").
            assert self.stopReason is not None
            self._waiting = False
            self._delivered = True
            if not self._pastNoReturn:
                failure = Failure(self.stopReason)  # type: ignore[no-untyped-call]
            self._fire(failure)
            return
        self._deliver(failure)

    def _deliver(self, result: Any) -> None:
        if self._waiting:
            # Asked to stop, yet it finished: tell the truth, the result.
            self._waiting = False
            self._delivered = True
            self._fire(result)
            return
        if self._delivered:
            if isinstance(result, Failure):
                abandoned = self.abandonable and not self._pastNoReturn
                if self.stopReason is None or not (
                    abandoned or isinstance(result.value, type(self.stopReason))
                ):
                    # Not the stop's own error (an abandoned task fails
                    # however its stop made it fail, e.g. a driver's cancel
                    # error): nobody else will see it.
                    log.failure(
                        "Task {task} failed after its caller gave up",
                        failure=result,
                        task=self,
                    )
            else:
                from .deferator import Deferator

                if isinstance(result, Deferator):
                    # An iteration nobody will read: release its worker now.
                    result.stop()
                elif self._outcomeUntold:
                    # Its caller heard OutcomeUnknown: the log has the truth.
                    log.info(
                        "Task {task} succeeded after its caller stopped waiting",
                        task=self,
                    )
            return
        self._delivered = True
        self._fire(result)

    def _fire(self, result: Any) -> None:
        # The one place a task's Deferred fires. The task and its Deferred
        # (and interrupters that hold the task) let go of each other first,
        # so that plain reference counting frees them.
        d = self.d
        d.task = None
        if self._interrupters:
            if self.state is TaskState.DONE:
                # Its worker is done with it: nothing registers any more.
                self._interrupters = ()
            else:
                with _interruptLock:
                    self._interrupters = ()
        ended = self.onEnded
        if ended is not None:
            try:
                outcome = ended(self, result)
            except BaseException:
                # (As a callback's exception would: the caller gets it.)
                outcome = Failure()  # type: ignore[no-untyped-call]
            # (An outcome handed back as it came, the common case, needs no
            # isinstance, which costs the most for a Deferred, an ABC: a
            # worker's outcome is never a Deferred.)
            if outcome is not result:
                if isinstance(outcome, Deferred):
                    d.following = outcome
                    outcome.chainDeferred(d)
                    return
                result = outcome
        # (A Failure too: callback(failure) is errback(failure), documented.)
        d.callback(result)
