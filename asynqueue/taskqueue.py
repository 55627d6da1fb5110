"""
L{TaskQueue}: a prioritized queue of calls, run by the workers attached to it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._clock import reactorClock
from .errors import QueueStopped, WorkerError
from .interfaces import IWorker
from .task import Task, TaskState

T = TypeVar("T")

_QUEUED, _RUNNING = TaskState.QUEUED, TaskState.RUNNING

log = Logger()


class TaskQueue:
    """
    Runs calls on its workers in priority order: C{doNext} calls first,
    C{doLast} calls last, and in between lower C{niceness} (-20..20) first;
    first in, first out within a priority.

    Everything here happens in the reactor thread.
    """

    def __init__(self, *, clock: IReactorTime | None = None) -> None:
        """
        @param clock: For timeouts; the reactor by default (tests pass a
            C{twisted.internet.task.Clock}).
        """
        self._clock = clock
        # Entries are (band, niceness, sequence, task): compared in C, never
        # reaching the task. Cancelled tasks stay until popped (lazy removal).
        self._heap: list[tuple[int, int, int, Task[Any]]] = []
        #: How many tasks in the heap are still QUEUED.
        self._queued = 0
        self._workers: list[Any] = []
        # Workers with no task; workers that run one task and may be given
        # the next one ahead (see ThreadWorker.takesAhead); the task so
        # given to each such worker, by id(worker); how many tasks each
        # worker has.
        self._idle: list[Any] = []
        self._spare: list[Any] = []
        self._ahead: dict[int, Task[Any]] = {}
        self._load: dict[int, int] = {}
        self._takesAhead: set[int] = set()
        # Workers that take a task with give(task, onFreed), which saves a
        # Deferred per task (see ThreadWorker.give).
        self._givers: set[int] = set()
        self._detaching: dict[int, Deferred[None]] = {}
        self._running: set[Task[Any]] = set()
        self._accepting = True
        self._drained: list[Deferred[None]] = []
        self._stopped: Deferred[None] | None = None
        # Made once: a bound method per submitted task costs.
        self._removedCallback = self._removed
        self._takeBackCallback = self._takeBack
        self._freedCallback = self._freedBy

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
        return list(self._workers)

    def attachWorker(self, worker: Any) -> Any:
        """
        Add a worker providing L{IWorker}; it starts taking tasks at once.

        @return: the worker.
        @raise TypeError: it does not provide L{IWorker}.
        """
        if not IWorker.providedBy(worker):
            raise TypeError(f"{worker!r} does not provide IWorker")
        if not self._accepting:
            raise QueueStopped("the queue is shut down: no worker can be attached")
        self._workers.append(worker)
        self._load[id(worker)] = 0
        if getattr(worker, "takesAhead", False):
            self._takesAhead.add(id(worker))
        if callable(getattr(worker, "give", None)):
            self._givers.add(id(worker))
        self._idle.append(worker)
        self._dispatch()
        return worker

    def detachWorker(self, worker: Any) -> Deferred[None]:
        """
        Take C{worker} off the queue: it gets no more tasks, finishes the one
        it runs (and any L{update} calls pinned to it), then stops. Queued
        tasks stay queued for the other workers.

        @return: fires when the worker has stopped.
        """
        if worker not in self._workers:
            return fail(WorkerError(f"{worker!r} is not attached"))
        done = self._detaching.get(id(worker))
        if done is None:
            done = self._detaching[id(worker)] = Deferred()
            if worker in self._spare:
                self._spare.remove(worker)
            ahead = self._ahead.get(id(worker))
            if ahead is not None and self._takeBack(ahead):
                self._dispatch()
            self._maybeDetach(worker)
        return _follow(done)

    def _maybeDetach(self, worker: Any) -> None:
        done = self._detaching.get(id(worker))
        if done is None or worker not in self._idle:
            return
        if any(
            e[3].pinnedTo is worker and e[3].state is _QUEUED for e in self._heap
        ):
            return
        del self._detaching[id(worker)]
        self._idle.remove(worker)
        self._workers.remove(worker)
        self._load.pop(id(worker), None)
        self._takesAhead.discard(id(worker))
        self._givers.discard(id(worker))
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
        @param series: Run only on a worker qualified for this series.
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
        if timeout is not None and not timeout > 0:
            raise ValueError(
                f"timeout must be a positive number of seconds, not {timeout!r}"
            )
        task: Task[Any] = Task(
            f, args, kw, niceness=niceness, doNext=doNext, doLast=doLast,
            series=series, raw=raw, consumer=consumer,
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
        if (
            task.series is not None
            and task.pinnedTo is None
            and not any(task.series in w.iQualified for w in self._workers)
        ):
            log.warn(
                "No worker is qualified yet for series {series!r}",
                series=task.series,
            )
        if task.state is not _QUEUED or task._onRemove is not None:
            if task.state is TaskState.DONE and task.d.called:
                # Cancelled (or timed out) before it was submitted: its
                # Deferred has failed already, and nothing is queued.
                return task.d
            raise ValueError(f"{task!r} was submitted already")
        task._onRemove = self._removedCallback
        if task.consumer is not None:
            # Its producer schedules its writing on our clock.
            task.clock = self._clock
        if timeout is not None:
            call = self.clock.callLater(timeout, task.timeOut, timeout)
            task.d.addBoth(_cancelCall, call)
        if (
            not self._queued
            and task.pinnedTo is None
            and task.series is None
            and not self._detaching
            and (self._idle or self._spare)
        ):
            # The common case, a free worker and nothing waiting: start now.
            self._start(self._idle[-1] if self._idle else self._spare[-1], task)
        else:
            self._queued += 1
            band, niceness, sequence = task.sortKey
            heapq.heappush(self._heap, (band, niceness, sequence, task))
            if self._ahead and not self._idle:
                self._takeBackWorse(task)
            self._dispatch()
        return task.d

    def update(
        self, f: Callable[..., Any], *args: Any, **kw: Any
    ) -> Deferred[list[Any]]:
        """
        Run C{f(*args, **kw)} once on every attached worker, before other
        queued calls.

        @return: A Deferred firing with the list of results, one per worker
            (in the order of L{workers}), or failing with the first failure.
        @raise TypeError: C{f} is not callable.
        """
        if not callable(f):
            raise TypeError(f"a task must be callable, not {f!r}")
        if not self._accepting:
            return fail(QueueStopped(f"the queue is shut down: update {f!r} refused"))
        ds = []
        for worker in self._workers:
            task: Task[Any] = Task(f, args, dict(kw), doNext=True)
            task.pinnedTo = worker
            ds.append(self.submit(task))
        d = DeferredList(ds, fireOnOneErrback=True, consumeErrors=True)
        return d.addCallbacks(
            lambda results: [r for _, r in results], _firstError
        )

    # Dispatch -----------------------------------------------------------------

    def _removed(self, task: Task[Any]) -> None:
        # A queued task was cancelled or timed out. Lazy removal: its heap
        # entry is skipped when it comes up.
        self._queued -= 1
        if self._heap and (self._idle or self._spare):
            # It may have been taken back from a worker (see _takeBack).
            self._dispatch()
        self._checkDrained()

    def _canRun(self, worker: Any, task: Task[Any]) -> bool:
        if task.pinnedTo is not None:
            return task.pinnedTo is worker
        if id(worker) in self._detaching:
            return False
        return task.series is None or task.series in worker.iQualified

    def _dispatch(self) -> None:
        heap, idle, spare = self._heap, self._idle, self._spare
        while heap and (idle or spare):
            task = heap[0][3]
            if task.state is not _QUEUED:
                heapq.heappop(heap)
                continue
            if task.pinnedTo is None and task.series is None and not self._detaching:
                # Any idle worker will do; else one that takes it ahead.
                worker = idle[-1] if idle else spare[-1]
            elif not idle:
                break
            else:
                for worker in idle:
                    if self._canRun(worker, task):
                        break
                else:
                    if not self._dispatchConstrained():
                        break
                    continue
            heapq.heappop(heap)
            self._queued -= 1
            self._start(worker, task)
        if self._detaching:
            for worker in list(idle):
                self._maybeDetach(worker)
        if self._drained:
            self._checkDrained()

    def _dispatchConstrained(self) -> bool:
        # The best task can't run on an idle worker: find the best one that can.
        for entry in sorted(self._heap):
            task = entry[3]
            if task.state is not _QUEUED:
                continue
            for worker in self._idle:
                if self._canRun(worker, task):
                    self._heap.remove(entry)
                    heapq.heapify(self._heap)
                    self._queued -= 1
                    self._start(worker, task)
                    return True
        return False

    def _start(self, worker: Any, task: Task[Any]) -> None:
        wid = id(worker)
        if self._load[wid]:
            # Given ahead, to run after the worker's current task.
            self._spare.remove(worker)
            self._ahead[wid] = task
            task._takeBack = self._takeBackCallback
            self._load[wid] = 2
        else:
            self._idle.remove(worker)
            if wid in self._takesAhead and wid not in self._detaching:
                self._spare.append(worker)
            self._load[wid] = 1
        self._running.add(task)
        task.state = _RUNNING
        task.worker = worker
        try:
            if wid in self._givers:
                worker.give(task, self._freedCallback)
                return
            freed = worker.run(task)
        except Exception:
            self._running.discard(task)
            self._unload(worker, task)
            task.fail(Failure())  # type: ignore[no-untyped-call]
            return
        freed.addBoth(self._freed, worker, task)

    def _unload(self, worker: Any, task: Task[Any]) -> None:
        # The worker is done with task (or never got it): one task less.
        wid = id(worker)
        load = self._load.get(wid)
        if load is None:
            # Detached meanwhile.
            return
        load -= 1
        self._load[wid] = load
        ahead = self._ahead.pop(wid, None)
        if ahead is not None:
            # The task given ahead is the worker's current one now.
            ahead._takeBack = None
        if load:
            if wid in self._takesAhead and wid not in self._detaching:
                self._spare.append(worker)
        else:
            if worker in self._spare:
                self._spare.remove(worker)
            self._idle.append(worker)

    def _freedBy(self, worker: Any, task: Task[Any]) -> None:
        self._freed(None, worker, task)

    def _freed(self, result: object, worker: Any, task: Task[Any]) -> None:
        self._running.discard(task)
        if result is not None and isinstance(result, Failure):
            log.failure("Worker {worker} failed", result, worker=worker)
        self._unload(worker, task)
        if self._ahead and not self._load.get(id(worker), 1):
            # An idle worker: tasks waiting behind other workers' current
            # ones start sooner here.
            for ahead in list(self._ahead.values()):
                self._takeBack(ahead)
        if self._heap or self._detaching or self._drained:
            self._dispatch()

    def _takeBack(self, task: Task[Any]) -> bool:
        # Reactor thread: put a task given ahead back in the queue, unless
        # its worker has started it.
        worker = task.worker
        wid = id(worker)
        if self._ahead.get(wid) is not task or not worker.takeBack(task):  # type: ignore[attr-defined]
            return False
        self._running.discard(task)
        self._unload(worker, task)
        task._takeBack = None
        task.state = _QUEUED
        task.worker = None
        band, niceness, sequence = task.sortKey
        heapq.heappush(self._heap, (band, niceness, sequence, task))
        self._queued += 1
        return True

    def _takeBackWorse(self, task: Task[Any]) -> None:
        # A new task that no worker is free for: if it comes before a task
        # given ahead, that one goes back to the queue and makes room.
        worst: Task[Any] | None = None
        for ahead in self._ahead.values():
            if ahead.sortKey > task.sortKey and (
                worst is None or ahead.sortKey > worst.sortKey
            ):
                worst = ahead
        if worst is not None:
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
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        self._checkDrained()
        return d

    def _checkDrained(self) -> None:
        if self._drained and not self._running and not self._queued:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

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
        return _follow(self._stopped)

    def _failStranded(self) -> None:
        # Once shut down, no worker can be attached: a queued call that no
        # attached worker will run would keep its caller (and shutdown)
        # waiting forever, so it fails now.
        if self._accepting or not self._queued:
            return
        staying = [w for w in self._workers if id(w) not in self._detaching]
        for entry in list(self._heap):
            task = entry[3]
            if task.state is not _QUEUED:
                continue
            if task.pinnedTo is not None:
                # Its worker runs it before it may leave.
                if task.pinnedTo in self._workers:
                    continue
            elif any(self._canRun(w, task) for w in staying):
                continue
            why = "no worker" if not self._workers else "no worker that may run it"
            task._stopEarly(
                QueueStopped(
                    f"{task.info} was still queued when the queue was shut down"
                    f" with {why} (no worker can be attached any more)"
                )
            )

    def _stopWorkers(self, _: None) -> Deferred[None]:
        workers, self._workers, self._idle = self._workers, [], []
        self._spare, self._ahead, self._load = [], {}, {}
        self._takesAhead, self._givers = set(), set()
        d = DeferredList([w.stop() for w in workers], consumeErrors=True)
        return d.addCallback(lambda _: None)


def _cancelCall(result: object, call: Any) -> object:
    if call.active():
        call.cancel()
    return result


def _follow(d: Deferred[None]) -> Deferred[None]:
    """
    A new Deferred that fires with C{None} when C{d} fires, leaving C{d}'s
    own result alone (so that many callers can wait for it).
    """
    out: Deferred[None] = Deferred()

    def passOn(result: object) -> object:
        out.callback(None)
        return result

    d.addBoth(passOn)
    return out


def _firstError(failure: Failure) -> Failure:
    # DeferredList wraps the failure in FirstError: hand on the original.
    return failure.value.subFailure  # type: ignore[no-any-return,union-attr]


__all__ = ["TaskQueue"]
