"""
L{ThreadQueue}: a L{TaskQueue} with a fixed team of L{ThreadWorker}s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ._util import checkNumber
from .deferator import DEFAULT_BATCH
from .moved import movedNames
from .taskqueue import TaskQueue
from .workers import ThreadWorker


class ThreadQueue(TaskQueue):
    """
    A task queue run by C{n} threads, each a L{ThreadWorker} of its own.
    """

    def __init__(
        self,
        n: int = 1,
        *,
        holdIterations: bool = False,
        batchSize: int = DEFAULT_BATCH,
        clock: IReactorTime | None = None,
        callFromThread: Callable[..., object] | None = None,
        name: str = "asynqueue",
        warn: bool | None = None,
        spew: bool | None = None,
        returnFailure: bool | None = None,
    ) -> None:
        """
        @param n: How many threads.
        @param holdIterations: See L{ThreadWorker}.
        @param warn: The original's, deprecated: see L{TaskQueue}.
        @param spew: The original's, deprecated: see L{TaskQueue}.
        @param returnFailure: The original's, deprecated: see L{TaskQueue}.
        """
        checkNumber(
            n,
            "a ThreadQueue's n (threads)",
            integer=True,
            positive=True,
            typeError=ValueError,
        )
        super().__init__(clock=clock)
        # (Here, not through super(): the warnings point at our caller.)
        self._originalOptions(warn, spew, returnFailure)
        for i in range(n):
            self.attachWorker(
                ThreadWorker(
                    holdIterations=holdIterations,
                    batchSize=batchSize,
                    callFromThread=callFromThread,
                    name=f"{name}-{i}",
                )
            )

    def deferToThread(
        self, f: Callable[..., Any], *args: Any, **kw: Any
    ) -> Deferred[Any]:
        """
        Run C{f(*args, **kw)} in one of the queue's threads; the same as
        L{call}, named after Twisted's C{deferToThread}.
        """
        return self.call(f, *args, **kw)


# The original AsynQueue's other names here: gone, each lookup saying what
# to use (see docs/originals.md).
__getattr__ = movedNames(
    __name__,
    {},
    {
        "deferToThread": "use twisted.internet.threads.deferToThread, or"
        " ThreadQueue(n).deferToThread(f, ...)",
        "ThreadLooper": "a ThreadWorker runs its own thread",
        "Consumerator": "a call returning an iterator gives a Deferator; give"
        " consumer= to the call to have its items written to an IConsumer",
        "Filerator": "iterate the file in a ThreadQueue call: it gives a Deferator",
        "OrderedItemProducer": "give consumer= to a call returning an iterator",
    },
)
