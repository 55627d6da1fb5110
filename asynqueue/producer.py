"""
Producing the items of a L{Deferator} to an C{IConsumer}, with backpressure.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from operator import length_hint
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._util import Waiters, reactorClock
from .deferator import DEFAULT_BATCH, BatchTaker, Deferator, checkBatchSize
from .moved import goneAttributes

T = TypeVar("T")

log = Logger()


@implementer(IPushProducer)
class IterationProducer(Generic[T]):
    """
    Writes every item of a L{Deferator} to a consumer, as a streaming
    (push) producer: C{pauseProducing} stops the fetching from the worker
    until C{resumeProducing}; C{stopProducing} ends the iteration and
    releases the worker.

    The consumer is the user's code, so whatever it raises (from
    C{registerProducer}, C{write} or C{unregisterProducer}) ends the
    iteration, releases the worker and fails the Deferred of L{run} with
    that exception: it never escapes into the caller of a worker's
    delivery, where nobody would hear of it.

    C{resumeProducing} only schedules the writing (on the clock, at once):
    it never writes, nor fires the Deferred of L{run}, inside the
    consumer's own call.

    Reactor thread only.
    """

    if not TYPE_CHECKING:  # (mypy would take any attribute then.)
        __getattr__ = goneAttributes(
            "IterationProducer",
            {
                "deferUntilDone": "run() returns that Deferred: it fires with"
                " the consumer once every item has been written",
            },
        )

    def __init__(
        self,
        deferator: Deferator[T],
        consumer: Any = None,
        *,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param consumer: provides C{IConsumer}; its C{write} gets one item at
            a time (rows, objects or bytes: whatever the iterator yields).
            May be given later instead, with L{registerConsumer}.
        @param clock: Schedules the writing after C{resumeProducing}; the
            reactor by default (tests pass a C{twisted.internet.task.Clock}).
        @raise TypeError: C{consumer} does not provide C{IConsumer}.
        """
        self.deferator = deferator
        self.consumer: Any = None
        self.paused = False
        self.stopped = False
        # paused or stopped: the one flag the write loop checks.
        self._halted = False
        self._done: Deferred[Any] | None = None
        self._waiting = False
        self._clock = clock
        # Whether the consumer holds us (unregisterProducer is owed).
        self._registered = False
        # Inside resumeProducing: a batch landing now must not be written now.
        self._resuming = False
        self._scheduled: IDelayedCall | None = None
        # While _write writes a batch: the lent items, the iterator over
        # them, and (once paused or stopped) the items cut off to put back.
        self._lentItems: list[Any] | None = None
        self._rest: Iterator[Any] | None = None
        self._tail: list[Any] | None = None
        if consumer is not None:
            self.registerConsumer(consumer)

    @property
    def clock(self) -> IReactorTime:
        """
        The clock that schedules the writing, resolved lazily.
        """
        if self._clock is None:
            self._clock = reactorClock()
        return self._clock

    def registerConsumer(self, consumer: Any) -> None:
        """
        Set the consumer to produce to, if none was given to the
        constructor (the original AsynQueue's two-step start); L{run}
        registers with it.

        @raise TypeError: C{consumer} does not provide C{IConsumer}.
        @raise RuntimeError: production has started already.
        """
        if not IConsumer.providedBy(consumer):
            raise TypeError(f"consumer {consumer!r} does not provide IConsumer")
        if self._done is not None:
            raise RuntimeError(
                "registerConsumer(): this IterationProducer runs already"
            )
        self.consumer = consumer

    def run(self) -> Deferred[Any]:
        """
        Register with the consumer and start producing.

        @return: A Deferred firing with the consumer when every item has been
            written (or production was stopped), after unregistering; or
            failing with what the consumer raised (the iteration is then
            stopped, so its worker is free).
        """
        if self._done is not None:
            raise RuntimeError("an IterationProducer runs only once")
        if self.consumer is None:
            raise RuntimeError(
                "IterationProducer.run(): no consumer; give one to the"
                " constructor or to registerConsumer() first"
            )
        done = self._done = Deferred()
        self._registered = True
        try:
            self.consumer.registerProducer(self, True)
        except Exception:
            # The consumer refused us: it is owed no unregisterProducer.
            self._registered = False
            self._fail(Failure())  # type: ignore[no-untyped-call]
            return done
        self._produce()
        return done

    def _produce(self) -> None:
        dr = self.deferator
        while not self._halted:
            items, finish = dr.lend()
            if not items:
                if dr.done:
                    self._finish(None)
                elif not self._waiting:
                    self._waiting = True
                    dr.fetchMore().addCallbacks(self._fetched, self._finish)
                return
            if not self._write(items, finish):
                return

    def _write(self, items: list[Any], finish: Callable[[Any], Any] | None) -> bool:
        # One lent batch to the consumer; whether production goes on.
        rest = iter(items)
        # The hot loop runs in C, an item at a time: map takes one item from
        # rest, finishes it, and writes it. A pause or stop during a write
        # cuts what rest has not given yet off items (see _cut), which ends
        # the loop right after that write.
        self._lentItems, self._rest = items, rest
        try:
            deque(
                map(self.consumer.write, rest if finish is None else map(finish, rest)),
                maxlen=0,
            )
        except Exception:
            # A broken consumer ends the production, with its error.
            self._lentItems = self._rest = self._tail = None
            self._fail(Failure())  # type: ignore[no-untyped-call]
            return False
        self._lentItems = self._rest = None
        tail, self._tail = self._tail, None
        if tail is not None and not self.stopped:
            # Put back what the consumer is not ready for.
            self.deferator.putBack(tail, finished=finish is None)
        return not self._halted

    def _cut(self) -> None:
        # Paused or stopped: if inside _write, cut the items not taken yet
        # off the lent list, so that its loop ends after the current write
        # (a list iterator stops at the list's end, however short it got).
        items, rest = self._lentItems, self._rest
        if items is None or rest is None or self._tail is not None:
            return
        taken = len(items) - length_hint(rest)
        self._tail = items[taken:]
        del items[taken:]

    def _fetched(self, _: None) -> None:
        self._waiting = False
        if self._resuming:
            # The batch landed at once, inside the consumer's
            # resumeProducing: write it later, like the rest.
            self._schedule()
        else:
            self._produce()

    def _schedule(self) -> None:
        if self._scheduled is None and not self.stopped:
            self._scheduled = self.clock.callLater(0, self._resumed)

    def _resumed(self) -> None:
        # A scheduled call, in a reactor turn of its own.
        self._scheduled = None
        if not self._waiting:
            self._produce()

    def _fail(self, failure: Failure) -> None:
        # The consumer raised: stop the iteration (the worker is freed, the
        # source closed) and report its error.
        self.deferator.stop()
        self._finish(failure)

    def _finish(self, failure: Failure | None) -> None:
        done = self._done
        if done is None or done.called:
            if failure is not None:
                log.failure(
                    "Producing to {consumer} failed after it ended",
                    failure,
                    consumer=self.consumer,
                )
            return
        self.stopped = self._halted = True
        self._cut()
        if self._scheduled is not None:
            if self._scheduled.active():
                self._scheduled.cancel()
            self._scheduled = None
        if self._registered:
            self._registered = False
            try:
                self.consumer.unregisterProducer()
            except Exception:
                if failure is None:
                    failure = Failure()  # type: ignore[no-untyped-call]
                else:
                    # The first error is the one to report.
                    log.failure(
                        "{consumer}.unregisterProducer() failed too",
                        consumer=self.consumer,
                    )
        if failure is not None:
            done.errback(failure)
        else:
            done.callback(self.consumer)

    # IPushProducer -----------------------------------------------------------

    def pauseProducing(self) -> None:
        """
        Stop writing, and stop fetching from the worker.
        """
        self.paused = self._halted = True
        self._cut()
        self.deferator.pause()

    def resumeProducing(self) -> None:
        """
        Fetch again, and schedule the writing: it starts in a later reactor
        turn, never inside this call (so a consumer that resumes us finishes
        its own bookkeeping before it gets another item, or sees the
        iteration's Deferred fire).
        """
        if self.stopped or not self.paused:
            return
        self.paused = self._halted = False
        self._resuming = True
        try:
            self.deferator.resume()
        finally:
            self._resuming = False
        self._schedule()

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
    A consumer that keeps what is written to it, in order, in a list,
    C{items}. Each item first goes through L{processItem}, which a subclass
    may override; it may return a Deferred (or be a coroutine function), and
    while one is pending the producer is paused.

    Calling the consumer gives a Deferred firing with C{items} once the
    producer has unregistered and every item is processed::

        consumer = ListConsumer()
        yield broker.entriesSince(dt, consumer=consumer)
        rows = yield consumer()

    If L{processItem} fails, the producer is stopped (the item's error
    reaches whoever runs it if L{processItem} raised, else only this
    Deferred), and the Deferred from calling the consumer fails with that
    error.

    Reactor thread only.
    """

    def __init__(self, **attributes: Any) -> None:
        """
        @param attributes: Set as attributes of the consumer, for a
            subclass's L{processItem} (the original AsynQueue's keywords).
        @raise TypeError: one of them would replace an attribute or method
            of the consumer.
        """
        self.items: list[Any] = []
        self.producer: Any = None
        self._streaming = False
        self._pending = 0
        # Whether we paused the producer (while an item is processed).
        self._paused = False
        self._unregistered = False
        self._failure: Failure | None = None
        self._done = Waiters()
        # No processItem of a subclass: write keeps each item as it is.
        self._keepsItems = type(self).processItem is ListConsumer.processItem
        for name, value in attributes.items():
            if hasattr(self, name):
                raise TypeError(
                    f"{type(self).__name__}({name}=...): {name!r} would replace"
                    " an attribute of the consumer; choose another name"
                )
            setattr(self, name, value)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Accept a producer.
        """
        if self.producer is not None:
            raise RuntimeError("ListConsumer already has a producer")
        self.producer = producer
        self._streaming = bool(streaming)
        self._unregistered = False

    def unregisterProducer(self) -> None:
        """
        Let go of the producer: no more items come.
        """
        self.producer = None
        self._unregistered = True
        self._check()

    def write(self, data: Any) -> None:
        """
        Keep L{processItem}C{(data)} in its place in C{items}.

        @raise Exception: whatever L{processItem} raised.
        """
        if self._keepsItems:
            self.items.append(data)
            return
        if self._failure is not None:
            # Stopped by an earlier failure: drop what is still on its way.
            return
        index = len(self.items)
        try:
            result = self.processItem(data)
            if inspect.iscoroutine(result):
                result = Deferred.fromCoroutine(result)
        except BaseException:
            self._failure = Failure()  # type: ignore[no-untyped-call]
            raise
        if not isinstance(result, Deferred):
            self.items.append(result)
            return
        self.items.append(None)
        self._pending += 1
        result.addCallbacks(self._processed, self._processFailed, (index,))
        # Still processing: no more items until it is done.
        if (
            self._pending
            and not self._paused
            and self._streaming
            and self.producer is not None
        ):
            self._paused = True
            self.producer.pauseProducing()

    def processItem(self, item: Any) -> Any:
        """
        Override: what to keep for C{item} (the item itself by default), or
        a Deferred of it.
        """
        return item

    def __call__(self) -> Deferred[list[Any]]:
        """
        @return: A Deferred firing with C{items} once the producer has
            unregistered and every item is processed, or failing with the
            error of L{processItem}.
        """
        if self._failure is not None and self._finished():
            return fail(self._failure)
        if self._finished():
            return succeed(self.items)
        return self._done.wait().addCallback(self._result)

    def _result(self, _: None) -> list[Any]:
        return self.items

    def _finished(self) -> bool:
        return self._unregistered and self._pending == 0

    def _processed(self, value: object, index: int) -> None:
        self.items[index] = value
        self._pending -= 1
        if self._pending == 0 and self._paused:
            self._paused = False
            if self.producer is not None:
                self.producer.resumeProducing()
        self._check()

    def _processFailed(self, failure: Failure) -> None:
        self._pending -= 1
        if self._failure is None:
            self._failure = failure
            if self.producer is not None:
                self.producer.stopProducing()
        self._check()

    def _check(self) -> None:
        if not self._finished():
            return
        if self._failure is not None:
            self._done.fail(self._failure)
        else:
            self._done.fire()


def iteratorToProducer(
    iterable: Iterable[T],
    consumer: Any,
    batchSize: int = DEFAULT_BATCH,
    *,
    clock: IReactorTime | None = None,
) -> Deferred[Any]:
    """
    Produce the items of C{iterable}, taken lazily in the reactor thread, to
    C{consumer} with backpressure, firing with the consumer when done.

    @param clock: See L{IterationProducer}.
    @raise ValueError: C{batchSize} is less than 1 (C{TypeError}: not an
        int).
    """
    taker = BatchTaker(iter(iterable), checkBatchSize(batchSize))
    first, exhausted = taker.take()
    fetch = None if exhausted else (lambda: succeed(taker.take()))
    dr = Deferator(first, fetch, stop=taker.close, finish=taker.finishItem)
    return IterationProducer(dr, consumer, clock=clock).run()
