"""
Read-only transactions on every database: C{@transact(readOnly=True)} and
the call-time C{readOnly=} keyword. A write in one fails with
L{ReadOnlyViolation} on SQLite, PostgreSQL and MySQL/MariaDB alike, and
nothing of it is committed; the next read-write transaction on the same
connection writes as usual.
"""

from __future__ import annotations

import pytest
import sqlalchemy as SA

from sasync import AccessBroker, ReadOnlyViolation, transact
from sasync.connection._positions import parseLSN
from sasync.errors import ReplicaError


class Counter(AccessBroker):
    """
    One table, a writer, a reader, and a "reader" that writes.
    """

    async def startup(self) -> None:
        await self.table(
            "counts",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("n", SA.Integer),
        )

    @transact
    def add(self, n: int) -> None:
        self.conn.execute(self.counts.insert().values(n=n))

    @transact(readOnly=True)
    def total(self) -> int:
        query = SA.select(SA.func.coalesce(SA.func.sum(self.counts.c.n), 0))
        return int(self.conn.execute(query).scalar_one())

    @transact(readOnly=True)
    def sneakyAdd(self, n: int) -> None:
        self.conn.execute(self.counts.insert().values(n=n))


async def test_readOnlyMethodCannotWrite(dbURL: str) -> None:
    """
    A write in a C{@transact(readOnly=True)} method fails with
    L{ReadOnlyViolation} naming the call, on every database; reads work,
    and so does the next writer on the same connection. On PostgreSQL the
    broker's C{writePosition} moves on with each write; elsewhere it is
    C{None}.
    """
    broker = Counter(dbURL, connections=1) if "sqlite" not in dbURL else Counter(dbURL)
    try:
        # Learned from the first time it is read (a broker without replicas).
        assert broker.writePosition is None
        await broker.add(1)
        with pytest.raises(ReadOnlyViolation, match=r"Counter\.sneakyAdd\(5\)"):
            await broker.sneakyAdd(5)
        assert await broker.total() == 1
        # Read-only, then read-write again on the one connection.
        before = broker.writePosition
        await broker.add(2)
        assert await broker.total() == 3
        # PostgreSQL: each write moves the broker's WAL position on.
        if "postgresql" in dbURL:
            assert before is not None and broker.writePosition is not None
            assert parseLSN(broker.writePosition) > parseLSN(before)
        else:
            assert broker.writePosition is None
        with pytest.raises(ReadOnlyViolation):
            await broker.sneakyAdd(5)
        assert await broker.total() == 3
    finally:
        await broker.shutdown()


async def test_callTimeReadOnly(dbURL: str) -> None:
    """
    C{readOnly=True} at call time makes a writer's call read-only;
    C{readOnly=False} lets a read-only method's call write.
    """
    broker = Counter(dbURL)
    try:
        with pytest.raises(ReadOnlyViolation):
            await broker.add(7, readOnly=True)
        await broker.sneakyAdd(4, readOnly=False)
        assert await broker.total() == 4
    finally:
        await broker.shutdown()


async def test_badOptions(sqliteURL: str) -> None:
    """
    Bad input gets a clear error naming it: C{readOnly=} not a bool,
    C{after=} not a WAL position, C{replicas=} on SQLite.
    """
    with pytest.raises(TypeError, match="readOnly"):
        transact(readOnly="yes")  # type: ignore[call-overload]
    broker = Counter(sqliteURL)
    try:
        with pytest.raises(TypeError, match="readOnly=1"):
            broker.total(readOnly=1)
        with pytest.raises(ReplicaError, match="'16B3740' is not a WAL position"):
            broker.total(after="16B3740")
    finally:
        await broker.shutdown()
    with pytest.raises(ReplicaError, match="needs a PostgreSQL broker"):
        Counter(sqliteURL, replicas=["postgresql://x@localhost/y"])
