"""
The broker L{bench.measure_machinery} calls, at the top level of a module
so that a worker process of a C{processes=N} broker can import it by name
(C{bench.measure_machinery} runs as C{__main__}, which it can't).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as SA

from bench.sasync_variants import BenchBroker
from sasync import transact

_SELECT1 = SA.text("SELECT 1")


class MachineryBroker(BenchBroker):
    """
    The benchmark's broker (the SQL workload's op in its forms, the ORM
    workload's op), with two transactions of one C{SELECT 1} each: through
    SQLAlchemy Core and on the raw DB-API cursor.
    """

    @transact
    def selectOne(self) -> Any:
        # (The statement made once, unlike BenchBroker's: this counts the
        # machinery, not SQLAlchemy's text().)
        return self.conn.execute(_SELECT1).scalar()

    @transact
    def dbapiOne(self) -> Any:
        dbapi = self.conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute("SELECT 1")
            return cursor.fetchall()
        finally:
            cursor.close()
