"""
Row streams, deterministic (SQLite in memory at most).
"""

from __future__ import annotations

import datetime
import decimal
import itertools
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import CancelledError

from sasync.connection import _results as results
from sasync.connection._results import (
    RowStream,
    grouped,
    rowsAfterCommit,
    rowsInTransaction,
)


def test_rowStream() -> None:
    """
    A RowStream hands out the rows of its batches; closing it unstarted
    runs the cleanup the generator never would.
    """

    def batches() -> Any:
        yield [1, 2]
        yield [3]

    assert list(RowStream(batches())) == [1, 2, 3]
    cleaned: list[bool] = []
    stream = RowStream(batches(), lambda: cleaned.append(True))
    stream.close()
    assert cleaned == [True]
    started = RowStream(batches(), lambda: cleaned.append(False))
    assert started.__next__() == 1
    started.close()
    assert cleaned == [True]


def test_rowStreamIteratesInC() -> None:
    """
    C{iter()} of a RowStream, as C{islice} (the worker's batches) and C{for}
    loops call it, is its C{itertools.chain}: no Python code runs per row.
    Read in parts, it goes on where it stopped.
    """

    def batches() -> Any:
        yield [1, 2]
        yield [3]

    stream = RowStream(batches())
    assert type(iter(stream)) is itertools.chain
    assert list(itertools.islice(stream, 2)) == [1, 2]
    assert list(stream) == [3]


def test_uniqueRowsStayUnique() -> None:
    """
    A transaction that returns C{result.unique()} streams each row once,
    across batches too: its rows don't take the plain-tuple path, which
    would skip SQLAlchemy's filter.
    """
    engine = SA.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            query = "SELECT 1 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 1"
            stream = rowsAfterCommit(conn.exec_driver_sql(query).unique(), 1)
            finish = stream.finishItem or (lambda row: row)
            assert [tuple(finish(row)) for row in stream] == [(1,), (2,)]
    finally:
        engine.dispose()


def test_processedRowsAsTuples() -> None:
    """
    Rows with result processors (SQLite's DateTime and Numeric), and those
    of C{columns()}, cross as plain tuples too, processed already in the
    worker's thread; the Rows made of them are SQLAlchemy's own.
    """
    engine = SA.create_engine("sqlite://")
    metadata = SA.MetaData()
    table = SA.Table(
        "t",
        metadata,
        SA.Column("id", SA.Integer),
        SA.Column("at", SA.DateTime),
        SA.Column("n", SA.Numeric(10, 2)),
    )
    metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            values = [
                {"id": i, "at": datetime.datetime(2024, 1, 1, 0, 0, i), "n": i / 4}
                for i in range(5)
            ]
            conn.execute(table.insert(), values)
        with engine.connect() as conn:
            for columns in ((), (table.c.n, table.c.id)):

                def query(columns: Any = columns) -> Any:
                    result = conn.execute(SA.select(table))
                    return result.columns(*columns) if columns else result

                stream = rowsAfterCommit(query(), 2)
                assert stream.finishItem is not None
                items = list(stream)
                assert all(type(item) is tuple for item in items)
                rows = [stream.finishItem(item) for item in items]
                expected = list(query())
                assert rows == expected
                assert [r._mapping for r in rows] == [r._mapping for r in expected]
                assert isinstance(rows[1]._mapping["n"], decimal.Decimal)
    finally:
        engine.dispose()


def test_rowsInTransactionStoppedBeforeCommit() -> None:
    """
    Rows read inside their transaction end it with COMMIT, unless the
    check before COMMIT refuses (the task was stopped while it still ran:
    the rows fitted in its first batch): then it rolls back, and the
    iteration fails with the check's error.
    """
    engine = SA.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.commit()
            transaction = conn.begin()
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            result = conn.exec_driver_sql("SELECT x FROM t")

            def refuse() -> None:
                raise CancelledError("stopped before COMMIT")

            def leave() -> None:
                if transaction.is_active:
                    transaction.rollback()

            with pytest.raises(CancelledError):
                list(rowsInTransaction(result, transaction, 10, refuse, leave))
            assert not transaction.is_active
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    finally:
        engine.dispose()


def test_grouped() -> None:
    """
    Rows in lists of N, the last one shorter.
    """
    assert list(grouped(iter([1, 2, 3, 4, 5]), 2)) == [[1, 2], [3, 4], [5]]  # type: ignore[arg-type]


class FakeCursor:
    """
    A DB-API cursor that only knows whether it is closed.
    """

    def __init__(self, closed: bool = False) -> None:
        self.closed = closed

    def close(self) -> None:
        self.closed = True


def test_keptCursorsBounded() -> None:
    """
    A transaction's kept cursors let go of the closed ones as they grow
    (a transaction of many SELECTs read to their end keeps few); the open
    ones are all kept, and closed by closeCursors.
    """
    openOnes = [FakeCursor() for _ in range(10)]
    try:
        for i in range(10_000):
            results.keepCursor(FakeCursor(closed=True))
            if i % 1000 == 0:
                results.keepCursor(openOnes[i // 1000])
        kept = results.takeCursors()
        assert kept is not None
        assert len(kept) < 2 * results.PRUNE_CURSORS + 10
        assert all(c in kept for c in openOnes)
        assert results.takeCursors() is None
        results.closeCursors(kept)
        assert all(c.closed for c in openOnes)
    finally:
        results.takeCursors()
