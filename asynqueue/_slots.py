"""
What a L{TaskQueue<asynqueue.taskqueue.TaskQueue>} knows of its workers: a
L{WorkerSlot} per attached worker, and the free lists the queue picks a
worker from. Reactor thread only.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from .task import Task


@dataclass(slots=True, eq=False)
class WorkerSlot:
    """
    One attached worker and what the queue has given it.
    """

    worker: Any
    #: It may be given the next task while it runs one (see
    #: ThreadWorker.takesAhead); false while that is paused (see
    #: WorkerSlots.pauseAhead).
    takesAhead: bool
    #: It takes a task with give(task, onFreed), which saves a Deferred per
    #: task (see ThreadWorker.give).
    gives: bool
    #: How many tasks it has: 0, 1, or 2 (the second one given ahead).
    load: int = 0
    #: The task given ahead, until the worker is on it.
    ahead: Task[Any] | None = None
    #: While it is being detached: fires when it has stopped.
    detaching: Deferred[None] | None = None
    #: False once detached.
    attached: bool = True
    #: The free list it is on (see L{WorkerSlots._place}), or None.
    freeList: list[WorkerSlot] | None = None
    #: Set by the queue for a worker that L{gives}: what the worker calls,
    #: C{onFreed(worker, task)}, when it is done with a task.
    onFreed: Callable[[Any, Task[Any]], None] | None = None


class WorkerSlots:
    """
    The slots of the attached workers, in the order attached, and two free
    lists: L{idle}, the workers with no task, and L{spare}, those that run
    one and may be given the next one ahead. Every change of a slot's
    state goes through a method here, which keeps the lists true.

    @ivar aheadCount: How many slots have a task given ahead.
    @ivar detachingCount: How many slots are being detached.
    """

    def __init__(self) -> None:
        self._byID: dict[int, WorkerSlot] = {}
        self.idle: list[WorkerSlot] = []
        self.spare: list[WorkerSlot] = []
        self.aheadCount = 0
        # The tasks given ahead, by slot: looked over in C (see worstAhead).
        self._aheads: dict[WorkerSlot, Task[Any]] = {}
        self.detachingCount = 0

    def __len__(self) -> int:
        return len(self._byID)

    def __iter__(self) -> Iterator[WorkerSlot]:
        return iter(list(self._byID.values()))

    def get(self, worker: object) -> WorkerSlot | None:
        """
        The slot of C{worker}, or C{None} if it is not attached.
        """
        return self._byID.get(id(worker))

    def attach(self, worker: Any) -> WorkerSlot | None:
        """
        Give C{worker} a slot, idle. @return: the slot; None if it has one
        already.
        """
        if id(worker) in self._byID:
            return None
        slot = WorkerSlot(
            worker,
            takesAhead=bool(getattr(worker, "takesAhead", False)),
            gives=callable(getattr(worker, "give", None)),
        )
        self._byID[id(worker)] = slot
        self._place(slot)
        return slot

    def startDetaching(self, slot: WorkerSlot) -> Deferred[None]:
        """
        The worker gets no new task from now on (one pinned to it aside).

        @return: fires when it has stopped (see L{remove}).
        """
        if slot.detaching is None:
            slot.detaching = Deferred()
            self.detachingCount += 1
            self._place(slot)
        return slot.detaching

    def remove(self, slot: WorkerSlot) -> None:
        """
        The worker, idle and detaching, is gone.
        """
        assert slot.detaching is not None and not slot.load
        self.detachingCount -= 1
        del self._byID[id(slot.worker)]
        slot.attached = False
        self._place(slot)

    def take(self, slot: WorkerSlot, task: Task[Any]) -> bool:
        """
        The worker is given C{task}. @return: whether it was given ahead (to
        run after the worker's current task).
        """
        load = slot.load
        if not load:
            slot.load = 1
            idle = self.idle
            if slot.freeList is idle:
                # (_place's answer, the common case: off the idle list, onto
                # the spare one if it takes the next task ahead and stays.)
                idle.remove(slot)
                if slot.takesAhead and slot.detaching is None:
                    spare = slot.freeList = self.spare
                    spare.append(slot)
                else:
                    slot.freeList = None
            else:
                self._place(slot)
            return False
        slot.ahead = task
        self._aheads[slot] = task
        self.aheadCount += 1
        slot.load = load + 1
        self._place(slot)
        return True

    def replaceAhead(self, slot: WorkerSlot, task: Task[Any]) -> Task[Any]:
        """
        The worker, busy with two tasks, is done with one: the one given
        ahead is its current one now, and C{task} is given ahead in its
        place (the slot stays as it is, on no free list).

        @return: the task that was given ahead.
        """
        ahead = slot.ahead
        assert ahead is not None and slot.load == 2
        slot.ahead = task
        self._aheads[slot] = task
        return ahead

    def release(self, slot: WorkerSlot) -> Task[Any] | None:
        """
        The worker is done with a task (or never got it, or it was taken
        back): one task less.

        @return: the task that was given ahead, if there was one: the
            worker's current one now (or the one taken back).
        """
        load = slot.load = slot.load - 1
        ahead = slot.ahead
        if ahead is not None:
            slot.ahead = None
            del self._aheads[slot]
            self.aheadCount -= 1
        elif not load and slot.attached:
            # (_place's answer, the common case: idle now, from the spare
            # list or from none.)
            have = slot.freeList
            if have is not None:
                have.remove(slot)
            idle = slot.freeList = self.idle
            idle.append(slot)
            return None
        self._place(slot)
        return ahead

    def pauseAhead(self, slot: WorkerSlot, paused: bool) -> None:
        """
        The worker, which takes tasks ahead, may not for a while (C{paused}
        true: it stays off the L{spare} list), or may again.
        """
        slot.takesAhead = not paused
        self._place(slot)

    def givenAhead(self) -> list[Task[Any]]:
        """
        The tasks given ahead, which their workers have not started.
        """
        return list(self._aheads.values())

    def worstAhead(self) -> Task[Any] | None:
        """
        The task given ahead that sorts last, if any.
        """
        aheads = self._aheads
        return max(aheads.values(), key=_sortKey) if aheads else None

    def clear(self) -> list[Any]:
        """
        Forget every worker (the queue has stopped). @return: the workers.
        """
        workers = []
        for slot in self._byID.values():
            workers.append(slot.worker)
            slot.attached = False
        self._byID, self.idle, self.spare = {}, [], []
        self._aheads = {}
        self.aheadCount = self.detachingCount = 0
        return workers

    def _place(self, slot: WorkerSlot) -> None:
        # The one place that puts a worker on the free list its state says:
        # idle with no task; spare with one task, when it takes the next one
        # ahead and is staying; else (two tasks, leaving, gone) on none.
        if not slot.attached:
            want = None
        elif not slot.load:
            want = self.idle
        elif slot.load == 1 and slot.takesAhead and slot.detaching is None:
            want = self.spare
        else:
            want = None
        have = slot.freeList
        if have is not want:
            if have is not None:
                have.remove(slot)
            if want is not None:
                want.append(slot)
            slot.freeList = want


_sortKey = operator.attrgetter("sortKey")

__all__ = ["WorkerSlot", "WorkerSlots"]
