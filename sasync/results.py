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
  - Otherwise the caller iterates. On a server database the transaction
    stays open while the rows are read (a server-side cursor on PostgreSQL,
    so memory stays bounded) and commits when the iteration ends or is
    stopped; the worker takes no other task meanwhile (extra connections
    keep other transactions going, see L{sasync.engines}). On SQLite the
    transaction commits first and the cursor is read on afterwards, between
    other transactions on the same connection, which is what lets a loop
    over a result start transactions of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.engine import Connection, Result, RootTransaction, Row
from twisted.logger import Logger

log = Logger()


def returnsRows(value: object) -> bool:
    """
    Whether C{value} is a SQLAlchemy result with rows to read.
    """
    return isinstance(value, Result) and bool(getattr(value, "returns_rows", True))


def rowsAfterCommit(result: Result[Any], batchSize: int) -> Iterator[Row[Any]]:
    """
    SQLite: the rows of C{result}, read after its transaction committed.
    Other transactions may run on the connection between batches.
    """
    try:
        while True:
            rows = result.fetchmany(batchSize)
            if not rows:
                return
            yield from rows
    finally:
        result.close()


def rowsInTransaction(
    result: Result[Any],
    transaction: RootTransaction,
    batchSize: int,
    onEnd: Callable[[], None],
) -> Iterator[Row[Any]]:
    """
    Server databases: the rows of C{result}, read inside its still open
    transaction, which commits when the rows are all read or the iteration
    is stopped, and rolls back if reading fails.

    @param onEnd: Called (in the worker thread) once the transaction ended.
    """
    committed = False
    try:
        while True:
            rows = result.fetchmany(batchSize)
            if not rows:
                break
            yield from rows
        result.close()
        transaction.commit()
        committed = True
    except GeneratorExit:
        # Stopped early: the transaction's work is done, keep it.
        result.close()
        transaction.commit()
        committed = True
        raise
    finally:
        if not committed:
            try:
                result.close()
                transaction.rollback()
            except Exception:
                log.failure("Rolling back after a failed iteration failed")
        onEnd()


def grouped(rows: Iterator[Row[Any]], n: int) -> Iterator[list[Row[Any]]]:
    """
    The rows in lists of C{n} (the last may be shorter), for
    C{selectorator(..., N=n)}.
    """
    batch: list[Row[Any]] = []
    try:
        for row in rows:
            batch.append(row)
            if len(batch) >= n:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def bufferedResult(result: Result[Any]) -> Result[Any]:
    """
    C{raw=True}: all rows fetched now, in a C{Result} that needs no
    connection any more.
    """
    return result.freeze()()


def connectionOf(result: Result[Any]) -> Connection | None:
    """
    The connection a cursor result came from, if known.
    """
    context = getattr(result, "context", None)
    return getattr(context, "root_connection", None)


__all__ = [
    "bufferedResult",
    "grouped",
    "returnsRows",
    "rowsAfterCommit",
    "rowsInTransaction",
]
