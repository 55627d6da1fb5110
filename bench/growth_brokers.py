"""
The broker of the C{txsize} and C{streammemory} workloads (L{bench.txsize},
L{bench.streammemory}), written only against sAsync's public API.

Imported only in a child process, and only when L{bench.availability}
found C{sasync} importable.
"""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as SA

from bench.statements import STREAM_QUERY, colonNamed
from bench.txsize import INSERT, insertRows, statementParams
from bench.workload import Cursor
from sasync import AccessBroker, transact

_INSERT = SA.text(colonNamed(INSERT))
_FIRST_ROWS = SA.text(STREAM_QUERY + " LIMIT :rows")


class GrowthBroker(AccessBroker):
    """
    The transactions of the growth workloads; their tables already exist.
    """

    @transact
    def insertConn(self, txn: int, size: int) -> None:
        """
        C{size} single-row INSERTs through C{self.conn} (SQLAlchemy Core
        C{text()}), one transaction.
        """
        for params in statementParams(txn, size):
            self.conn.execute(_INSERT, params)

    @transact
    def insertDbapi(self, txn: int, size: int) -> None:
        """
        The same statements on the transaction's raw DB-API cursor, as
        adbapi runs them: only the machinery differs.
        """
        dbapi = self.conn.connection.dbapi_connection
        assert dbapi is not None  # checked out for this transaction
        cursor = dbapi.cursor()
        try:
            insertRows(cast(Cursor, cursor), txn, size)
        finally:
            cursor.close()

    @transact
    def selectOne(self) -> Any:
        """
        A trivial transaction, to connect before the clock starts.
        """
        return self.conn.execute(SA.text("SELECT 1")).scalar()

    @transact
    def firstRows(self, rows: int) -> Any:
        """
        The first C{rows} rows of C{stream}, as a Deferator or to a consumer.
        """
        return self.conn.execute(_FIRST_ROWS, {"rows": rows})

    def retries(self) -> int:
        """
        How many times this broker's transactions ran again, for any reason.
        """
        return sum(self.stats().retried.values())
