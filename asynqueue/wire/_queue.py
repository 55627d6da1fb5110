"""
L{WireQueue}: a L{TaskQueue} of L{WireWorker}s, one per server, that
refuses a call no server could run when it is made, and moves idempotent
tasks of a lost server to another worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ..task import Task
from ..taskqueue import TaskQueue
from ._calls import wireCall
from ._worker import WireWorker


class WireQueue(TaskQueue):
    """
    A task queue run by remote workers: a L{WireWorker} for each of
    C{descriptions} (the same server may be named more than once, for a
    worker per core), and any attached later.

    Calls are checked at L{call} time: a callable the servers can't import
    by name, or arguments that can't be pickled, are refused with a
    C{TypeError}, and the queue goes on. A task marked
    L{idempotent<asynqueue.wire.idempotent>} that was running on a lost
    server is queued again, first in line, for whichever worker is free.
    """

    def __init__(
        self,
        descriptions: Sequence[str] = (),
        *,
        secret: str | bytes,
        clock: IReactorTime | None = None,
        reactor: Any = None,
        **workerOptions: Any,
    ) -> None:
        """
        @param descriptions: Where the servers listen (see L{WireWorker}).
        @param secret: Their secret.
        @param workerOptions: More keywords for each L{WireWorker} (C{tls},
            C{batchSize}, C{connectTimeout}, ...).
        @raise TypeError: C{descriptions} is a single string.
        """
        if isinstance(descriptions, str):
            raise TypeError(
                "a WireQueue takes a list of endpoint descriptions, not the"
                f" string {descriptions!r}: wrap it in a list"
            )
        super().__init__(clock=clock or reactor)
        for description in descriptions:
            self.attachWorker(
                WireWorker(description, secret=secret, reactor=reactor, **workerOptions)
            )

    def attachWorker(self, worker: Any) -> Any:
        """
        Attach C{worker}; a L{WireWorker} hands its idempotent tasks of a
        lost server back to this queue.
        """
        super().attachWorker(worker)
        if isinstance(worker, WireWorker):
            worker.requeue = self.submit
        return worker

    def submit(self, task: Task[Any], *, timeout: float | None = None) -> Deferred[Any]:
        """
        Queue a task, pickled now so that the server gets the call as it
        was made.

        @raise TypeError: the call can't travel (see L{WireWorker}).
        """
        if self.isRunning() and not isinstance(task.payload, bytes):
            task.payload = wireCall(task.f, task.args, task.kw)
        return super().submit(task, timeout=timeout)
