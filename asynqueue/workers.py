"""
Workers for a L{TaskQueue}: L{AsyncWorker} runs tasks in the reactor, and
L{ThreadWorker} runs them in one dedicated thread for its whole life.

Thread affinity is the point of L{ThreadWorker}: a database connection made
by a task stays on the thread that made it, and so do the batches of any
iteration the task returns.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from ._jobs import JobThread as JobThread
from ._jobs import MemoryJobRunner as MemoryJobRunner
from ._util import follow, globalReactor
from .deferator import (
    DEFAULT_BATCH,
    IN_MEMORY,
    Batch,
    BatchTaker,
    Deferator,
    Remainder,
    checkBatchSize,
)
from .errors import WorkerError
from .interfaces import IWorker
from .mailbox import Mailbox, mailboxFor
from .task import Task, setCurrentTask
from .task import _local as _taskLocal

#: What a worker calls (reactor thread) when it can take another task:
#: C{onFreed(worker, task)}.
_OnFreed = Callable[[Any, "Task[Any]"], object]

# The kinds of outcome a ThreadWorker's job hands back to the reactor thread
# (compared by identity).
_VALUE, _FAILURE, _ITER = "value", "failure", "iter"

# Result types known not to be iterators: a quicker test than the ABC's.
_NOT_ITERATORS = frozenset(
    {type(None), bool, int, float, str, bytes, list, tuple, dict, set}
)


@implementer(IWorker)
class ThreadWorker:
    """
    Runs tasks one at a time in a single dedicated thread.

    A task that returns an iterator (unless called with C{raw=True}, or it
    returns an L{AsIs}) is delivered as a L{Deferator} whose batches are
    fetched in the same thread. With C{holdIterations=False} (the default)
    the worker takes other tasks between batches, which interleave with
    them; with C{holdIterations=True} it takes no other task until the
    iteration is exhausted or stopped (a database cursor inside an open
    transaction needs that), and L{holdChanged} tells when that starts and
    ends. L{letGo} makes such an iteration let go of the worker early.

    The worker L{takes ahead<takesAhead>}: its queue may give it the next
    task while it runs one, so that the thread goes on to it without
    waiting for the reactor; until the thread starts it, the queue may
    L{take it back<takeBack>}. With C{holdIterations}, an iteration that
    holds the worker pauses that (see L{pauseAhead}): the thread leaves
    the task given ahead alone, and the queue takes it back. Before it
    starts a task given ahead, a thread whose results go through a
    L{Mailbox<asynqueue.mailbox.Mailbox>} gives way to a reactor that is
    behind with them (L{Mailbox.giveWay<asynqueue.mailbox.Mailbox.giveWay>}).

    @cvar cQualified: The series every ThreadWorker runs besides its own
        C{series}: C{"thread"} and C{"local"}, as in the original AsynQueue.
    """

    cQualified: tuple[str, ...] = ("thread", "local")

    def __init__(
        self,
        series: Sequence[str] = (),
        *,
        holdIterations: bool = False,
        batchSize: int = DEFAULT_BATCH,
        runner: JobThread | MemoryJobRunner | None = None,
        callFromThread: Callable[..., object] | None = None,
        name: str = "asynqueue-worker",
    ) -> None:
        """
        @param series: The series this worker is qualified for.
        @param runner: Where jobs run; a new L{JobThread} by default (tests
            pass a L{MemoryJobRunner}).
        @param callFromThread: How the thread hands results to the reactor;
            by default the C{post} of the reactor's L{Mailbox
            <asynqueue.mailbox.Mailbox>}, which every such worker shares.
        @param batchSize: How many items of an iteration one fetch takes.
        @raise ValueError: C{batchSize} is less than 1 (C{TypeError}: not
            an int).
        """
        self.iQualified = list(series)
        self.holdIterations = holdIterations
        self.batchSize = checkBatchSize(batchSize)
        self.runner = runner if runner is not None else JobThread(name)
        # Resolved on first use, so that making a worker needs no reactor.
        self._callFromThreadGiven = callFromThread
        # The mailbox results go through, if they do (see _runNext).
        owner = getattr(callFromThread, "__self__", None)
        self._mailbox: Mailbox | None = owner if isinstance(owner, Mailbox) else None
        # Reactor thread: the tasks given and not yet done, oldest first.
        self._given: list[Task[Any]] = []
        # Tasks given and not yet started, with what to call when the
        # worker is free of them. The reactor thread appends and (in
        # takeBack) pops from the right; the worker thread pops from the
        # left: both atomic.
        self._pending: deque[tuple[Task[Any], _OnFreed]] = deque()
        self._stopping: Deferred[None] | None = None
        # Reactor thread: how the iteration holding this worker lets go.
        self._letGo: Callable[[], None] | None = None
        #: Reactor thread: whether the iteration holding this worker is
        #: letting go of it (see L{letGo}).
        self.lettingGo = False
        # Bound once: a bound method made per task costs.
        self._runNextJob = self._runNext
        self._ranCallback = self._ran
        # Worker thread: whether an iteration of its last task holds it
        # (with holdIterations), and how many task jobs it put off meanwhile.
        self._holding = False
        self._putOff = 0
        #: Set by a queue that gives tasks ahead (see L{IWorker}): called
        #: with C{True} when an iteration starts holding the worker, so that
        #: the queue takes back the task given ahead and gives none, and
        #: with C{False} when it stops.
        self.pauseAhead: Callable[[bool], object] | None = None

    def __repr__(self) -> str:
        name = getattr(self.runner, "name", "")
        return f"<ThreadWorker {name} {self.iQualified}>"

    @property
    def task(self) -> Task[Any] | None:
        """
        The oldest task given to this worker and not yet done, or None.
        """
        given = self._given
        return given[0] if given else None

    @property
    def takesAhead(self) -> bool:
        """
        Whether the queue may give this worker a task while it runs one:
        always. (With C{holdIterations}, not while an iteration holds the
        worker: L{pauseAhead} tells the queue.)
        """
        return True

    @property
    def _callFromThread(self) -> Callable[..., object]:
        if self._callFromThreadGiven is None:
            # Shared with every other worker of this reactor's: results
            # that arrive together wake the reactor once.
            self._mailbox = mailboxFor(globalReactor())
            self._callFromThreadGiven = self._mailbox.post
        return self._callFromThreadGiven

    def holdChanged(self, held: bool) -> None:
        """
        Reactor thread, with C{holdIterations} only: an iteration starts
        (C{held} true) or stops holding this worker. Does nothing here;
        subclasses override it (sAsync adds connections while all of its
        workers are held).
        """

    def letGo(self) -> bool:
        """
        Reactor thread, with C{holdIterations}: make the iteration that holds
        this worker let go of it. The thread reads every item left, handing
        each batch to the iteration as it reads it (the source is exhausted,
        so it ends: a database transaction commits); the iteration hands
        them out from memory, and the worker is free (L{holdChanged}
        C{False}) once the reading is done. The cost is memory: the items
        read and not yet handed out (at worst all of them, if nobody takes
        any meanwhile).

        @return: whether an iteration held the worker and now lets go
            (C{False}: none holds it, or it already lets go).
        """
        letGo = self._letGo
        if letGo is None or self.lettingGo:
            return False
        self.lettingGo = True
        letGo()
        return True

    def call(self, f: Callable[[], Any]) -> Deferred[Any]:
        """
        Run C{f()} in the worker's thread, bypassing any queue, after what the
        thread already has to do. For setting up or closing per-thread
        resources and fetching batches of iterations; a task in progress is
        not interrupted.

        @return: A Deferred with C{f}'s result; it fails with L{WorkerError}
            if the worker has stopped.
        """
        d: Deferred[Any] = Deferred()
        callFromThread = self._callFromThread

        def job() -> None:
            # Worker thread: Deferreds are fired in the reactor thread only.
            try:
                result = f()
            except BaseException:
                callFromThread(d.errback, Failure())  # type: ignore[no-untyped-call]
            else:
                callFromThread(d.callback, result)

        try:
            self.runner.do(job)
        except WorkerError:
            return fail(WorkerError(f"{self!r} has stopped"))
        return d

    def run(self, task: Task[Any]) -> Deferred[None]:
        """
        Run C{task} in the thread, after any task it already has; see
        L{IWorker.run}.
        """
        freed: Deferred[None] = Deferred()
        self.give(task, lambda worker, task: freed.callback(None))
        return freed

    def give(self, task: Task[Any], onFreed: _OnFreed) -> None:
        """
        L{run} without a Deferred, for queues: C{onFreed(worker, task)} is
        called once, in the reactor thread, when the worker can take
        another task.

        @raise RuntimeError: the worker is stopped.
        """
        if self._stopping is not None:
            raise RuntimeError(f"{self!r} is stopped")
        self._given.append(task)
        self._pending.append((task, onFreed))
        self.runner.do(self._runNextJob)

    def takeBack(self, task: Task[Any]) -> bool:
        """
        Reactor thread: take back C{task}, the last one given, if the thread
        has not started it yet.

        @return: whether it was taken back (it will not run here).
        """
        pending = self._pending
        if not pending or pending[-1][0] is not task:
            return False
        # Only the worker thread takes from the left, and it can take the
        # last entry only when it is the only one: so this pop either gets
        # the task or finds nothing.
        try:
            pending.pop()
        except IndexError:
            return False
        self._given.remove(task)
        return True

    def giveWay(self) -> bool:
        """
        Worker thread, between two steps of a long task (sAsync: between
        two statements of a transaction): if the reactor is behind with
        the results handed to it or with a timer that is due, wait, without
        the GIL, until it has caught up (see
        L{Mailbox.giveWay<asynqueue.mailbox.Mailbox.giveWay>}). Does nothing
        for a worker whose results do not go through a mailbox.

        @return: whether it waited.
        """
        mailbox = self._mailbox
        return mailbox is not None and mailbox.giveWay()

    def _runNext(self) -> None:
        # Worker thread: call, and hand back plain values, never Deferreds.
        if self._holding:
            # An iteration holds the worker: the task (given ahead before
            # the reactor knew) waits, for the queue to take it back, or
            # runs once the hold ends (see _endHold).
            self._putOff += 1
            return
        try:
            task, onFreed = self._pending.popleft()
        except IndexError:
            # Its task was taken back.
            return
        callFromThread = self._callFromThreadGiven or self._callFromThread
        if task.stopRequested:
            # Cancelled before its turn came: don't even start it.
            stopped = Failure(task.stopReason)  # type: ignore[no-untyped-call]
            callFromThread(self._ranCallback, task, _FAILURE, stopped, onFreed)
            return
        # (setCurrentTask, inlined: this runs per task.)
        _taskLocal.task = task
        kind = _VALUE
        try:
            kw = task.kw
            result = task.f(*task.args, **kw) if kw else task.f(*task.args)
            if not (
                result.__class__ in _NOT_ITERATORS
                or task.raw
                or not isinstance(result, Iterator)
            ):
                taker: BatchTaker[Any] = BatchTaker(result, self.batchSize)
                first = taker.take()
                # (As _deferator decides: an iteration left to read here
                # holds the worker, with holdIterations.)
                holds = (
                    self.holdIterations
                    and not first[1]
                    and not getattr(taker.iterator, IN_MEMORY, False)
                )
                if holds:
                    self._holding = True
                kind, result = _ITER, (taker, first, holds)
        except BaseException:
            kind, result = _FAILURE, Failure()  # type: ignore[no-untyped-call]
        _taskLocal.task = None
        callFromThread(self._ranCallback, task, kind, result, onFreed)
        # A failure's traceback holds this frame, and so its locals: without
        # this one, the failure would hold itself (a cycle, and with it the
        # task, freed only by the garbage collector).
        del result
        if self._pending:
            # A task given ahead waits: the thread would go on running
            # Python without letting the reactor in between. If the reactor
            # is behind with its results, stand aside until it has caught
            # up, rather than be one more thread it queues behind for the
            # GIL.
            self.giveWay()

    def _ran(self, task: Task[Any], kind: str, result: Any, onFreed: _OnFreed) -> None:
        # Reactor thread: the task's job has run; kind is "value" (result:
        # what it returned), "failure" (a Failure) or "iter" (result: the
        # batch taker and the first batch).
        # (Not contextlib.suppress: a context manager's calls, per task.)
        try:  # noqa: SIM105
            # (The first one: tasks end in the order they were given.)
            self._given.remove(task)
        except ValueError:
            # Forgotten by crash() already.
            pass
        # Free the worker first, so that the queue can hand it the next task
        # while this one's callbacks run.
        if kind is _VALUE:
            onFreed(self, task)
            task.finish(result)
        elif kind is _FAILURE:
            onFreed(self, task)
            task.fail(result)
        else:
            taker, first, holds = result
            task.finish(self._deferator(taker, first, onFreed, task, holds))

    def _deferator(
        self,
        taker: BatchTaker[Any],
        first: Batch[Any],
        onFreed: _OnFreed,
        task: Task[Any],
        holds: bool,
    ) -> Deferator[Any]:
        items, exhausted = first
        finish = taker.finishItem
        if exhausted:
            onFreed(self, task)
            return Deferator(items, finish=finish)
        if getattr(taker.iterator, IN_MEMORY, False):
            # Nothing for the thread to read: no hold, no hop.
            onFreed(self, task)
            return Deferator(
                items,
                lambda: maybeDeferred(taker.take),
                stop=taker.close,
                finish=finish,
            )
        source = _ThreadSource(self, taker, onFreed, task, holds)
        dr: Deferator[Any] = Deferator(
            items, source.fetch, stop=source.release, finish=finish
        )
        # A Deferator dropped unfinished must not hold its source (or, with
        # holdIterations, the worker) forever. The finalizer may run in any
        # thread, so it goes through callFromThread.
        finalizer = weakref.finalize(dr, self._callFromThread, source.release)
        finalizer.atexit = False
        if holds:
            # The worker stays busy until the iteration ends (or is dropped,
            # or lets go), and runs no task given ahead meanwhile: the queue
            # takes it back first (so that its owner finds it queued).
            pause = self.pauseAhead
            if pause is not None:
                pause(True)
            # letGo first: the owner may call it at once.
            self._letGo = source.letGo
            self.holdChanged(True)
            dr.whenDone().addCallback(source.free)
        else:
            source.free()
        dr.whenDone().addCallback(lambda _: finalizer.detach())
        return dr

    def _endHold(self) -> None:
        # Reactor thread: the iteration that held the worker has ended.
        # The thread's job to know it goes before any task given from now.
        with contextlib.suppress(WorkerError):
            self.runner.do(self._unhold)
        pause = self.pauseAhead
        if pause is not None:
            pause(False)

    def _unhold(self) -> None:
        # Worker thread: no iteration holds the worker any more. The task
        # jobs put off meanwhile run now, in order (a task taken back
        # meanwhile is not there any more, and its job does nothing).
        self._holding = False
        putOff, self._putOff = self._putOff, 0
        for _ in range(putOff):
            self._runNext()

    def stop(self) -> Deferred[None]:
        """
        Finish what the thread has to do, then end it. An iteration still
        open after that fails with L{WorkerError} when it next fetches.
        """
        if self._stopping is None:
            self._stopping = Deferred()
            stopping = self._stopping

            def last() -> None:
                # Worker thread: tasks put off behind an iteration still
                # open run too (given without a queue: see _runNext).
                self._unhold()
                self._callFromThread(stopping.callback, None)

            self.runner.quit(last)
        return follow(self._stopping)

    def crash(self) -> list[Task[Any]]:
        """
        Stop taking work; return the tasks given and not done (its thread
        cannot be killed, and their results will be ignored).
        """
        tasks, self._given = self._given, []
        if self._stopping is None:
            self.stop()
        return tasks


class _ThreadSource:
    """
    Reactor thread (but L{take}): the source of one iteration a
    L{ThreadWorker} reads in its thread, batch by batch: what its
    L{Deferator} fetches from, stops, and how it lets go of the worker.
    It never refers to the Deferator (whose finalizer calls L{release}).
    """

    def __init__(
        self,
        worker: ThreadWorker,
        taker: BatchTaker[Any],
        onFreed: _OnFreed,
        task: Task[Any],
        held: bool,
    ) -> None:
        self.worker = worker
        self.taker = taker
        self.onFreed = onFreed
        self.task = task
        self.held = held
        self.freedYet = False
        self.released = False
        # The rest of the items, once letGo was asked.
        self.rest: Remainder[Any] | None = None

    def free(self, _: object = None) -> None:
        # Once: the worker can take another task.
        if self.freedYet:
            return
        self.freedYet = True
        worker = self.worker
        if self.held:
            worker._letGo = None
            worker.lettingGo = False
            worker._endHold()
        self.onFreed(worker, self.task)
        if self.held:
            worker.holdChanged(False)

    def release(self) -> None:
        # Close the source in its own thread, then free.
        if self.released:
            return
        self.released = True
        if self.rest is not None:
            self.rest.clear()
        if self.taker.done:
            self.free()
        else:
            self.worker.call(self.taker.close).addBoth(self.free)

    def take(self) -> Batch[Any]:
        # Worker thread: a fetch queued before the release finds it done
        # (reading the reactor's flag is safe; at worst it reads once more).
        if self.released:
            return [], True
        return self.taker.take()

    def fetch(self) -> Deferred[Batch[Any]]:
        if self.rest is not None:
            return self.rest.fetch()
        return self.worker.call(self.take)

    def letGo(self) -> None:
        # The thread reads the rest after the fetches already asked for
        # (one thread, in order), handing each batch over as it is read
        # (callFromThread keeps the order): the consumer may use them
        # meanwhile, and a stop ends the reading.
        remainder = self.rest = Remainder()
        callFromThread = self.worker._callFromThread

        def deliver(items: list[Any]) -> None:
            callFromThread(remainder.add, items)

        d = self.worker.call(
            lambda: self.taker.takeRest(deliver, lambda: self.released)
        )
        d.addCallbacks(lambda _: remainder.end(), remainder.end)
        d.addBoth(self.free)


@implementer(IWorker)
class AsyncWorker:
    """
    Runs tasks in the reactor thread, one at a time. A task may return a
    Deferred or be a coroutine function; a returned iterator becomes a
    L{Deferator} that fetches in the reactor.
    """

    def __init__(
        self, series: Sequence[str] = (), *, batchSize: int = DEFAULT_BATCH
    ) -> None:
        self.iQualified = list(series)
        self.batchSize = checkBatchSize(batchSize)
        self.task: Task[Any] | None = None
        self._stopped = False
        self._idle: Deferred[None] | None = None

    def run(self, task: Task[Any]) -> Deferred[None]:
        """
        Run C{task} in the reactor; see L{IWorker.run}.

        A task that returns a Deferred (or is a coroutine) is interruptible:
        cancelling it or its timeout cancels that Deferred, and the caller
        hears of it once that Deferred has failed.
        """
        if self._stopped:
            raise RuntimeError(f"{self!r} is stopped")
        self.task = task
        setCurrentTask(task)
        try:
            result = task.f(*task.args, **task.kw)
            if inspect.iscoroutine(result):
                result = Deferred.fromCoroutine(result)
        except BaseException:
            result = Failure()  # type: ignore[no-untyped-call]
        finally:
            setCurrentTask(None)
        freed: Deferred[None] = Deferred()

        def done(value: object) -> None:
            self.task = None
            if isinstance(value, Failure):
                task.fail(value)
            elif not task.raw and isinstance(value, Iterator):
                taker: BatchTaker[Any] = BatchTaker(value, self.batchSize)
                items, exhausted = taker.take()
                fetch = None if exhausted else (lambda: succeed(taker.take()))
                task.finish(
                    Deferator(items, fetch, stop=taker.close, finish=taker.finishItem)
                )
            else:
                task.finish(value)
            freed.callback(None)
            if self._idle is not None and self.task is None:
                self._idle.callback(None)

        if isinstance(result, Deferred):
            inner = result
            task.onInterrupt(lambda reason: inner.cancel())
            inner.addBoth(done)
        else:
            done(result)
        # (A failure's traceback holds this frame: see ThreadWorker._runNext.)
        del result
        return freed

    def stop(self) -> Deferred[None]:
        """
        Stop once the task in progress is done.
        """
        self._stopped = True
        if self.task is None:
            return succeed(None)
        self._idle = Deferred()
        return follow(self._idle)

    def crash(self) -> list[Task[Any]]:
        """
        Stop now; return the task in progress, if any.
        """
        self._stopped = True
        task, self.task = self.task, None
        return [task] if task is not None else []
