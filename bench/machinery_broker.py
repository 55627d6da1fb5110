"""
The broker L{bench.measure_machinery} calls, at the top level of a module
so that a worker process of a C{processes=N} broker can import it by name
(C{bench.measure_machinery} runs as C{__main__}, which it can't).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as SA

from sasync import AccessBroker, transact

_SELECT1 = SA.text("SELECT 1")


class MachineryBroker(AccessBroker):
    """
    Two transactions of one C{SELECT 1} each: through SQLAlchemy Core and
    on the raw DB-API cursor; the SQL workload's op in three forms
    (L{bench.core_ops}); and the ORM workload's op (L{ormOp}).
    """

    @transact
    def selectOne(self) -> Any:
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

    @transact
    def sqlOp(self, op: Any) -> None:
        """
        Workload 2's op through SQLAlchemy Core (L{bench.core_ops.coreOp}).
        """
        from bench.core_ops import coreOp

        coreOp(self.conn, op)

    @transact
    def sqlTypedOp(self, op: Any) -> None:
        """
        L{sqlOp} with the SELECTs' result columns declared.
        """
        from bench.core_ops import coreOpTyped

        coreOpTyped(self.conn, op)

    @transact
    def sqlDriverOp(self, op: Any) -> None:
        """
        L{sqlOp} through C{exec_driver_sql}.
        """
        from bench.core_ops import driverSqlOp

        driverSqlOp(self.conn, op)

    @transact
    def sqlDbapiOp(self, op: Any) -> None:
        """
        L{sqlOp} on the raw DB-API cursor (what adbapi's runInteraction runs).
        """
        from bench.workload import sqlOp

        dbapi = self.conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            sqlOp(cursor, op)
        finally:
            cursor.close()

    @transact
    def ormOp(self, op: Any) -> None:
        """
        Workload 1's op (L{bench.orm_ops.ormOp}) in the transaction's Session.
        """
        from bench.orm_ops import ormOp

        ormOp(self.session, op)
