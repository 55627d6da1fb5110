"""
Deferred iteration: a L{Deferator} hands out the items of an iterator that
lives somewhere else (usually in a worker thread), fetching them in batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from enum import Enum
from itertools import islice, starmap
from sys import maxsize
from types import coroutine
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from ._util import Waiters, checkNumber
from .errors import IterationStopped

T = TypeVar("T")

#: Items a worker fetches in one hop, unless told otherwise.
DEFAULT_BATCH = 500

#: What fetching a batch gives: the items and whether the source is exhausted.
Batch = tuple[list[T], bool]

#: The attribute by which an iterator that a task returns may name a
#: function that finishes each of its items in the reactor thread, as the
#: L{Deferator} hands the item out (to its Deferred, or to a consumer).
#: The worker then sends the items across in a cheaper, unfinished form:
#: sAsync sends plain tuples and makes each one a C{Row} just before it is
#: used, so that rows a consumer drops at once die young (a million rows
#: made in a worker and kept for a batch cost the garbage collector more
#: than making them).
FINISH_ITEM = "finishItem"

#: While fetching ahead, a fetch is due once the buffer holds no more than
#: this many items, at least (or as soon as L{Deferator._prefetch} may start
#: one, if that is sooner); see L{Deferator._levels}.
_FETCH_AT = 1

#: The most items an C{async for} over a L{Deferator} takes in one run of C
#: code (see L{Deferator._items}).
_CHUNK = 1024

#: The attribute by which an iterator that a task returns may say (true)
#: that its items are all in memory already: reading them needs no worker
#: thread, so the worker is free at once, even with C{holdIterations}, and
#: the L{Deferator} takes its batches in the reactor thread.
IN_MEMORY = "inMemory"


def checkBatchSize(batchSize: int) -> int:
    """
    @return: C{batchSize}, a positive int (a smaller one would fetch empty
        batches for ever).
    @raise ValueError: it is less than 1.
    @raise TypeError: it is not an int.
    """
    return checkNumber(batchSize, "batchSize", integer=True, positive=True)


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
        #: The iterator's C{finishItem}, or C{None}; see L{FINISH_ITEM}.
        self.finishItem: Callable[[Any], Any] | None = getattr(
            iterator, FINISH_ITEM, None
        )
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
        n = self.batchSize
        try:
            # One more than a batch, read in C: the extra one says whether
            # the iterator is exhausted. (list.extend keeps what it got
            # before an error.)
            items.extend(islice(self.iterator, n + 1 - len(items)))
        except Exception as e:
            self._ahead = []
            if not items:
                self.done = True
                raise
            # Hand out what came before the error first.
            self._error = e
            return items, False
        if len(items) > n:
            self._ahead = [items.pop()]
        else:
            self._ahead = []
            self.close()
        return items, self.done

    def takeRest(
        self, deliver: Callable[[list[T]], object], stopped: Callable[[], bool]
    ) -> None:
        """
        Hand every item left to C{deliver}, batch by batch, until the
        iterator ends (it is closed then) or C{stopped()} is true.

        @raise Exception: whatever the iterator raised, once the items
            before it have been delivered.
        """
        while not stopped():
            items, exhausted = self.take()
            if items:
                deliver(items)
            if exhausted:
                return

    def takeFinished(self) -> Batch[Any]:
        """
        L{take}, with the iterator's L{finishItem<FINISH_ITEM>} (if any)
        applied to each item: for sending the items somewhere other than
        a L{Deferator} (which finishes them itself, as it hands them out).
        """
        items, exhausted = self.take()
        finish = self.finishItem
        if finish is not None:
            return list(map(finish, items)), exhausted
        return items, exhausted

    def close(self) -> None:
        """
        Let go of the iterator, closing it if it can be closed (a generator's
        C{finally} clauses run, a database cursor is released).
        """
        self.done = True
        close = getattr(self.iterator, "close", None)
        if close is not None:
            close()


class Remainder(Generic[T]):
    """
    The rest of an iteration, read by a worker thread that had to let go
    of it (see L{BatchTaker.takeRest}): the batches are added as they are
    read, and handed out in order as a L{Deferator} fetches them, then the
    end (or the error that ended the iteration). A fetch that comes before
    the next batch waits for it. Reactor thread only.
    """

    def __init__(self) -> None:
        self._batches: deque[list[T]] = deque()
        self._ended = False
        self._error: BaseException | Failure | None = None
        self._waiting: deque[Deferred[Batch[T]]] = deque()

    def add(self, items: list[T]) -> None:
        """
        The next batch has been read.
        """
        if self._ended:
            return
        if self._waiting:
            self._waiting.popleft().callback((items, False))
        else:
            self._batches.append(items)

    def end(self, error: BaseException | Failure | None = None) -> None:
        """
        Nothing more will be added: the source is exhausted, or C{error}
        ended it. Idempotent.
        """
        if self._ended:
            return
        self._ended = True
        self._error = error
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            self._next().chainDeferred(d)

    def clear(self) -> None:
        """
        Drop what is held, and what comes later (the iteration stopped).
        """
        self._batches.clear()
        self.end()
        self._error = None

    def fetch(self) -> Deferred[Batch[T]]:
        """
        The next batch: a fetch for a L{Deferator}.
        """
        if self._batches or self._ended:
            return self._next()
        d: Deferred[Batch[T]] = Deferred()
        self._waiting.append(d)
        return d

    def _next(self) -> Deferred[Batch[T]]:
        batches = self._batches
        if batches:
            items = batches.popleft()
            return succeed((items, self._ended and not batches and not self._error))
        error, self._error = self._error, None
        if error is not None:
            return fail(error)
        return succeed(([], True))


class _Source(Enum):
    """
    Where a L{Deferator}'s source is. Only FETCHING fetches ahead.
    """

    #: More may come, and batches are fetched ahead.
    FETCHING = "fetching"
    #: More may come, but only fetched when asked for (L{Deferator.pause}).
    PAUSED = "paused"
    #: Nothing more comes: the source said so, or failed.
    EXHAUSTED = "exhausted"
    #: The iteration was ended early (L{Deferator.stop}).
    STOPPED = "stopped"


_OPEN = (_Source.FETCHING, _Source.PAUSED)


@coroutine
def _ready(value: T) -> Generator[Any, None, T]:
    # Awaited, gives value at once: an awaitable lighter than a Deferred.
    return value
    yield  # (Never reached: it makes this a generator.)


def _refuseString(first: str | bytes, fetch: object) -> None:
    # The original AsynQueue's Deferator(repr, getNext, *args) would hand
    # out the characters of repr here, then hang on the wrong protocol.
    if callable(fetch):
        raise TypeError(
            f"Deferator({first!r}, {fetch!r}) is the original AsynQueue's"
            " call-tuple form (a description and a getNext callable), which"
            " this Deferator does not take: return the iterator from a queue"
            " call (it comes back as a Deferator), or pass the items fetched"
            " so far and fetch(), a callable returning a Deferred of"
            " (items, exhausted)"
        )
    raise TypeError(
        f"a Deferator's first items must be an iterable of items, not the"
        f" string {first!r} (its characters?): wrap it in a list"
    )


class Deferator(Generic[T]):
    """
    Iterates in Deferreds over items fetched in batches from elsewhere.

    Under C{inlineCallbacks}::

        for d in dr:
            item = yield d

    and in a coroutine::

        async for item in dr:
            ...

    Wait for each item's Deferred before asking for the next. The next
    batches are fetched while the current one is used, unless the Deferator
    is paused: up to two fetches are on their way at once (so that a worker
    thread always has the next batch to read while the reactor uses one),
    and never more than three batches are held or on their way, counting
    the items lent to a producer by L{takeBuffered}.

    Reactor thread only.
    """

    #: How many fetches may be on their way at once.
    _fetchDepth = 2

    def __init__(
        self,
        first: Iterable[T] = (),
        fetch: Callable[[], Deferred[Batch[T]]] | None = None,
        *,
        stop: Callable[[], object] | None = None,
        finish: Callable[[Any], T] | None = None,
    ) -> None:
        """
        @param first: Items already fetched.
        @param fetch: Fetches the next batch: a Deferred firing with C{(items,
            exhausted)}. C{None} if C{first} is everything.
        @param stop: Called once when iteration ends early, to release the
            source (close the cursor, free the worker).
        @param finish: Applied to each item as it is handed out (see
            L{FINISH_ITEM}): the items of C{first} and of the batches are
            then in the form C{finish} takes.
        """
        if isinstance(first, (str, bytes)):
            _refuseString(first, fetch)
        self._buffer: deque[Any] = deque(first)
        # The largest batch seen. Fetching ahead stops while three batches
        # are held or on their way (held: buffered, or lent to a producer by
        # takeBuffered and not yet put back), so a consumer that pauses
        # often can't make it grow.
        self._batchHint = max(1, len(self._buffer))
        self._lent = 0
        self._fetch = fetch
        self._stop = stop
        self._finishItem = finish
        # How many items at the front of the buffer are finished already
        # (put back after takeBuffered). Set only with _setFinishedAhead.
        self._finishedAhead = 0
        # Kept by _levels: a fetch is due (_popBuffered) once the buffer
        # holds no more than _fetchAt items; while it holds more than
        # _fastAbove, __anext__ takes the next one at once (maxsize while
        # _finishedAhead: those items take the careful path).
        self._fetchAt = _FETCH_AT
        self._fastAbove = _FETCH_AT + 1
        # One empty tuple per item the running chunk of an async for may
        # still take (see _items); cleared by whatever else takes items or
        # changes the levels, which ends that chunk.
        self._tickets: list[tuple[()]] = []
        self._source = _Source.EXHAUSTED if fetch is None else _Source.FETCHING
        self._inFlight = 0
        # How many fetches have landed (to tell one that lands at once).
        self._landed = 0
        # Waiting for the fetch on its way; and for the source to be done.
        self._waiters = Waiters()
        self._failure: Failure | None = None
        self._whenDone = Waiters()
        if fetch is not None:
            self._prefetch()

    # State ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """
        True when nothing is left to hand out: no item and no failure.
        """
        return self._source not in _OPEN and not self._buffer and self._failure is None

    def whenDone(self) -> Deferred[None]:
        """
        A Deferred that fires when the source is exhausted or stopped (the
        worker is free of it), even if items are still buffered here.
        """
        if self._source not in _OPEN:
            return succeed(None)
        return self._whenDone.wait()

    def _setFinishedAhead(self, n: int) -> None:
        self._finishedAhead = n
        self._levels()

    def _levels(self) -> None:
        # After anything that changes what _prefetch would do: a fetch is
        # due as soon as _prefetch may start one (one batch used, not only
        # when the buffer is nearly empty), so that the worker reads the
        # next batch while this one is used.
        self._tickets.clear()
        at = _FETCH_AT
        if self._source is _Source.FETCHING and self._inFlight < self._fetchDepth:
            hint = self._batchHint
            at = max(at, (self._fetchDepth - self._inFlight) * hint - self._lent)
        self._fetchAt = at
        self._fastAbove = maxsize if self._finishedAhead else at + 1

    def _end(self, how: _Source) -> None:
        # The source is exhausted (or failed), or the iteration stopped.
        self._source = how
        self._levels()
        self._whenDone.fire()

    # Fetching ---------------------------------------------------------------

    def pause(self) -> None:
        """
        Stop fetching ahead; a fetch already under way completes.
        """
        if self._source is _Source.FETCHING:
            self._source = _Source.PAUSED
            self._levels()

    def resume(self) -> None:
        """
        Fetch ahead again.
        """
        if self._source is _Source.PAUSED:
            self._source = _Source.FETCHING
            self._levels()
            self._prefetch()

    def _prefetch(self) -> None:
        # Keep up to _fetchDepth fetches on their way, as long as that makes
        # at most _fetchDepth + 1 batches held or coming. A source that
        # answers at once gets one fetch per call.
        hint = self._batchHint
        depth = self._fetchDepth
        while (
            self._source is _Source.FETCHING
            and self._inFlight < depth
            and len(self._buffer) + self._lent + (self._inFlight + 1) * hint
            <= (depth + 1) * hint
        ):
            # A failure is kept and handed to whoever asks for the next item.
            if not self._startFetch():
                return

    def fetchMore(self) -> Deferred[None]:
        """
        Fetch the next batch into the buffer, unless one is on its way or the
        source is exhausted. The Deferred fires when the buffer has what there
        is to have (the next batch has landed), and fails if the fetch failed.
        """
        if self._inFlight:
            return self._waiters.wait()
        if self._failure is not None:
            return fail(self._failure)
        if self._source not in _OPEN:
            return succeed(None)
        # The waiter goes first: the fetch may fire synchronously.
        waiter = self._waiters.wait()
        self._startFetch()
        return waiter

    def _startFetch(self) -> bool:
        # Returns whether the fetch is still on its way (didn't land at once).
        assert self._fetch is not None
        self._inFlight += 1
        landed = self._landed
        self._fetch().addCallbacks(self._gotBatch, self._gotFailure)
        self._levels()
        return self._landed == landed

    def _gotBatch(self, batch: Batch[T]) -> None:
        items, exhausted = batch
        self._inFlight -= 1
        self._landed += 1
        if self._source in _OPEN:
            if len(items) > self._batchHint:
                self._batchHint = len(items)
            self._buffer.extend(items)
            if exhausted:
                self._end(_Source.EXHAUSTED)
        self._levels()
        if self._waiters:
            self._waiters.fire()

    def _gotFailure(self, failure: Failure) -> None:
        # Kept for whoever asks for the next item; every waiter hears of it.
        self._inFlight -= 1
        self._landed += 1
        if self._source not in _OPEN:
            return
        self._failure = failure
        self._end(_Source.EXHAUSTED)
        self._waiters.fail(failure)

    def takeBuffered(self) -> list[T]:
        """
        Everything buffered now, leaving the buffer empty and starting the next
        fetch. For producers that write items in bulk.
        """
        buffer, finish = self._buffer, self._finishItem
        items = list(buffer)
        buffer.clear()
        if finish is not None:
            ready = self._finishedAhead
            self._setFinishedAhead(0)
            items[ready:] = map(finish, items[ready:])
        self._lent = len(items)
        self._levels()
        self._prefetch()
        return items

    def putBack(self, items: list[Any], *, finished: bool = True) -> None:
        """
        Return items taken with L{takeBuffered} but not used, to the front.

        @param finished: Whether the items are finished already (see
            L{FINISH_ITEM}), as L{takeBuffered} hands them out.
        """
        self._lent = 0
        self._buffer.extendleft(reversed(items))
        if finished and self._finishItem is not None:
            self._setFinishedAhead(self._finishedAhead + len(items))
        else:
            self._levels()

    def lend(self) -> tuple[list[Any], Callable[[Any], T] | None]:
        """
        L{takeBuffered} without finishing the items, for a producer that
        finishes each one just before it writes it (L{IterationProducer}),
        so that an item dropped at once dies young.

        @return: the items, and how to finish each one (C{None}: they are
            finished already); what is not used goes back with
            C{putBack(rest, finished=finish is None)}.
        """
        buffer = self._buffer
        ready = self._finishedAhead
        if ready:
            self._setFinishedAhead(0)
            items = [buffer.popleft() for _ in range(ready)]
            finish = None
        else:
            items = list(buffer)
            buffer.clear()
            finish = self._finishItem
        self._lent = len(items)
        self._levels()
        self._prefetch()
        return items, finish

    def stop(self) -> None:
        """
        End the iteration now: drop buffered items and release the source.
        """
        if self._source is _Source.STOPPED:
            return
        wasOpen = self._source in _OPEN
        self._source = _Source.STOPPED
        self._buffer.clear()
        self._setFinishedAhead(0)
        if wasOpen and self._stop is not None:
            self._stop()
        self._end(_Source.STOPPED)

    # Iteration --------------------------------------------------------------

    def __iter__(self) -> Deferator[T]:
        return self

    def _popBuffered(self) -> T:
        # The next item of the (non-empty) buffer, finished; and a fetch
        # ahead when one is due (see _levels).
        self._tickets.clear()
        buffer = self._buffer
        item = buffer.popleft()
        if self._finishItem is not None:
            if self._finishedAhead:
                self._setFinishedAhead(self._finishedAhead - 1)
            else:
                item = self._finishItem(item)
        if len(buffer) <= self._fetchAt and self._source is _Source.FETCHING:
            self._prefetch()
        return item  # type: ignore[no-any-return]

    def __next__(self) -> Deferred[T]:
        if self._buffer:
            return succeed(self._popBuffered())
        if self._failure is not None:
            failure, self._failure = self._failure, None
            return fail(failure)
        if self._source not in _OPEN:
            raise StopIteration
        return self.fetchMore().addCallbacks(self._popAfterFetch, self._takeFailure)

    def _popAfterFetch(self, _: None) -> T | Deferred[T]:
        self._tickets.clear()
        if self._buffer:
            item = self._buffer.popleft()
            if self._finishItem is not None:
                if self._finishedAhead:
                    self._setFinishedAhead(self._finishedAhead - 1)
                else:
                    item = self._finishItem(item)
            return item  # type: ignore[no-any-return]
        if self._source in _OPEN and self._failure is None:
            # An empty batch, and more to come: fetch again.
            return self.fetchMore().addCallbacks(self._popAfterFetch, self._takeFailure)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            return fail(failure)
        raise IterationStopped("the iteration ended while an item was awaited")

    def _takeFailure(self, failure: Failure) -> Failure:
        # Delivered to this item's Deferred: don't hand it out again.
        self._failure = None
        return failure

    def __aiter__(self) -> AsyncIterator[T]:
        # An async generator, whose one frame serves the whole loop: a
        # buffered item then costs no Python call and no new awaitable, as
        # it does through __anext__; and most items are taken in C (about a
        # third fewer instructions a row, making its Row included).
        return self._items()

    async def _items(self) -> AsyncGenerator[T, None]:
        # __anext__, looped. (A loop left early leaves nothing behind: the
        # items not taken stay buffered, for the next loop.)
        buffer = self._buffer
        popleft = buffer.popleft
        finish = self._finishItem
        while True:
            n = len(buffer) - self._fastAbove
            if n > 0:
                # The hot path, as in __anext__: the next n items need no
                # fetch, only finishing. They are taken in C, each popped
                # as it is handed out, while a ticket is left: whatever else
                # takes items or changes the levels meanwhile (this loop's
                # body may stop, pause, take items) clears the tickets,
                # which ends the chunk after the current item.
                self._tickets.clear()
                tickets = self._tickets = [()] * min(n, _CHUNK)
                chunk = starmap(popleft, tickets)
                for item in chunk if finish is None else map(finish, chunk):
                    yield item
            elif buffer:
                yield self._popBuffered()
            else:
                try:
                    d = self.__next__()
                except StopIteration:
                    return
                try:
                    item = await d
                except IterationStopped:
                    return
                yield item

    def __anext__(self) -> Awaitable[T]:
        # A buffered item needs no Deferred, and most items of a big
        # result are buffered when asked for. The hot path, once per item:
        # with plenty buffered (and none finished already), no fetch is due
        # and the item only needs finishing.
        self._tickets.clear()
        buffer = self._buffer
        if len(buffer) > self._fastAbove:
            finish = self._finishItem
            if finish is None:
                return _ready(buffer.popleft())
            return _ready(finish(buffer.popleft()))
        if buffer:
            return _ready(self._popBuffered())
        return self._anextFetching()

    async def _anextFetching(self) -> T:
        try:
            d = self.__next__()
        except StopIteration:
            raise StopAsyncIteration from None
        try:
            return await d
        except IterationStopped:
            raise StopAsyncIteration from None
