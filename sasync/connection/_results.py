"""
What becomes of a transaction's row-returning result.

All of this runs in the worker thread that owns the connection. A row
iterator returned from here is turned by the worker into a L{Deferator}
(or produced to the caller's consumer) whose batches are fetched in the
same thread, C{batchSize} rows at a time.

Streaming policy:

  - C{asList=True}: every row is fetched, then the transaction commits; the
    caller gets a list.
  - C{raw=True}: the rows are fetched into a buffered C{Result}
    (C{FrozenResult}'s), usable synchronously in the reactor thread.
  - Otherwise the caller iterates. On a server database, rows that stream
    (a server-side cursor on PostgreSQL, an unbuffered one on MySQL, so
    memory stays bounded) are read inside the still open transaction,
    which commits when the iteration ends or is stopped; the worker takes
    no other task meanwhile (extra connections keep other transactions
    going, and an iteration may have to let go, reading its rest into
    memory: see L{sasync.connection._engines}). Rows the driver has read whole are
    listed and the transaction commits first: that iteration holds
    nothing. On SQLite the transaction commits first and the cursor is
    read on afterwards, between other transactions on the same connection,
    which is what lets a loop over a result start transactions of its
    own.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Generator, Iterator, Sequence
from inspect import GEN_CREATED
from typing import Any, cast

from sqlalchemy.engine import (
    Connection,
    CursorResult,
    FilterResult,
    Result,
    RootTransaction,
    Row,
)
from sqlalchemy.engine.result import ResultMetaData
from twisted.logger import Logger

from ._threadstate import state

log = Logger()


#: What a transaction may return to have its rows iterated.
AnyResult = Result[Any] | FilterResult[Any]


def returnsRows(value: object) -> bool:
    """
    Whether C{value} is a SQLAlchemy result with rows to read: a C{Result},
    or a C{ScalarResult}/C{MappingResult} made from one.
    """
    if isinstance(value, FilterResult):
        value = underlying(value)
    return isinstance(value, Result) and bool(getattr(value, "returns_rows", True))


def underlying(result: AnyResult) -> Result[Any]:
    """
    The C{Result} a C{ScalarResult} or C{MappingResult} reads from.
    """
    while isinstance(result, FilterResult):
        result = result._real_result
    return result


def isCursorResult(result: AnyResult) -> bool:
    """
    Whether the rows come straight from a DBAPI cursor (not from objects an
    ORM session loads).
    """
    return isinstance(underlying(result), CursorResult)


class RowStream:
    """
    An iterator over rows that come in batches, read in C: C{iter()} of it
    is its C{itertools.chain} of the batches (so that C{islice} and C{for}
    loops, which call C{iter()} first, run no Python code per row), and its
    C{__next__} attribute is the chain's own too; either resumes the Python
    batch generator only once per batch, which matters at a million rows.
    Worker thread only.

    With C{finishItem}, the batches hold the DBAPI's plain tuples and
    C{finishItem} makes each one a C{Row}: AsynQueue calls it in the reactor
    thread as it hands the row out (see L{asynqueue.deferator.FINISH_ITEM}),
    so that rows a consumer drops at once never survive a garbage
    collection, which would otherwise cost more than making them.
    """

    def __init__(
        self,
        batches: Generator[Sequence[Any], None, None],
        unstarted: Callable[[], None] | None = None,
        finishItem: Callable[[Any], Row[Any]] | None = None,
        *,
        inMemory: bool = False,
    ) -> None:
        """
        @param unstarted: What to do if closed before the first row was
            asked for (the generator's own cleanup would not run).
        @param finishItem: Makes a C{Row} of an item of the batches, or
            C{None} if they hold C{Row}s already.
        @param inMemory: Whether every batch is in memory already (see
            L{asynqueue.deferator.IN_MEMORY}).
        """
        self._batches = batches
        self._unstarted = unstarted
        self.finishItem = finishItem
        self.inMemory = inMemory
        chain = itertools.chain.from_iterable(batches)
        # Instance attribute: whoever looks up it.__next__ gets chain's own.
        self.__next__ = chain.__next__  # type: ignore[method-assign]
        self._chain = chain

    def __iter__(self) -> Iterator[Any]:
        # The chain, not self: next() on self would run the Python
        # __next__ below for every row (the type's slot, whatever the
        # instance attribute says).
        return self._chain

    def __next__(self) -> Any:
        return next(self._chain)

    def close(self) -> None:
        """
        Stop early: closes the batch generator (and so the cursor, and on
        server databases commits the transaction).
        """
        batches = self._batches
        if (
            self._unstarted is not None
            and inspect.getgeneratorstate(batches) == GEN_CREATED
        ):
            batches.close()
            self._unstarted()
            return
        batches.close()


def _tupleRows(
    result: AnyResult,
) -> tuple[Callable[[int], Any], Callable[[int], Any], Callable[[Any], Any]] | None:
    # SQLAlchemy 2.1's plain CursorResult, when its rows need no processing
    # (no result processors, filters or row logging), makes a Row of a
    # DBAPI tuple with one C call, its "simple" single-row maker. Then the
    # rows can be read as plain tuples, straight from the cursor, and made
    # Rows later, one at a time. With result processors (or a tuple filter,
    # columns()), its "interim" maker applies them to a batch, in C, here
    # in the worker thread, and a Row is made of each processed tuple later
    # as the simple maker makes one: Row(metadata, None, keys, values).
    # Returns (fetch buffered, fetch from the cursor, make a Row), or None
    # if that private API looks otherwise.
    if (
        type(result) is not CursorResult
        # unique() and the like filter the Rows: only SQLAlchemy's own
        # fetch applies them.
        or getattr(result, "_unique_filter_state", None) is not None
        or getattr(result, "_post_creational_filter", None) is not None
    ):
        return None
    getter = getattr(result, "_row_getter", None)
    cursor = getattr(result, "cursor", None)
    fetchImpl = getattr(result, "_fetchmany_impl", None)
    if not isinstance(getter, tuple) or len(getter) != 3:
        return None
    maker = getattr(getter[0], "__name__", None)
    interim: Callable[[Any], Any] | None = None
    if maker == "single_row":
        # (With row logging, interim is the Row maker itself.)
        interim = getter[2]
        metadata = getattr(result, "_metadata", None)
        keys = getattr(metadata, "_key_to_index", None)
        if (
            not callable(interim)
            or interim is getter[1]
            or not isinstance(metadata, ResultMetaData)
            or keys is None
        ):
            return None
        makeRow: Callable[[Any], Any] = functools.partial(Row, metadata, None, keys)
    elif maker == "single_row_simple":
        makeRow = getter[0]
    else:
        return None
    if (
        cursor is None
        or not callable(getattr(cursor, "fetchmany", None))
        or not callable(fetchImpl)
        or not callable(getattr(result.cursor_strategy, "handle_exception", None))
    ):
        return None
    cursorFetch = cursor.fetchmany

    def fetchFromCursor(size: int) -> Any:
        try:
            return cursorFetch(size)
        except Exception as e:
            # As SQLAlchemy's own fetch does: the driver's error becomes
            # SQLAlchemy's (DataError, OperationalError, ...), and a lost
            # connection is invalidated. (It raises.)
            result.cursor_strategy.handle_exception(result, cursor, e)
            raise

    if interim is None:
        return fetchImpl, fetchFromCursor, makeRow
    process = interim

    def fetchBuffered(size: int) -> Any:
        return process(fetchImpl(size))

    def fetchProcessed(size: int) -> Any:
        return process(fetchFromCursor(size))

    return fetchBuffered, fetchProcessed, makeRow


def _fetchBatches(result: AnyResult, batchSize: int) -> Iterator[Sequence[Any]]:
    # Rows through SQLAlchemy's public API (when _tupleRows can't be used).
    result = result.yield_per(batchSize)
    # (FilterResult subclasses all have fetchmany; the base class does not.)
    fetchmany = cast(Any, result).fetchmany
    while True:
        rows = fetchmany(batchSize)
        if not rows:
            return
        yield rows


def _fetchTuples(
    result: AnyResult,
    batchSize: int,
    fetchBuffered: Callable[[int], Any],
    cursorFetch: Callable[[int], Any],
) -> Iterator[Sequence[Any]]:
    # Plain DBAPI tuples: the first batch through SQLAlchemy's cursor
    # strategy, which holds what it read ahead; the rest from the cursor.
    result.yield_per(batchSize)
    rows = fetchBuffered(batchSize)
    if not rows:
        return
    yield rows
    if len(rows) < batchSize:
        return
    while True:
        rows = cursorFetch(batchSize)
        if not rows:
            return
        yield rows


def _batchesOf(
    result: AnyResult, batchSize: int
) -> tuple[Iterator[Sequence[Any]], Callable[[Any], Row[Any]] | None]:
    """
    The batches of C{result}'s rows, and what makes a C{Row} of an item of
    them (C{None}: they are C{Row}s already).
    """
    tuples = _tupleRows(result)
    if tuples is None:
        return _fetchBatches(result, batchSize), None
    fetchBuffered, cursorFetch, makeRow = tuples
    return _fetchTuples(result, batchSize, fetchBuffered, cursorFetch), makeRow


def _counted(
    source: Iterator[Sequence[Any]], onBatch: Callable[[int], object]
) -> Iterator[Sequence[Any]]:
    # Worker thread: tell onBatch how many rows each batch has.
    try:
        for batch in source:
            onBatch(len(batch))
            yield batch
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def rowsAfterCommit(
    result: AnyResult,
    batchSize: int,
    onBatch: Callable[[int], object] | None = None,
    onClose: Callable[[], None] | None = None,
) -> RowStream:
    """
    SQLite: the rows of C{result}, read after its transaction committed.
    Other transactions may run on the connection between batches.

    @param onBatch: Called with the size of each batch fetched (counters).
    @param onClose: Called once C{result} is closed (read to its end, or
        stopped), whether or not a row was read.
    """
    source, makeRow = _batchesOf(result, batchSize)
    if onBatch is not None:
        source = _counted(source, onBatch)

    def close() -> None:
        try:
            result.close()
        finally:
            if onClose is not None:
                onClose()

    def batches() -> Generator[Sequence[Any], None, None]:
        try:
            yield from source
        finally:
            close()

    return RowStream(batches(), close, finishItem=makeRow)


def isStreamed(result: AnyResult) -> bool:
    """
    Whether C{result}'s rows come from the server as they are read (a
    server-side cursor on PostgreSQL, an unbuffered one on MySQL), rather
    than all read by the driver already.
    """
    context = getattr(underlying(result), "context", None)
    return bool(getattr(context, "_is_server_side", True))


def rowsInMemory(
    result: AnyResult,
    batchSize: int,
    onBatch: Callable[[int], object] | None = None,
) -> RowStream:
    """
    MySQL, a result the driver has read whole: its rows, read now, before
    the transaction commits (so the caller can commit it and
    hand the rows out with no connection, see L{RowStream} C{inMemory}).

    @param onBatch: Called with the size of each batch read (counters).
    """
    source, makeRow = _batchesOf(result, batchSize)
    if onBatch is not None:
        source = _counted(source, onBatch)
    try:
        batches = list(source)
    finally:
        result.close()
    return RowStream((b for b in batches), finishItem=makeRow, inMemory=True)


#: How many cursors a transaction keeps (L{keepCursor}) before it first
#: lets go of those closed already.
PRUNE_CURSORS = 64


def keepCursor(cursor: Any) -> None:
    """
    Worker thread: C{cursor}, a server-side cursor of the transaction
    running in this thread, is to be closed when that transaction ends
    (L{takeCursors}, L{closeCursors}).
    """
    cursors = state.serverCursors
    if cursors is None:
        state.serverCursors = [cursor]
        return
    n = len(cursors)
    if n >= PRUNE_CURSORS and not n & (n - 1):
        # A transaction that runs many SELECTs: let go of the cursors
        # closed already (read to their end), at each power of two, so
        # that memory stays bounded at O(1) per cursor.
        cursors[:] = [c for c in cursors if not getattr(c, "closed", False)]
    cursors.append(cursor)


def takeCursors() -> list[Any] | None:
    """
    Worker thread: the server-side cursors the transaction running in this
    thread kept (L{keepCursor}), now its caller's to close; C{None} if none.
    """
    cursors = state.serverCursors
    state.serverCursors = None
    return cursors


def closeCursors(cursors: list[Any] | None) -> None:
    """
    Worker thread, once their transaction ended (committed, rolled back, or
    its connection lost): close the DBAPI cursors still open. The server
    dropped them with the transaction, so psycopg 3 sends nothing; this only
    keeps it from warning when they are deleted.
    """
    for cursor in cursors or ():
        try:
            cursor.close()
        except Exception:
            log.failure("Closing a cursor of an ended transaction failed")


def rowsInTransaction(
    result: AnyResult,
    transaction: RootTransaction,
    batchSize: int,
    beforeCommit: Callable[[], None],
    leave: Callable[[], None],
    onBatch: Callable[[int], object] | None = None,
    cursors: list[Any] | None = None,
) -> RowStream:
    """
    Server databases: the rows of C{result}, read inside its still open
    transaction, which commits when the rows are all read or the iteration
    is stopped, and rolls back if reading fails.

    @param beforeCommit: Called right before a COMMIT that ends the rows;
        raises if the transaction must roll back instead (it was stopped
        while its task still runs: the rows fit in the first batch).
    @param leave: Called last, whatever happened: leaves the connection
        outside any transaction (see L{ConnectionWorker.leaveTransaction
        <sasync.connection._workers.ConnectionWorker.leaveTransaction>}), so that a
        failed fetch or COMMIT can't leave it in this one.
    @param onBatch: Called with the size of each batch fetched (counters).
    @param cursors: The transaction's server-side cursors (L{takeCursors}),
        closed once it ended.
    """
    source, makeRow = _batchesOf(result, batchSize)
    if onBatch is not None:
        source = _counted(source, onBatch)

    def finish() -> None:
        try:
            leave()
        finally:
            closeCursors(cursors)

    def end(check: bool = True) -> None:
        try:
            result.close()
            if check:
                beforeCommit()
            transaction.commit()
        finally:
            finish()

    def batches() -> Generator[Sequence[Any], None, None]:
        ended = False
        try:
            yield from source
            ended = True
            end()
        except GeneratorExit:
            # Stopped early: the transaction's work is done, keep it.
            ended = True
            end(check=False)
            raise
        finally:
            if not ended:
                try:
                    result.close()
                except Exception:
                    log.failure("Closing the result of a failed iteration failed")
                finish()

    return RowStream(batches(), end, makeRow)


def grouped(rows: Iterator[Any], n: int) -> Iterator[list[Row[Any]]]:
    """
    The rows in lists of C{n} (the last may be shorter), for
    C{selectorator(..., N=n)}. Rows of a L{RowStream} that hands out plain
    tuples are made C{Row}s here.
    """
    finish = getattr(rows, "finishItem", None)
    batch: list[Row[Any]] = []
    try:
        for row in rows:
            batch.append(row if finish is None else finish(row))
            if len(batch) >= n:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def bufferedResult(result: AnyResult) -> Any:
    """
    C{raw=True}: all rows fetched now, in a C{Result} that needs no
    connection any more (a list, for a C{ScalarResult}/C{MappingResult}).
    """
    if isinstance(result, FilterResult):
        return cast(Any, result).all()
    return result.freeze()()


def connectionOf(result: AnyResult) -> Connection | None:
    """
    The connection a cursor result came from, if known.
    """
    context = getattr(result, "context", None)
    return getattr(context, "root_connection", None)


__all__ = [
    "bufferedResult",
    "closeCursors",
    "grouped",
    "keepCursor",
    "returnsRows",
    "rowsAfterCommit",
    "rowsInTransaction",
    "takeCursors",
]
