"""
L{NullQueue}: the original AsynQueue's queue that runs calls in the reactor
thread, one at a time, for code written for it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from .moved import deprecated
from .taskqueue import TaskQueue
from .workers import AsyncWorker


class NullQueue(TaskQueue):
    """
    Deprecated: a L{TaskQueue} with one L{AsyncWorker}, which runs each
    call in the reactor thread (a call returning a Deferred or coroutine
    holds the worker until it fires). Write
    C{q = TaskQueue(); q.attachWorker(AsyncWorker())} instead.
    """

    def __init__(self, *, clock: IReactorTime | None = None) -> None:
        """
        @param clock: See L{TaskQueue}.
        """
        deprecated(
            "asynqueue.null.NullQueue()",
            "TaskQueue() with q.attachWorker(AsyncWorker())",
        )
        super().__init__(clock=clock)
        self.attachWorker(AsyncWorker())


__all__ = ["NullQueue"]
