"""
Row loops that start a transaction per row (issue 14.3): however many run
at once, and however deeply they nest, every one of them completes, with
every row in order, on the server databases (where an open iteration keeps
its transaction, and so a connection, until its rows are read).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import Deferred, gatherResults

from sasync import AccessBroker, transact

#: Rows per loop: several batches of BATCH, so that every iteration is held.
ROWS = 40
BATCH = 10


class Touches(AccessBroker):
    """
    A table to iterate over, and one that each row's transaction writes to.
    """

    async def startup(self) -> None:
        await self.table(
            "items",
            SA.Column("n", SA.Integer, primary_key=True, autoincrement=False),
            SA.Column("label", SA.String(40)),
        )
        await self.table(
            "touches",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("n", SA.Integer),
        )

    @transact
    def fill(self, count: int) -> None:
        self.conn.execute(
            self.items.insert(), [{"n": i, "label": f"#{i}"} for i in range(count)]
        )

    @transact
    def rows(self) -> Any:
        return self.conn.execute(SA.select(self.items).order_by(self.items.c.n))

    @transact
    def touch(self, n: int) -> None:
        self.conn.execute(self.touches.insert().values(n=n))

    @transact
    def touchCounts(self) -> dict[int, int]:
        t = self.touches
        query = SA.select(t.c.n, SA.func.count()).group_by(t.c.n)
        return {n: count for n, count in self.conn.execute(query)}


async def rowLoop(broker: Touches) -> list[int]:
    """
    The user's natural pattern: a transaction for each row of an iteration.
    """
    seen = []
    async for row in await broker.rows():
        await broker.touch(row[0])
        seen.append(row[0])
    return seen


@pytest.mark.reactorTimeout(30)
async def test_manyRowLoops(serverURL: str, brokers: Any) -> None:
    """
    12 row loops at once, with the default connections (4) and overflow
    (4): more open iterations than connections can ever be. All complete,
    each seeing every row in order, and every touch is written.
    """
    broker = brokers(Touches, serverURL, batchSize=BATCH)
    await broker.fill(ROWS)
    loops = 12
    seen = await gatherResults(
        [Deferred.fromCoroutine(rowLoop(broker)) for _ in range(loops)]
    )
    assert seen == [list(range(ROWS))] * loops
    assert await broker.touchCounts() == {n: loops for n in range(ROWS)}


async def nestedLoop(broker: Touches, depth: int, seen: list[list[int]]) -> None:
    """
    A row loop that, at its first row, runs another one inside it, down to
    C{depth} levels.
    """
    mine: list[int] = []
    seen.append(mine)
    async for row in await broker.rows():
        await broker.touch(row[0])
        mine.append(row[0])
        if depth > 1 and row[0] == 0:
            await nestedLoop(broker, depth - 1, seen)


@pytest.mark.reactorTimeout(30)
async def test_nestedRowLoops(serverURL: str, brokers: Any) -> None:
    """
    Row loops nested 8 deep on one connection (and the default overflow of
    4): every level completes with every row in order.
    """
    broker = brokers(Touches, serverURL, batchSize=BATCH, connections=1)
    await broker.fill(ROWS)
    depth = 8
    seen: list[list[int]] = []
    await nestedLoop(broker, depth, seen)
    assert seen == [list(range(ROWS))] * depth
    assert await broker.touchCounts() == {n: depth for n in range(ROWS)}
