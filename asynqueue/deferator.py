"""
Deferred iteration: a L{Deferator} hands out the items of an iterator that
lives somewhere else (usually in a worker thread), fetching them in batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from .errors import IterationStopped

T = TypeVar("T")

#: Items a worker fetches in one hop, unless told otherwise.
DEFAULT_BATCH = 500

#: What fetching a batch gives: the items and whether the source is exhausted.
Batch = tuple[list[T], bool]


class BatchTaker(Generic[T]):
    """
    The worker's side of deferred iteration: takes items from an iterator in
    batches, looking one item ahead so that each batch says truthfully
    whether the iterator is exhausted. Used in one thread only.

    If the iterator raises, the items taken before the error are still
    handed out; the error is raised by the next L{take}.
    """

    def __init__(self, iterator: Iterator[T], batchSize: int = DEFAULT_BATCH) -> None:
        self.iterator = iterator
        self.batchSize = batchSize
        self._ahead: list[T] = []
        self._error: BaseException | None = None
        self.done = False

    def take(self) -> Batch[T]:
        """
        The next batch, and whether nothing is left after it.

        @raise Exception: whatever the iterator raised, once the items
            before it have been taken.
        """
        if self._error is not None:
            error, self._error = self._error, None
            self.done = True
            raise error
        if self.done:
            return [], True
        items = self._ahead
        self._ahead = []
        nextItem = self.iterator.__next__
        try:
            for _ in range(self.batchSize - len(items)):
                items.append(nextItem())
            self._ahead.append(nextItem())
        except StopIteration:
            self.done = True
            self.close()
        except Exception as e:
            if not items:
                self.done = True
                raise
            # Hand out what came before the error first.
            self._error = e
        return items, self.done

    def close(self) -> None:
        """
        Let go of the iterator, closing it if it can be closed (a generator's
        C{finally} clauses run, a database cursor is released).
        """
        self.done = True
        close = getattr(self.iterator, "close", None)
        if close is not None:
            close()


class Deferator(Generic[T]):
    """
    Iterates in Deferreds over items fetched in batches from elsewhere.

    Under C{inlineCallbacks}::

        for d in dr:
            item = yield d

    and in a coroutine::

        async for item in dr:
            ...

    Wait for each item's Deferred before asking for the next. The next batch
    is fetched while the current one is used (at most two batches are held),
    unless the Deferator is paused.

    Reactor thread only.
    """

    def __init__(
        self,
        first: Iterable[T] = (),
        fetch: Callable[[], Deferred[Batch[T]]] | None = None,
        *,
        stop: Callable[[], object] | None = None,
    ) -> None:
        """
        @param first: Items already fetched.
        @param fetch: Fetches the next batch: a Deferred firing with C{(items,
            exhausted)}. C{None} if C{first} is everything.
        @param stop: Called once when iteration ends early, to release the
            source (close the cursor, free the worker).
        """
        self._buffer: deque[T] = deque(first)
        # The largest batch seen. Fetching ahead stops while two batches are
        # held (buffered, or lent to a producer by takeBuffered and not yet
        # put back), so a consumer that pauses often can't make it grow.
        self._batchHint = max(1, len(self._buffer))
        self._lent = 0
        self._fetch = fetch
        self._stop = stop
        self._exhausted = fetch is None
        self._inFlight = False
        self._waiters: list[Deferred[None]] = []
        self._failure: Failure | None = None
        self._paused = False
        self._stopped = False
        self._whenDone: list[Deferred[None]] = []
        if self._exhausted:
            self._finished()
        else:
            self._prefetch()

    @classmethod
    def fromIterable(cls, items: Iterable[T]) -> Deferator[T]:
        """
        A Deferator over items already at hand.
        """
        return cls(items)

    # State ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """
        True when nothing is left to hand out: no item and no failure.
        """
        return (
            (self._exhausted or self._stopped)
            and not self._buffer
            and self._failure is None
        )

    def whenDone(self) -> Deferred[None]:
        """
        A Deferred that fires when the source is exhausted or stopped (the
        worker is free of it), even if items are still buffered here.
        """
        d: Deferred[None] = Deferred()
        if self._exhausted or self._stopped:
            d.callback(None)
        else:
            self._whenDone.append(d)
        return d

    def _finished(self) -> None:
        waiting, self._whenDone = self._whenDone, []
        for d in waiting:
            d.callback(None)

    # Fetching ---------------------------------------------------------------

    def pause(self) -> None:
        """
        Stop fetching ahead; a fetch already under way completes.
        """
        self._paused = True

    def resume(self) -> None:
        """
        Fetch ahead again.
        """
        self._paused = False
        self._prefetch()

    def _prefetch(self) -> None:
        held = len(self._buffer) + self._lent
        if not self._paused and held < 2 * self._batchHint:
            # A failure is kept and handed to whoever asks for the next item.
            self.fetchMore().addErrback(lambda _: None)

    def fetchMore(self) -> Deferred[None]:
        """
        Fetch the next batch into the buffer, unless one is on its way or the
        source is exhausted. The Deferred fires when the buffer has what there
        is to have, and fails if the fetch failed.
        """
        if self._inFlight:
            return self._wait()
        if self._failure is not None:
            return fail(self._failure)
        if self._exhausted or self._stopped or self._fetch is None:
            return succeed(None)
        self._inFlight = True
        # The waiter goes first: the fetch may fire synchronously.
        waiter = self._wait()
        self._fetch().addCallbacks(self._gotBatch, self._gotFailure)
        return waiter

    def _wait(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _gotBatch(self, batch: Batch[T]) -> None:
        items, exhausted = batch
        self._inFlight = False
        self._batchHint = max(self._batchHint, len(items))
        if not self._stopped:
            self._buffer.extend(items)
            if exhausted:
                self._exhausted = True
                self._finished()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _gotFailure(self, failure: Failure) -> None:
        # Kept for whoever asks for the next item; every waiter hears of it.
        self._inFlight = False
        self._failure = failure
        self._exhausted = True
        self._finished()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(failure)

    def takeBuffered(self) -> list[T]:
        """
        Everything buffered now, leaving the buffer empty and starting the next
        fetch. For producers that write items in bulk.
        """
        items = list(self._buffer)
        self._buffer.clear()
        self._lent = len(items)
        self._prefetch()
        return items

    def putBack(self, items: list[T]) -> None:
        """
        Return items taken with L{takeBuffered} but not used, to the front.
        """
        self._lent = 0
        self._buffer.extendleft(reversed(items))

    def stop(self) -> None:
        """
        End the iteration now: drop buffered items and release the source.
        """
        if self._stopped:
            return
        self._stopped = True
        self._buffer.clear()
        if not self._exhausted and self._stop is not None:
            self._stop()
        self._finished()

    # Iteration --------------------------------------------------------------

    def __iter__(self) -> Deferator[T]:
        return self

    def __next__(self) -> Deferred[T]:
        if self._buffer:
            item = self._buffer.popleft()
            if len(self._buffer) < 2 and not self._paused:
                self._prefetch()
            return succeed(item)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            return fail(failure)
        if self._exhausted or self._stopped:
            raise StopIteration
        return self.fetchMore().addCallbacks(self._popAfterFetch, self._takeFailure)

    def _popAfterFetch(self, _: None) -> T:
        if self._buffer:
            return self._buffer.popleft()
        raise IterationStopped("the iteration ended while an item was awaited")

    def _takeFailure(self, failure: Failure) -> Failure:
        # Delivered to this item's Deferred: don't hand it out again.
        self._failure = None
        return failure

    def __aiter__(self) -> Deferator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            d = self.__next__()
        except StopIteration:
            raise StopAsyncIteration from None
        try:
            return await d
        except IterationStopped:
            raise StopAsyncIteration from None
