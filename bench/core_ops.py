"""
The SQL-level op through SQLAlchemy Core (C{text()} of the very statements
in L{bench.statements}), on a Connection already in a transaction, so the
sAsync variant and its plain-Twisted twin run the same code; and the same
op in two cheaper forms SQLAlchemy offers for the same statements, to show
what its layers cost: C{text().columns()} (result columns declared, so
SQLAlchemy keeps the result's metadata with the compiled statement instead
of building it from the cursor for every statement) and
C{Connection.exec_driver_sql} (no compilation, the driver's own
placeholders).
"""

from __future__ import annotations

import sqlalchemy as SA
from sqlalchemy.engine import Connection

from bench.statements import (
    INSERT_A,
    INSERT_B,
    NEXTVAL,
    READ_A,
    READ_B,
    colonNamed,
    writeParams,
)
from bench.workload import Op

_NEXTVAL = SA.text(NEXTVAL)
_INSERT_A = SA.text(colonNamed(INSERT_A))
_INSERT_B = SA.text(colonNamed(INSERT_B))
_READ_A = SA.text(READ_A)
_READ_B = SA.text(READ_B)


_NEXTVAL_TYPED = SA.text(NEXTVAL).columns(
    SA.column("a1", SA.Integer),
    SA.column("a2", SA.Integer),
    SA.column("a3", SA.Integer),
)
_READ_A_TYPED = SA.text(READ_A).columns(
    SA.column("id", SA.Integer),
    SA.column("data", SA.String),
    SA.column("create_date", SA.DateTime),
)
_READ_B_TYPED = SA.text(READ_B).columns(
    SA.column("a_id", SA.Integer),
    SA.column("id", SA.Integer),
    SA.column("data", SA.String),
)


def coreOp(conn: Connection, op: Op) -> None:
    """
    Run one op of the plan on C{conn} (the caller commits).
    """
    if op is None:
        conn.execute(_READ_A).fetchall()
        conn.execute(_READ_B).fetchall()
        return
    row = conn.execute(_NEXTVAL).one()
    params = writeParams((row[0], row[1], row[2]), op)
    conn.execute(_INSERT_A, params)
    conn.execute(_INSERT_B, params)


def coreOpTyped(conn: Connection, op: Op) -> None:
    """
    L{coreOp} with the SELECTs' result columns declared (C{text().columns()}).
    """
    if op is None:
        conn.execute(_READ_A_TYPED).fetchall()
        conn.execute(_READ_B_TYPED).fetchall()
        return
    row = conn.execute(_NEXTVAL_TYPED).one()
    params = writeParams((row[0], row[1], row[2]), op)
    conn.execute(_INSERT_A, params)
    conn.execute(_INSERT_B, params)


def driverSqlOp(conn: Connection, op: Op) -> None:
    """
    L{coreOp} through C{Connection.exec_driver_sql}: the statements as
    L{bench.statements} has them, no compilation.
    """
    if op is None:
        conn.exec_driver_sql(READ_A).fetchall()
        conn.exec_driver_sql(READ_B).fetchall()
        return
    row = conn.exec_driver_sql(NEXTVAL).one()
    params = writeParams((row[0], row[1], row[2]), op)
    conn.exec_driver_sql(INSERT_A, params)
    conn.exec_driver_sql(INSERT_B, params)
