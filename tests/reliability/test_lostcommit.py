"""
Connections that die during COMMIT, on real databases: the transaction is
never run again on the strength of the lost connection alone (it may have
committed), and on PostgreSQL, when the database cannot be asked what
became of it, the caller hears that it may or may not have committed.

The fault: right after the database committed, the connection is ended
for real (SQLite: closed; PostgreSQL: C{pg_terminate_backend}; MariaDB:
C{KILL CONNECTION}, both from another connection), and COMMIT fails with
the driver's own error, as when the answer is lost on its way back.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.exc import DBAPIError

from sasync import transact
from sasync.connection import _outcome as outcome
from tests.reliability.helpers import Ledger, adminEngine, killBackend, retriedCount


class Counted(Ledger):
    """
    A ledger that counts how many times its C{countedWrite} ran.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.runs = 0

    @transact
    def countedWrite(self, token: str) -> str:
        self.runs += 1
        self.conn.execute(self.ledger.insert().values(token=token))
        return token


class CommitFault:
    """
    Makes the next COMMIT of a broker's engine commit and then lose its
    connection: the engine's dialect commits, ends the connection from
    another one (or closes it, on SQLite), and fails with the driver's
    error for a dead connection. Worker thread (it runs inside COMMIT).
    """

    def __init__(
        self, broker: Any, url: str, afterKill: Callable[[], object] | None = None
    ) -> None:
        self.url = url
        self.afterKill = afterKill
        self.dialect = broker._handle.engine.dialect
        self.doCommit = self.dialect.do_commit
        self.armed = 0
        self.dialect.do_commit = self._commit

    def arm(self) -> None:
        """
        Make the next COMMIT fail this way.
        """
        self.armed += 1

    def restore(self) -> None:
        """
        Give the dialect its own COMMIT back.
        """
        del self.dialect.do_commit

    def _commit(self, proxied: Any) -> None:
        self.doCommit(proxied)
        if not self.armed:
            return
        self.armed -= 1
        dbapi = proxied.dbapi_connection
        if self.url.startswith("sqlite"):
            dbapi.close()
            dbapi.commit()  # sqlite3: "Cannot operate on a closed database."
            raise AssertionError("a closed sqlite3 connection committed")
        if self.url.startswith("postgresql"):
            killBackend(self.url, dbapi.info.backend_pid)
        else:
            killBackend(self.url, dbapi.thread_id())
        if self.afterKill is not None:
            self.afterKill()
        # The dead connection's own error ("terminating connection due to
        # administrator command", "Lost connection to server").
        dbapi.cursor().execute("SELECT 1")
        raise AssertionError("a killed connection answered")


def allowConnections(url: str, allow: bool) -> None:
    """
    Let clients connect to the database of C{url} or not (PostgreSQL;
    superusers too), from the server's C{postgres} database.
    """
    parsed = SA.make_url(url)
    engine = adminEngine(parsed.set(database="postgres").render_as_string(False))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(
                f'ALTER DATABASE "{parsed.database}" WITH ALLOW_CONNECTIONS {allow}'
            )
    finally:
        engine.dispose()


@pytest.mark.reactorTimeout(60)
async def test_lostDuringCommitNotRunAgain(dbURL: str, brokers: Any) -> None:
    """
    A connection lost after COMMIT was sent is no reason to run the
    transaction again, retries or not: it committed here, and a second run
    would write twice. SQLite and MariaDB: the caller gets the driver's
    disconnect error. PostgreSQL: the database, asked, says it committed,
    and the caller gets the result. Either way the write is in the table
    once, and the next call works on a new connection.
    """
    broker = brokers(Counted, dbURL, connections=1, retries=3)
    await broker.waitUntilRunning()
    verdicts = Counter(outcome.verdicts)
    fault = CommitFault(broker, dbURL)
    try:
        fault.arm()
        if dbURL.startswith("postgresql"):
            assert await broker.countedWrite("once") == "once"
            assert Counter(outcome.verdicts) - verdicts == {outcome.COMMITTED: 1}
        else:
            with pytest.raises(DBAPIError) as caught:
                await broker.countedWrite("once")
            assert caught.value.connection_invalidated
    finally:
        fault.restore()
    assert broker.runs == 1
    assert retriedCount(broker) == 0
    assert await broker.tokens() == ["once"]
    assert broker._handle.replacedConnections() == 1


@pytest.mark.reactorTimeout(60)
async def test_unknownCommitVerdict(
    postgresqlURL: str, brokers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    PostgreSQL with retries, the connection lost during COMMIT and the
    database refusing connections while sAsync asks what became of the
    transaction: the verdict is unknown, the caller gets the driver's error
    with a note saying it may or may not have committed, and it is not run
    again (here it had committed: the write is there once).
    """
    # The real lookup, giving up after 1 s instead of 10.
    monkeypatch.setattr(
        outcome,
        "lostCommitOutcome",
        functools.partial(outcome.lostCommitOutcome, seconds=1.0),
    )
    broker = brokers(Counted, postgresqlURL, connections=1, retries=3)
    await broker.waitUntilRunning()
    verdicts = Counter(outcome.verdicts)
    fault = CommitFault(
        broker, postgresqlURL, lambda: allowConnections(postgresqlURL, False)
    )
    try:
        fault.arm()
        with pytest.raises(DBAPIError) as caught:
            await broker.countedWrite("maybe")
    finally:
        fault.restore()
        allowConnections(postgresqlURL, True)
    assert caught.value.connection_invalidated
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "may or may not have been committed" in notes
    assert "it was not run again" in notes
    assert Counter(outcome.verdicts) - verdicts == {outcome.UNKNOWN: 1}
    assert broker.runs == 1
    assert retriedCount(broker) == 0
    assert await broker.tokens() == ["maybe"]
