"""
Every job on a connection leaves it outside any transaction, whatever it
raised: a failed C{table()} or a failed COMMIT must not poison the
connection that other calls (and other brokers on the same database)
use next.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import DeferredList

from sasync import AccessBroker, StartupError, transact


class Good(AccessBroker):
    """
    A healthy broker with one table.
    """

    async def startup(self) -> None:
        await self.table("good", SA.Column("id", SA.Integer, primary_key=True))

    @transact
    def count(self) -> int:
        return int(
            self.conn.execute(
                SA.select(SA.func.count()).select_from(self.good)
            ).scalar_one()
        )


class Bad(AccessBroker):
    """
    A broker whose table can't be made: its schema does not exist.
    """

    async def startup(self) -> None:
        await self.table(
            "bad", SA.Column("id", SA.Integer, primary_key=True), schema="nope"
        )


async def test_failedTableLeavesConnectionClean(dbURL: str, brokers: Any) -> None:
    """
    After a broker's C{table()} failed on the connections it shares with a
    healthy broker, all of the healthy broker's calls succeed.
    """
    good = brokers(Good, dbURL)
    await good.waitUntilRunning()
    bad = brokers(Bad, dbURL)
    with pytest.raises(StartupError):
        await bad.waitUntilRunning()
    results = await DeferredList([good.count() for _ in range(100)], consumeErrors=True)
    assert [r for ok, r in results if not ok] == []


class DeferredCheck(AccessBroker):
    """
    PostgreSQL: a deferred foreign key, checked only at COMMIT, so that
    COMMIT itself fails.
    """

    async def startup(self) -> None:
        await self.table("parent", SA.Column("id", SA.Integer, primary_key=True))
        await self.table(
            "child",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column(
                "parent",
                SA.Integer,
                SA.ForeignKey("parent.id", deferrable=True, initially="DEFERRED"),
            ),
        )

    @transact
    def orphan(self) -> None:
        self.conn.execute(self.child.insert().values(parent=12345))

    @transact
    def children(self) -> int:
        return len(self.conn.execute(SA.select(self.child)).all())


async def test_failedCommitLeavesConnectionClean(
    postgresqlURL: str, brokers: Any
) -> None:
    """
    A COMMIT that fails (a deferred constraint) leaves the one connection
    ready for the next transaction.
    """
    broker = brokers(DeferredCheck, postgresqlURL, connections=1, retries=0)
    with pytest.raises(IntegrityError):
        await broker.orphan()
    assert await broker.children() == 0
