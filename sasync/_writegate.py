"""
The writer gate: how many transactions of one broker that may write run at
once, at SERIALIZABLE.

Serializable transactions that write at the same time tend to abort each
other: on PostgreSQL, inserts of rows with foreign keys read the parent's
primary key index pages that other inserts write, and SSI takes that for a
dependency cycle. Every abort is a retry that ran the whole transaction for
nothing. A L{WriterGate} keeps the number of such transactions running at
once at what the workload tolerates, found the way TCP finds its window
(additive increase, multiplicative decrease):

  - the limit starts at the broker's number of connections;
  - a transaction that ends in a conflict (L{sasync.retry.CONFLICTS})
    halves it (never below 1), once per round: conflicts of transactions
    let in before the last halving don't halve it again;
  - a transaction that commits adds C{1 / limit} (never above the
    connections plus the overflow connections).

A fixed limit (the broker option C{writers=N}) never changes. Transactions
beyond the limit wait at the gate, the most urgent first (the order of
their tasks: L{asynqueue.Task.sortKey}, so niceness counts), and leave it
when cancelled or timed out. A transaction holds its place from the moment
it is let in until its task's Deferred fires (for an iteration: when the
iteration is handed back).

Reactor thread only.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from asynqueue import Task

from . import retry

#: Below one place the gate would let nothing in.
_EPSILON = 1e-9


class _Entry:
    """
    One task at the gate: waiting, let in, or done.
    """

    __slots__ = ("number", "state", "submit", "task")

    def __init__(self, task: Task[Any]) -> None:
        #: C{None} once done.
        self.task: Task[Any] | None = task
        self.submit: Callable[[Task[Any]], Deferred[Any]] | None = None
        self.state = "new"
        #: Which one it was let in (1 for the first), once it was.
        self.number = 0


class WriterGate:
    """
    Lets at most L{limit} tasks run at once (see the module's docstring).

    @ivar limit: The limit now (a float while it grows by fractions).
    @ivar running: Tasks let in whose Deferred has not fired yet.
    @ivar waiting: Tasks waiting to be let in.
    """

    def __init__(self, *, start: int, maximum: int, fixed: bool = False) -> None:
        """
        @param start: The first limit.
        @param maximum: The most the limit grows to.
        @param fixed: Whether the limit stays at C{start}.
        """
        self.limit = float(start)
        self._maximum = float(max(start, maximum))
        self._fixed = fixed
        # Bound once: watch() adds it to every task let through.
        self._endedBound = self.ended
        self.running = 0
        self.waiting = 0
        self._entries: dict[Task[Any], _Entry] = {}
        self._heap: list[tuple[tuple[int, int, int], int, _Entry]] = []
        self._order = itertools.count()
        self._admitted = 0
        # Conflicts of tasks let in up to this one don't halve the limit.
        self._roundEnd = 0
        self._pumping = False

    @property
    def places(self) -> int:
        """
        How many tasks may run at once now.
        """
        return max(1, int(self.limit + _EPSILON))

    def watch(self, task: Task[Any]) -> None:
        """
        Hear first how C{task} ends: call before anything else is chained
        to its Deferred (a retry chained before would hold its place).
        """
        entry = self.enter(task)
        if entry is not None:
            task.d.addBoth(self._endedBound, entry)

    def enter(self, task: Task[Any]) -> _Entry | None:
        """
        L{watch} without the callback: the caller hands how C{task} ended
        to L{ended} itself, before anything else hears of it (a task's
        L{Task.onEnded<asynqueue.task.Task.onEnded>}).

        @return: The task's entry, to give L{ended}; C{None} if the task
            was known already, or has ended.
        """
        if task in self._entries or task.d.called:
            return None
        entry = self._entries[task] = _Entry(task)
        return entry

    def submit(
        self, task: Task[Any], submit: Callable[[Task[Any]], Deferred[Any]]
    ) -> Deferred[Any]:
        """
        Hand C{task} to C{submit} now if there is a place, else once there
        is (unless its Deferred fired meanwhile: cancelled, timed out).

        @return: The task's Deferred.
        """
        self.watch(task)
        entry = self._entries.get(task)
        if entry is None or entry.state != "new":
            return task.d  # (Stopped already, or given twice.)
        entry.submit = submit
        if not self.waiting and self.running < self.places:
            self._admit(entry)
        else:
            entry.state = "waiting"
            self.waiting += 1
            heapq.heappush(self._heap, (task.sortKey, next(self._order), entry))
        return task.d

    def _admit(self, entry: _Entry) -> None:
        entry.state = "running"
        self._admitted += 1
        entry.number = self._admitted
        self.running += 1
        task = entry.task
        assert entry.submit is not None and task is not None
        d = entry.submit(task)
        if d is not task.d:
            # Refused on its way (a queue shut down): its caller holds
            # task.d, so the refusal goes there.
            d.addErrback(self._refused, task)

    @staticmethod
    def _refused(failure: Failure, task: Task[Any]) -> None:
        if not task.d.called:
            task.stopEarly(failure.value or Exception(str(failure)))

    def ended(self, result: object, entry: _Entry) -> object:
        """
        The task of C{entry} ended with C{result} (a value or a
        L{Failure}): its place is free. @return: C{result}.
        """
        task = entry.task
        if task is not None:
            self._entries.pop(task, None)
        # Done with them: the task's onEnded may hold the entry (a cycle
        # only the garbage collector would free), and a waiting entry stays
        # in the heap until popped.
        entry.task = entry.submit = None
        state, entry.state = entry.state, "done"
        if state == "waiting":
            # Cancelled or timed out while waiting: it leaves the heap later.
            self.waiting -= 1
        elif state == "running":
            self.running -= 1
            self._learn(result, entry.number)
            self._pump()
        return result

    def _learn(self, result: object, number: int) -> None:
        if self._fixed:
            return
        if isinstance(result, Failure):
            error = result.value
            reason = None if error is None else retry.retryReason(error)
            if reason in retry.CONFLICTS and number > self._roundEnd:
                self.limit = max(1.0, self.limit / 2)
                self._roundEnd = self._admitted
        else:
            self.limit = min(self._maximum, self.limit + 1 / self.limit)

    def _pump(self) -> None:
        # Let in waiters while there are places. (Letting one in may end
        # another at once, which calls this again: the outer loop goes on.)
        if self._pumping:
            return
        self._pumping = True
        try:
            heap = self._heap
            while heap and self.running < self.places:
                entry = heapq.heappop(heap)[2]
                if entry.state == "waiting":
                    self.waiting -= 1
                    self._admit(entry)
        finally:
            self._pumping = False


__all__ = ["WriterGate"]
