"""
The article's mixed workload: the op plan and the bodies every variant shares.

Each op is, with even odds, a write (3 C{A} with 2, 1, 2 C{B} children) or
a read (10 C{A} with C{selectinload(A.bs)}). The plan comes from a seeded
RNG so every variant runs exactly the same sequence. The ORM bodies live in
L{bench.orm_ops}, so SQL-level variants never load the ORM.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from bench.statements import INSERT_A, INSERT_B, NEXTVAL, READ_A, READ_B, writeParams

# An op is the data value of a write, or None for a read.
Op = int | None


def opPlan(count: int, seed: int) -> list[Op]:
    """
    C{count} ops, about half writes (their data value) and half reads (None).
    """
    rng = random.Random(seed)
    return [
        rng.randint(1, 100_000) if rng.random() < 0.5 else None for _ in range(count)
    ]


class Cursor(Protocol):
    """The slice of a DB-API cursor the SQL-level bodies use."""

    def execute(self, sql: str, params: Any = ...) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def sqlOp(cursor: Cursor, op: Op) -> None:
    """
    Run one op of the plan at SQL level on a DB-API cursor (the caller commits).
    """
    if op is None:
        cursor.execute(READ_A)
        cursor.fetchall()
        cursor.execute(READ_B)
        cursor.fetchall()
        return
    cursor.execute(NEXTVAL)
    row = cursor.fetchone()
    params = writeParams((row[0], row[1], row[2]), op)
    cursor.execute(INSERT_A, params)
    cursor.execute(INSERT_B, params)
