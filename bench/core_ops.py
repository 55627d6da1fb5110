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

from collections.abc import Callable
from typing import Any

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


def _op(execute: Callable[..., Any], statements: tuple[Any, ...], op: Op) -> None:
    # One op of the plan: statements are (read A, read B, nextval, insert A,
    # insert B), in the form execute takes.
    readA, readB, nextval, insertA, insertB = statements
    if op is None:
        execute(readA).fetchall()
        execute(readB).fetchall()
        return
    row = execute(nextval).one()
    params = writeParams((row[0], row[1], row[2]), op)
    execute(insertA, params)
    execute(insertB, params)


_TEXT = (_READ_A, _READ_B, _NEXTVAL, _INSERT_A, _INSERT_B)
_TYPED = (_READ_A_TYPED, _READ_B_TYPED, _NEXTVAL_TYPED, _INSERT_A, _INSERT_B)
_DRIVER = (READ_A, READ_B, NEXTVAL, INSERT_A, INSERT_B)


def coreOp(conn: Connection, op: Op) -> None:
    """
    Run one op of the plan on C{conn} (the caller commits).
    """
    _op(conn.execute, _TEXT, op)


def coreOpTyped(conn: Connection, op: Op) -> None:
    """
    L{coreOp} with the SELECTs' result columns declared (C{text().columns()}).
    """
    _op(conn.execute, _TYPED, op)


def driverSqlOp(conn: Connection, op: Op) -> None:
    """
    L{coreOp} through C{Connection.exec_driver_sql}: the statements as
    L{bench.statements} has them, no compilation.
    """
    _op(conn.exec_driver_sql, _DRIVER, op)
