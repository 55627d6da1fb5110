"""
SQLAlchemy's transaction begins lazily on psycopg2 and psycopg 3 (see
L{sasync.transact.TransactionCall}): a body that runs only the raw DB-API
cursor leaves it out. Such a transaction still commits, rolls back and
fails as one through SQLAlchemy does, and what must see BEGIN (event
listeners, an ORM session) still does.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy import event

from sasync import AccessBroker, transact


class _Raw(Exception):
    """
    Raised by a body after its write.
    """


class RawBroker(AccessBroker):
    """
    Transactions on the raw DB-API cursor alone, on a table with a
    deferred unique constraint (checked at COMMIT).
    """

    def startup(self) -> Any:
        return self.makeTable()

    @transact
    def makeTable(self) -> None:
        self.conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS raw (value TEXT,"
            " UNIQUE (value) DEFERRABLE INITIALLY DEFERRED)"
        )

    def _execute(self, sql: str, *params: Any) -> Any:
        cursor = self.conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None
        finally:
            cursor.close()

    @transact
    def insert(self, *values: str) -> None:
        for value in values:
            self._execute("INSERT INTO raw (value) VALUES (%s)", value)

    @transact
    def insertThenFail(self, value: str) -> None:
        self._execute("INSERT INTO raw (value) VALUES (%s)", value)
        raise _Raw(value)

    @transact
    def sqlalchemyBegun(self) -> bool:
        self._execute("SELECT 1")
        return self.conn.in_transaction()

    @transact
    def values(self) -> list[str]:
        return sorted(row[0] for row in self._execute("SELECT value FROM raw"))

    @transact
    def sessionCommitsThenFails(self, value: str) -> None:
        session = self.session
        session.execute(SA.text("INSERT INTO raw (value) VALUES (:v)"), {"v": value})
        # Joined to sAsync's transaction: this commits only the session's
        # part, not the transaction (the failure below rolls it all back).
        session.commit()
        raise _Raw(value)


def _worker(broker: AccessBroker) -> Any:
    return broker._handle.queue.workers[0]  # type: ignore[attr-defined]


async def test_rawBodyBeginsLazily(postgresqlURL: str, brokers: Any) -> None:
    """
    On psycopg2 and psycopg 3 a body on the raw DB-API cursor commits
    through the driver, SQLAlchemy's transaction never begun.
    """
    broker = brokers(RawBroker, postgresqlURL, connections=1)
    await broker.waitUntilRunning()
    assert _worker(broker).beginsLazily
    assert await broker.sqlalchemyBegun() is False
    await broker.insert("a", "b")
    assert await broker.values() == ["a", "b"]


async def test_rawBodyFailureRollsBack(postgresqlURL: str, brokers: Any) -> None:
    """
    A body on the raw DB-API cursor that fails after a write leaves
    nothing: the driver's transaction is rolled back, and the next call
    (on the same connection) does not run inside it, nor commit its write.
    """
    broker = brokers(RawBroker, postgresqlURL, connections=1)
    with pytest.raises(_Raw):
        await broker.insertThenFail("lost")
    await broker.insert("kept")
    assert await broker.values() == ["kept"]


async def test_rawCommitFailureIsSQLAlchemys(postgresqlURL: str, brokers: Any) -> None:
    """
    A COMMIT of the driver's transaction that fails (a deferred unique
    constraint) fails the call with SQLAlchemy's exception, as SQLAlchemy's
    own COMMIT would, and the connection serves the next call.
    """
    broker = brokers(RawBroker, postgresqlURL, connections=1)
    with pytest.raises(SA.exc.IntegrityError) as raised:
        await broker.insert("twice", "twice")
    assert raised.value.orig is not None
    assert await broker.values() == []
    await broker.insert("once")
    assert await broker.values() == ["once"]


async def test_beginListenerSeesRawBodies(postgresqlURL: str, brokers: Any) -> None:
    """
    With a C{begin} listener on the engine, a body on the raw DB-API cursor
    begins SQLAlchemy's transaction before it runs, as every body did
    before transactions began lazily: the listener sees each one.
    (READ COMMITTED: no read-only guess runs a call twice.)
    """
    broker = brokers(
        RawBroker, postgresqlURL, connections=1, isolation_level="READ COMMITTED"
    )
    await broker.waitUntilRunning()
    begun: list[object] = []
    commits: list[object] = []

    def onBegin(connection: object) -> None:
        begun.append(connection)

    def onCommit(connection: object) -> None:
        commits.append(connection)

    engine = broker.engine
    event.listen(engine, "begin", onBegin)
    event.listen(engine, "commit", onCommit)
    try:
        await broker.insert("a")
        assert await broker.sqlalchemyBegun() is True
    finally:
        event.remove(engine, "begin", onBegin)
        event.remove(engine, "commit", onCommit)
    assert len(begun) == 2
    assert len(commits) == 2


async def test_otherListenersKeepItLazy(postgresqlURL: str, brokers: Any) -> None:
    """
    A listener of other events (every engine's C{before_cursor_execute},
    say, as instrumentation adds) leaves SQLAlchemy's transaction to begin
    lazily.
    """
    broker = brokers(RawBroker, postgresqlURL, connections=1)
    await broker.waitUntilRunning()
    seen: list[object] = []

    def onExecute(*args: object) -> None:
        seen.append(args)

    event.listen(broker.engine, "before_cursor_execute", onExecute)
    try:
        assert await broker.sqlalchemyBegun() is False
        await broker.insert("a")
    finally:
        event.remove(broker.engine, "before_cursor_execute", onExecute)
    assert await broker.values() == ["a"]


async def test_sessionJoinsTheTransaction(postgresqlURL: str, brokers: Any) -> None:
    """
    An ORM session made in a transaction that began lazily joins sAsync's
    transaction (it is begun for it): its own commit() does not end the
    transaction, and the body's failure rolls back its writes.
    """
    broker = brokers(RawBroker, postgresqlURL, connections=1)
    with pytest.raises(_Raw):
        await broker.sessionCommitsThenFails("session")
    assert await broker.values() == []
