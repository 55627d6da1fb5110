"""
psycopg 3's server-side cursors are closed when their transaction ends,
however it ends: psycopg warns (a C{ResourceWarning}, an error under pytest)
when one is deleted open, even once the server dropped it with its
transaction. A transaction that streams gives its SELECTs such cursors.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.exc import DataError, OperationalError

from sasync import AccessBroker, transact

#: A SELECT whose backend terminates itself once C{g} reaches 2,500: the
#: stream fails in its third batch, after the transaction handed it over.
DIES_AT_2500 = (
    "SELECT CASE WHEN g < 2500 THEN g"
    " ELSE pg_terminate_backend(pg_backend_pid())::int END"
    " FROM generate_series(1, 10000) g"
)


class Cursors(AccessBroker):
    """
    Transactions that leave server-side cursors open (never read, or read
    when the transaction fails); each cursor one of them opens is kept in
    C{cursors}, to be looked at.
    """

    cursors: list[Any]

    def watch(self) -> None:
        """
        Worker thread, in a transaction: keep every cursor its connection
        runs a statement on from now on.
        """
        if not SA.event.contains(self.conn, "before_cursor_execute", self._keep):
            SA.event.listen(self.conn, "before_cursor_execute", self._keep)

    def _keep(self, conn: Any, cursor: Any, *args: Any) -> None:
        self.cursors.append(cursor)

    @transact
    def unread(self) -> None:
        self.watch()
        self.conn.exec_driver_sql("SELECT g FROM generate_series(1, 3) g")

    @transact
    def unreadThenFail(self) -> None:
        self.watch()
        self.conn.exec_driver_sql("SELECT g FROM generate_series(1, 3) g")
        self.conn.exec_driver_sql("SELECT 1 / (g - 1) FROM generate_series(1, 3) g")

    @transact
    def unreadThenDie(self) -> None:
        self.watch()
        self.conn.exec_driver_sql("SELECT g FROM generate_series(1, 3) g")
        self.conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

    @transact
    def unreadThenStream(self, sql: str) -> CursorResult[Any]:
        self.watch()
        self.conn.exec_driver_sql("SELECT g FROM generate_series(1, 3) g")
        return self.conn.exec_driver_sql(sql)


def psycopgURL(url: str) -> str:
    """
    The same database, on psycopg 3 (whichever driver the run uses).
    """
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(False)


async def made(brokers: Any, postgresqlURL: str) -> Cursors:
    broker: Cursors = brokers(
        Cursors, psycopgURL(postgresqlURL), connections=1, batchSize=1000
    )
    broker.cursors = []
    await broker.waitUntilRunning()
    return broker


def assertAllClosed(broker: Cursors, count: int) -> None:
    assert len(broker.cursors) == count
    assert all(type(c).__name__ == "ServerCursor" for c in broker.cursors)
    assert [c.closed for c in broker.cursors] == [True] * count


@pytest.mark.reactorTimeout(60)
async def test_unreadCursorClosedAtCommit(postgresqlURL: str, brokers: Any) -> None:
    """
    A SELECT the transaction never read: its cursor is closed once the
    transaction committed.
    """
    broker = await made(brokers, postgresqlURL)
    await broker.unread()
    assertAllClosed(broker, 1)


@pytest.mark.reactorTimeout(60)
async def test_cursorsClosedAfterFailure(postgresqlURL: str, brokers: Any) -> None:
    """
    A transaction that fails (a statement error; a killed backend): every
    cursor it opened is closed, the failing statement's too.
    """
    broker = await made(brokers, postgresqlURL)
    with pytest.raises(DataError):
        await broker.unreadThenFail()
    assertAllClosed(broker, 2)
    broker.cursors.clear()
    with pytest.raises(OperationalError):
        await broker.unreadThenDie()
    assertAllClosed(broker, 2)


@pytest.mark.reactorTimeout(60)
async def test_streamClosesTransactionCursors(postgresqlURL: str, brokers: Any) -> None:
    """
    A transaction that hands its rows over to a stream: its cursors are
    closed when the stream ends, whether it read every row or its backend
    died while it read.
    """
    broker = await made(brokers, postgresqlURL)
    rows = [row async for row in await broker.unreadThenStream("SELECT 1")]
    assert rows == [(1,)]
    assertAllClosed(broker, 2)
    broker.cursors.clear()
    read = 0
    with pytest.raises(OperationalError):
        async for _ in await broker.unreadThenStream(DIES_AT_2500):
            read += 1
    assert read == 2000
    assertAllClosed(broker, 2)
