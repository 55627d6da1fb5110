"""
The SQL-level op through SQLAlchemy Core (C{text()} of the very statements
in L{bench.statements}), on a Connection already in a transaction, so the
sAsync variant and its plain-Twisted twin run the same code.
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
