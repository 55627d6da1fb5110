"""
Producing the items of a L{Deferator} to an C{IConsumer}, with backpressure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from .deferator import DEFAULT_BATCH, BatchTaker, Deferator

T = TypeVar("T")


@implementer(IPushProducer)
class IterationProducer(Generic[T]):
    """
    Writes every item of a L{Deferator} to a consumer, as a streaming
    (push) producer: C{pauseProducing} stops the fetching from the worker
    until C{resumeProducing}; C{stopProducing} ends the iteration and
    releases the worker.

    Reactor thread only.
    """

    def __init__(self, deferator: Deferator[T], consumer: Any) -> None:
        """
        @param consumer: provides C{IConsumer}; its C{write} gets one item at
            a time (rows, objects or bytes: whatever the iterator yields).
        @raise TypeError: C{consumer} does not provide C{IConsumer}.
        """
        if not IConsumer.providedBy(consumer):
            raise TypeError(f"consumer {consumer!r} does not provide IConsumer")
        self.deferator = deferator
        self.consumer: Any = consumer
        self.paused = False
        self.stopped = False
        # paused or stopped: the one flag the write loop checks.
        self._halted = False
        self._done: Deferred[Any] | None = None
        self._waiting = False

    def run(self) -> Deferred[Any]:
        """
        Register with the consumer and start producing.

        @return: A Deferred firing with the consumer when every item has been
            written (or production was stopped), after unregistering.
        """
        if self._done is not None:
            raise RuntimeError("an IterationProducer runs only once")
        self._done = Deferred()
        self.consumer.registerProducer(self, True)
        self._produce()
        return self._done

    def _produce(self) -> None:
        dr = self.deferator
        write = self.consumer.write
        while not self._halted:
            items, finish = dr._lend()
            if items:
                rest = iter(items)
                try:
                    # The hot loop: an item at a time, stopping right after
                    # the write during which the consumer paused or stopped us.
                    if finish is None:
                        for item in rest:
                            write(item)
                            if self._halted:
                                break
                    else:
                        for item in rest:
                            write(finish(item))
                            if self._halted:
                                break
                except Exception:
                    # A broken consumer ends the production, with its error.
                    dr.stop()
                    self._finish(Failure())  # type: ignore[no-untyped-call]
                    return
                if self._halted:
                    # Put back what the consumer is not ready for.
                    if not self.stopped:
                        dr._unlend(list(rest), finish)
                    return
                continue
            if dr.done:
                self._finish(None)
                return
            if not self._waiting:
                self._waiting = True
                dr.fetchMore().addCallbacks(self._fetched, self._finish)
            return

    def _fetched(self, _: None) -> None:
        self._waiting = False
        self._produce()

    def _finish(self, failure: Failure | None) -> None:
        if self._done is None or self._done.called:
            return
        self.stopped = self._halted = True
        self.consumer.unregisterProducer()
        if failure is not None:
            self._done.errback(failure)
        else:
            self._done.callback(self.consumer)

    # IPushProducer -----------------------------------------------------------

    def pauseProducing(self) -> None:
        """
        Stop writing, and stop fetching from the worker.
        """
        self.paused = self._halted = True
        self.deferator.pause()

    def resumeProducing(self) -> None:
        """
        Write and fetch again.
        """
        if self.stopped:
            return
        self.paused = self._halted = False
        self.deferator.resume()
        if not self._waiting:
            self._produce()

    def stopProducing(self) -> None:
        """
        End the iteration for good and release the worker.
        """
        if self.stopped:
            return
        self.deferator.stop()
        self._finish(None)


@implementer(IConsumer)
class ListConsumer:
    """
    A consumer that keeps what is written to it in a list, C{items}.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Accept a producer. (L{ListConsumer} never pauses it.)
        """
        if self.producer is not None:
            raise RuntimeError("ListConsumer already has a producer")
        self.producer = producer

    def unregisterProducer(self) -> None:
        """
        Let go of the producer.
        """
        self.producer = None

    def write(self, data: Any) -> None:
        """
        Keep C{data}.
        """
        self.items.append(data)


def iteratorToProducer(
    iterable: Iterable[T], consumer: Any, batchSize: int = DEFAULT_BATCH
) -> Deferred[Any]:
    """
    Produce the items of C{iterable}, taken lazily in the reactor thread, to
    C{consumer} with backpressure, firing with the consumer when done.
    """
    taker = BatchTaker(iter(iterable), batchSize)
    first, exhausted = taker.take()
    fetch = None if exhausted else (lambda: succeed(taker.take()))
    dr = Deferator(first, fetch, stop=taker.close, finish=taker.finishItem)
    return IterationProducer(dr, consumer).run()
