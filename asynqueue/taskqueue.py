"""
L{TaskQueue}: a prioritized queue of calls, run by the workers attached to it.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._slots import WorkerSlot, WorkerSlots
from ._util import Waiters, checkNumber, follow, reactorClock
from .errors import QueueStopped, UnknownSeries, WorkerError
from .interfaces import IWorker
from .moved import deprecated
from .task import Task, TaskState

T = TypeVar("T")

_QUEUED, _RUNNING = TaskState.QUEUED, TaskState.RUNNING

log = Logger()


class TaskQueue:
    """
    Runs calls on its workers in priority order: C{doNext} calls first,
    C{doLast} calls last, and in between by niceness (-20..20) with aging:
    see L{asynqueue.task.NICENESS_STEP} (lower niceness first in a burst,
    and no call waits unboundedly behind later, less nice ones).

    Everything here happens in the reactor thread.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime | None = None,
        warn: bool | None = None,
        spew: bool | None = None,
        returnFailure: bool | None = None,
    ) -> None:
        """
        @param clock: For timeouts; the reactor by default (tests pass a
            C{twisted.internet.task.Clock}).
        @param warn: The original AsynQueue's: log every failed call (the
            original stopped the reactor otherwise). Deprecated.
        @param spew: The original's: log every call with its result.
            Deprecated.
        @param returnFailure: The original's: a failed call fails its
            Deferred. Deprecated: that is what always happens.
        @raise TypeError: one of the original's keywords is not a bool.
        """
        self._clock = clock
        # Entries are Task.sortKey (band, rank, sequence) and the task:
        # compared in C, never reaching the task. Cancelled tasks stay
        # until popped (lazy removal).
        # (sort key, task): keys are unique, so tasks are never compared.
        self._heap: list[tuple[tuple[int, int, int], Task[Any]]] = []
        #: How many tasks in the heap are still QUEUED.
        self._queued = 0
        # What we know of the workers: a slot each, and free lists.
        self._workers = WorkerSlots()
        self._running: set[Task[Any]] = set()
        self._accepting = True
        self._drained = Waiters()
        self._stopped: Deferred[None] | None = None
        # update() calls, run on each worker attached later too.
        self._updates: list[
            tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
        ] = []
        # Made once: a bound method per submitted task costs.
        self._removedCallback = self._removed
        self._takeBackCallback = self._takeBack
        self._originalOptions(warn, spew, returnFailure)

    def _originalOptions(
        self, warn: bool | None, spew: bool | None, returnFailure: bool | None
    ) -> None:
        # The original AsynQueue's keywords (see docs/originals.md), each
        # deprecated: warn=True and spew=True log calls as it did. Called
        # by the constructor the caller called (TaskQueue's, or a
        # subclass's that takes them too), named in the messages.
        # (stacklevel 4: deprecated(), here, __init__, its caller.)
        if warn is None and spew is None and returnFailure is None:
            return
        cls = type(self).__name__
        for name, value in (
            ("warn", warn),
            ("spew", spew),
            ("returnFailure", returnFailure),
        ):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{cls}({name}={value!r}): {name} must be a bool")
        if returnFailure is not None:
            deprecated(f"{cls}(returnFailure=...)", _RETURN_FAILURE, 4)
        if warn is not None:
            deprecated(
                f"{cls}(warn=...)",
                "an errback of your own that logs, if you want failures logged:"
                " a failed call fails its Deferred, and never stops the reactor",
                4,
            )
        if spew is not None:
            deprecated(
                f"{cls}(spew=...)",
                "callbacks of your own that log, if you want every call logged",
                4,
            )
        if warn or spew:
            # An instance attribute: queues without them pay nothing per call.
            self.submit = functools.partial(  # type: ignore[method-assign]
                self._submitLogged, spew=bool(spew)
            )

    def _submitLogged(
        self, task: Task[T], *, timeout: float | None = None, spew: bool
    ) -> Deferred[T]:
        # submit() of a queue made with the original's warn or spew.
        d = type(self).submit(self, task, timeout=timeout)
        return d.addBoth(_logOutcome, task, spew)

    @property
    def clock(self) -> IReactorTime:
        """
        The clock for timeouts, resolved lazily.
        """
        if self._clock is None:
            self._clock = reactorClock()
        return self._clock

    # Workers ----------------------------------------------------------------

    @property
    def workers(self) -> list[Any]:
        """
        The attached workers (a copy).
        """
        return [slot.worker for slot in self._workers]

    def __len__(self) -> int:
        """
        How many workers are attached, as in the original AsynQueue (not how
        many calls wait: that is L{pending}).
        """
        return len(self._workers)

    def __bool__(self) -> bool:
        """
        Always true, even with no worker attached: C{if queue:} tests
        whether there is a queue, not whether it has workers (the original
        was false without workers, or once shut down; test C{len(queue)} or
        L{isRunning} for those).
        """
        return True

    def attachWorker(self, worker: Any) -> Any:
        """
        Add a worker providing L{IWorker}; it starts taking tasks at once.
        Attaching a worker that is attached already changes nothing.

        @return: the worker.
        @raise TypeError: it does not provide L{IWorker}.
        """
        if not IWorker.providedBy(worker):
            raise TypeError(f"{worker!r} does not provide IWorker")
        if not self._accepting:
            raise QueueStopped("the queue is shut down: no worker can be attached")
        slot = self._workers.attach(worker)
        if slot is not None:
            if slot.gives:
                # What the worker calls when it can take another task: bound
                # to its slot once, so that nothing looks it up per task.
                slot.onFreed = functools.partial(self._freedFrom, slot)
            if slot.takesAhead and hasattr(worker, "pauseAhead"):
                # How it says that it may take nothing ahead for a while.
                worker.pauseAhead = functools.partial(self._pauseAhead, slot)
            for f, args, kw in self._updates:
                # Nobody holds these Deferreds: a failure is logged.
                self._pin(worker, f, args, kw).addErrback(_updateFailed, f, worker)
            self._dispatch()
        return worker

    def detachWorker(self, worker: Any) -> Deferred[None]:
        """
        Take C{worker} off the queue: it gets no more tasks, finishes the one
        it runs (and any L{update} calls pinned to it), then stops. Queued
        tasks stay queued for the other workers.

        @return: fires when the worker has stopped.
        """
        slot = self._workers.get(worker)
        if slot is None:
            return fail(WorkerError(f"{worker!r} is not attached"))
        if slot.detaching is not None:
            return follow(slot.detaching)
        done = self._workers.startDetaching(slot)
        if slot.ahead is not None and self._takeBack(slot.ahead):
            self._dispatch()
        self._maybeDetach(slot)
        return follow(done)

    def _maybeDetach(self, slot: WorkerSlot) -> None:
        done = slot.detaching
        if done is None or slot.load or not slot.attached:
            return
        worker = slot.worker
        if any(e[1].pinnedTo is worker and e[1].state is _QUEUED for e in self._heap):
            return
        self._workers.remove(slot)
        worker.stop().chainDeferred(done)
        self._failStranded()
        self._checkDrained()

    # Calls ------------------------------------------------------------------

    def call(
        self,
        f: Callable[..., Any],
        *args: Any,
        niceness: int = 0,
        doNext: bool = False,
        doLast: bool = False,
        series: str | None = None,
        timeout: float | None = None,
        raw: bool = False,
        consumer: Any = None,
        **kw: Any,
    ) -> Deferred[Any]:
        """
        Queue C{f(*args, **kw)}.

        @param niceness: -20 (runs first) to 20 (runs last).
        @param doNext: Run before every other queued call.
        @param doLast: Run after every other queued call.
        @param series: Run only on a worker qualified for this series (its
            C{iQualified}, or its class's C{cQualified}: "thread",
            "process"). If no attached worker is, or the last one is
            detached while the call waits, it fails with L{UnknownSeries}.
        @param timeout: Seconds from now after which the call fails with
            L{TaskTimeout} (stopping it if it runs and can be interrupted).
        @param raw: Deliver an iterator as it is, not as a L{Deferator}.
        @param consumer: An C{IConsumer} to which the items of an iterator
            result are written; the Deferred then fires with the consumer.
        @return: A Deferred firing with the call's result, or failing with the
            exception it raised.
        @raise TypeError: C{f} is not callable, or C{consumer} is no
            C{IConsumer}, or C{niceness} is not an int.
        @raise ValueError: C{niceness} is out of range, or C{timeout} is not
            positive.
        """
        if consumer is not None and not IConsumer.providedBy(consumer):
            raise TypeError(f"consumer {consumer!r} does not provide IConsumer")
        if timeout is not None:
            checkNumber(timeout, "timeout (seconds)", positive=True)
        if kw and "returnFailure" in kw:
            # The original's, for the queue's own use: not for f.
            kw.pop("returnFailure")
            deprecated("TaskQueue.call(..., returnFailure=...)", _RETURN_FAILURE)
        task: Task[Any] = Task(
            f,
            args,
            kw,
            niceness=niceness,
            doNext=doNext,
            doLast=doLast,
            series=series,
            raw=raw,
            consumer=consumer,
        )
        if timeout is None:
            return self.submit(task)
        return self.submit(task, timeout=timeout)

    def submit(self, task: Task[T], *, timeout: float | None = None) -> Deferred[T]:
        """
        Queue a task made elsewhere (L{call} makes one for you).
        """
        if not self._accepting:
            return fail(
                QueueStopped(f"the queue is shut down: {task.info} was refused")
            )
        # (Task.enqueued, inlined: this runs per call. A task handed to a
        # worker is no longer queued; one in the heap has its _onRemove.)
        if task.state is not _QUEUED or task._onRemove is not None:
            if task.state is TaskState.DONE and task.d.called:
                # Cancelled (or timed out) before it was submitted: its
                # Deferred has failed already, and nothing is queued.
                return task.d
            raise ValueError(f"{task!r} was submitted already")
        series = task.series
        if (
            series is not None
            and task.pinnedTo is None
            and not any(
                _qualifies(s.worker, series)
                for s in self._workers
                if s.detaching is None
            )
        ):
            # It would wait forever, or until some qualified worker came.
            task.stopEarly(
                _unknownSeries(task, "no attached worker is qualified for it")
            )
            return task.d
        if task.consumer is not None:
            # Its producer schedules its writing on our clock.
            task.clock = self._clock
        if timeout is not None:
            call = self.clock.callLater(timeout, task.timeOut, timeout)
            task.d.addBoth(_cancelCall, call)
        workers = self._workers
        if (
            not self._queued
            and series is None
            and task.pinnedTo is None
            and not workers.detachingCount
        ):
            free = workers.idle or workers.spare
            if free:
                # The common case, a free worker and nothing waiting: start
                # now (an idle worker first, else one that takes it ahead).
                self._start(free[-1], task)
                return task.d
        # (Task.enqueue, inlined; only a task that waits in the heap can be
        # stopped while queued.)
        task._onRemove = self._removedCallback
        self._queued += 1
        heapq.heappush(self._heap, (task.sortKey, task))
        if workers.aheadCount and not workers.idle:
            self._takeBackWorse(task)
        if workers.idle or workers.spare:
            # (With no free worker, _dispatch would start nothing, detach
            # no idle worker, and find the queue not drained: a task waits.)
            self._dispatch()
        return task.d

    def update(
        self, f: Callable[..., Any], *args: Any, **kw: Any
    ) -> Deferred[list[Any]]:
        """
        Run C{f(*args, **kw)} once on every attached worker, before other
        queued calls, and on every worker attached later, before its first
        call (as the original AsynQueue did: per-thread setup). The queue
        keeps each update for its whole life.

        @return: A Deferred firing with the list of results, one per worker
            attached now (in the order of L{workers}), or failing with the
            first failure. A failure on a worker attached later is logged.
        @raise TypeError: C{f} is not callable.
        """
        if not callable(f):
            raise TypeError(f"a task must be callable, not {f!r}")
        if not self._accepting:
            return fail(QueueStopped(f"the queue is shut down: update {f!r} refused"))
        self._updates.append((f, args, kw))
        ds = [self._pin(worker, f, args, kw) for worker in self.workers]
        d = DeferredList(ds, fireOnOneErrback=True, consumeErrors=True)
        return d.addCallbacks(lambda results: [r for _, r in results], _firstError)

    def _pin(
        self,
        worker: Any,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> Deferred[Any]:
        # A call that only this worker runs, before other queued calls.
        task: Task[Any] = Task(f, args, dict(kw), doNext=True)
        task.pinnedTo = worker
        return self.submit(task)

    # Dispatch -----------------------------------------------------------------

    def _removed(self, task: Task[Any]) -> None:
        # A queued task was cancelled or timed out. Lazy removal: its heap
        # entry is skipped when it comes up.
        self._queued -= 1
        if self._heap and (self._workers.idle or self._workers.spare):
            # It may have been taken back from a worker (see _takeBack).
            self._dispatch()
        self._checkDrained()

    def _canRun(self, slot: WorkerSlot, task: Task[Any]) -> bool:
        if task.pinnedTo is not None:
            return task.pinnedTo is slot.worker
        if slot.detaching is not None:
            return False
        return task.series is None or _qualifies(slot.worker, task.series)

    def _dispatch(self) -> None:
        workers = self._workers
        heap, idle, spare = self._heap, workers.idle, workers.spare
        while heap and (idle or spare):
            task = heap[0][1]
            if task.state is not _QUEUED:
                heapq.heappop(heap)
                continue
            if (
                task.pinnedTo is None
                and task.series is None
                and not workers.detachingCount
            ):
                # Any idle worker will do; else one that takes it ahead.
                slot = idle[-1] if idle else spare[-1]
            elif not idle:
                break
            else:
                for slot in idle:
                    if self._canRun(slot, task):
                        break
                else:
                    if not self._dispatchConstrained():
                        break
                    continue
            heapq.heappop(heap)
            self._queued -= 1
            self._start(slot, task)
        if workers.detachingCount:
            for slot in list(idle):
                self._maybeDetach(slot)
        if self._drained.waiting:
            self._checkDrained()

    def _dispatchConstrained(self) -> bool:
        # The best task can't run on an idle worker: find the best one that can.
        for entry in sorted(self._heap):
            task = entry[1]
            if task.state is not _QUEUED:
                continue
            for slot in self._workers.idle:
                if self._canRun(slot, task):
                    self._heap.remove(entry)
                    heapq.heapify(self._heap)
                    self._queued -= 1
                    self._start(slot, task)
                    return True
        return False

    def _start(
        self,
        slot: WorkerSlot,
        task: Task[Any],
        kept: bool = False,
        keptAhead: bool = False,
    ) -> None:
        # kept: the slot stays as it is, busy with one task (the one it was
        # freed of is replaced by this one); keptAhead: busy with two, this
        # one given ahead in place of the one it started (see _goOn).
        worker = slot.worker
        if keptAhead or (not kept and self._workers.take(slot, task)):
            # Given ahead, to run after the worker's current task.
            task.start(worker, self._takeBackCallback)
        else:
            # (Task.start, inlined: this runs per call.)
            task.state = _RUNNING
            task.worker = worker
        self._running.add(task)
        try:
            onFreed = slot.onFreed
            if onFreed is not None:
                worker.give(task, onFreed)
                return
            freed = worker.run(task)
        except Exception:
            self._running.discard(task)
            self._unload(slot)
            task.fail(Failure())  # type: ignore[no-untyped-call]
            return
        freed.addBoth(self._freed, worker, task)

    def _goOn(self, slot: WorkerSlot) -> bool:
        # _freedFrom's common case of a busy queue (tasks queued): the best
        # queued task goes straight to the worker of the slot, which stays
        # as it is (what workers.release, _dispatch and take would undo and
        # redo). False: not that case.
        workers = self._workers
        task = self._heap[0][1]
        if (
            task.state is not _QUEUED
            or task.pinnedTo is not None
            or task.series is not None
            or workers.detachingCount
        ):
            return False
        if not slot.takesAhead:
            if slot.load != 1 or workers.aheadCount:
                return False
            # A worker that takes nothing ahead (so it had this one task,
            # and is on no free list): it goes on to the best task.
            heapq.heappop(self._heap)
            self._queued -= 1
            self._start(slot, task, kept=True)
            return True
        if slot.ahead is None or slot.onFreed is None or workers.idle:
            return False
        # A worker that takes ahead, done with one of its two tasks: it is
        # on the one given ahead now, and the best task is given ahead in
        # its place (it would be the one spare worker).
        heapq.heappop(self._heap)
        self._queued -= 1
        workers.replaceAhead(slot, task).startedAhead()
        self._start(slot, task, keptAhead=True)
        return True

    def _unload(self, slot: WorkerSlot) -> None:
        # The worker is done with a task (or never got it): one task less.
        ahead = self._workers.release(slot)
        if ahead is not None:
            # The task given ahead is the worker's current one now (or was
            # the one taken back).
            ahead.startedAhead()

    def _freed(self, result: object, worker: Any, task: Task[Any]) -> None:
        # A worker's run() Deferred fired (workers that give() call
        # slot.onFreed).
        if isinstance(result, Failure):
            log.failure("Worker {worker} failed", result, worker=worker)
        self._freedFrom(self._workers.get(worker), worker, task)

    def _freedFrom(self, slot: WorkerSlot | None, worker: Any, task: Task[Any]) -> None:
        # The worker of this slot is done with the task.
        self._running.discard(task)
        workers = self._workers
        heap = self._heap
        if slot is None or not slot.attached:
            # Detached meanwhile.
            pass
        elif heap and self._goOn(slot):
            if not (workers.idle or workers.spare):
                return
        else:
            # One task less (_unload, inlined).
            ahead = workers.release(slot)
            if ahead is not None:
                ahead.startedAhead()
            if workers.aheadCount and not slot.load:
                # An idle worker: tasks waiting behind other workers'
                # current ones start sooner here.
                for ahead in workers.givenAhead():
                    self._takeBack(ahead)
            elif heap and not slot.load and not workers.detachingCount:
                # The common case of a busy queue, what _dispatch would do
                # in more steps: the best task, to the worker that is free.
                best = heap[0][1]
                if (
                    best.state is _QUEUED
                    and best.pinnedTo is None
                    and best.series is None
                ):
                    heapq.heappop(heap)
                    self._queued -= 1
                    self._start(slot, best)
                    if not (workers.idle or workers.spare):
                        return
        if heap or workers.detachingCount or self._drained.waiting:
            self._dispatch()

    def _takeBack(self, task: Task[Any]) -> bool:
        # Reactor thread: put a task given ahead back in the queue, unless
        # its worker has started it.
        worker: Any = task.worker
        slot = self._workers.get(worker)
        if slot is None or slot.ahead is not task or not worker.takeBack(task):
            return False
        self._running.discard(task)
        self._unload(slot)
        task.requeue()
        # (Started at once when submitted, it may not have been queued yet.)
        task._onRemove = self._removedCallback
        heapq.heappush(self._heap, (task.sortKey, task))
        self._queued += 1
        return True

    def _pauseAhead(self, slot: WorkerSlot, paused: bool) -> None:
        # A worker that takes ahead may not for a while (an iteration holds
        # its thread): the task given ahead, if any, goes back to the
        # queue, and none is given until it may again.
        if not slot.attached:
            return
        self._workers.pauseAhead(slot, paused)
        ahead = slot.ahead
        if paused and ahead is not None and self._takeBack(ahead):
            self._dispatch()

    def _takeBackWorse(self, task: Task[Any]) -> None:
        # A new task that no worker is free for: if it comes before a task
        # given ahead, the last of those goes back to the queue and makes
        # room.
        worst = self._workers.worstAhead()
        if worst is not None and worst.sortKey > task.sortKey:
            self._takeBack(worst)

    # Shutdown -----------------------------------------------------------------

    def isRunning(self) -> bool:
        """
        True until L{shutdown} is called.
        """
        return self._accepting

    def pending(self) -> int:
        """
        How many calls wait in the queue (not counting running ones).
        """
        return self._queued

    def running(self) -> int:
        """
        How many calls are on workers now.
        """
        return len(self._running)

    def whenIdle(self) -> Deferred[None]:
        """
        Fires when no call is queued or running.
        """
        d = self._drained.wait()
        self._checkDrained()
        return d

    def _checkDrained(self) -> None:
        if self._drained.waiting and not self._running and not self._queued:
            self._drained.fire()

    def shutdown(self) -> Deferred[None]:
        """
        Refuse new calls, let every queued and running call finish, then stop
        the workers. Idempotent.

        A queued call that no attached worker may run (none is attached, or
        none is qualified for its series), or that is left so when its last
        such worker is detached, fails at once with L{QueueStopped}: no
        worker can be attached after shutdown, and it would wait forever.
        """
        if self._stopped is None:
            self._accepting = False
            self._failStranded()
            self._stopped = self.whenIdle().addCallback(self._stopWorkers)
        return follow(self._stopped)

    def _failStranded(self) -> None:
        # Once shut down, no worker can be attached: a queued call that no
        # attached worker will run would keep its caller (and shutdown)
        # waiting forever, so it fails now. Before that, a series call
        # whose last qualified worker left fails (see submit).
        if not self._queued:
            return
        staying = [s for s in self._workers if s.detaching is None]
        for entry in list(self._heap):
            task = entry[1]
            if task.state is not _QUEUED:
                continue
            if self._accepting:
                if (
                    task.series is not None
                    and task.pinnedTo is None
                    and not any(self._canRun(w, task) for w in staying)
                ):
                    task.stopEarly(
                        _unknownSeries(task, "its last qualified worker was detached")
                    )
                continue
            if task.pinnedTo is not None:
                # Its worker runs it before it may leave.
                if self._workers.get(task.pinnedTo) is not None:
                    continue
            elif any(self._canRun(w, task) for w in staying):
                continue
            why = "no worker that may run it" if self._workers else "no worker"
            task.stopEarly(
                QueueStopped(
                    f"{task.info} was still queued when the queue was shut down"
                    f" with {why} (no worker can be attached any more)"
                )
            )

    def _stopWorkers(self, _: None) -> Deferred[None]:
        workers = self._workers.clear()
        d = DeferredList([w.stop() for w in workers], consumeErrors=True)
        return d.addCallback(lambda _: None)


def _qualifies(worker: Any, series: str) -> bool:
    # The worker's own series, or those of its class (the original's
    # cQualified: "thread" for every ThreadWorker, ...).
    return series in worker.iQualified or series in getattr(worker, "cQualified", ())


def _unknownSeries(task: Task[Any], why: str) -> UnknownSeries:
    return UnknownSeries(
        f"{task.info} names series {task.series!r}, and {why} (name the"
        " series in a worker's series, or leave series out)"
    )


#: What to write instead of the original's returnFailure.
_RETURN_FAILURE = "nothing: a failed call always fails its Deferred with its exception"


def _logOutcome(result: Any, task: Task[Any], spew: bool) -> Any:
    # A queue made with the original's warn or spew logs as it did.
    if isinstance(result, Failure):
        log.failure("{task} failed", result, task=task.info)
    elif spew:
        log.info("{task} -> {result!r}", task=task.info, result=result)
    return result


def _updateFailed(failure: Failure, f: object, worker: object) -> None:
    log.failure(
        "update {f!r} failed on a worker attached later, {worker!r}",
        failure,
        f=f,
        worker=worker,
    )


def _cancelCall(result: object, call: Any) -> object:
    if call.active():
        call.cancel()
    return result


def _firstError(failure: Failure) -> Failure:
    # DeferredList wraps the failure in FirstError: hand on the original.
    return failure.value.subFailure  # type: ignore[no-any-return,union-attr]


__all__ = ["TaskQueue"]
