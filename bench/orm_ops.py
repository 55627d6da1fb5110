"""
The ORM bodies of the article's ops: each takes a Session already in a
transaction (the caller commits), so the sync, thread-pool and sAsync
variants run the very same code.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from bench.schema import A, B
from bench.workload import Op


def newEntities(data: int) -> list[A]:
    """
    The article's 3 C{A} with 2, 1 and 2 C{B} children.
    """
    return [
        A(bs=[B(), B()], data=str(data + 1)),
        A(bs=[B()], data=str(data + 2)),
        A(bs=[B(), B()], data=str(data + 3)),
    ]


def ormWrite(session: Session, data: int) -> None:
    """
    Add L{newEntities} and flush them (the caller commits).
    """
    session.add_all(newEntities(data))
    session.flush()


READ_STMT = select(A).options(selectinload(A.bs)).limit(10)


def ormRead(session: Session) -> int:
    """
    Load 10 C{A} with their children; touch each child as the article did.
    """
    seen = 0
    for a in session.execute(READ_STMT).scalars():
        for b in a.bs:
            seen += b.id
    return seen


def ormOp(session: Session, op: Op) -> None:
    """
    Run one op of the plan in C{session}.
    """
    if op is None:
        ormRead(session)
    else:
        ormWrite(session, op)
