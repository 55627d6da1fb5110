"""
A user's consumer that raises, through a real broker: the transaction's
Deferred fails with the consumer's exception (it used to hang for ever when
C{registerProducer} raised), the iteration lets go of its connection, and
the next call on the same broker runs, on that same single connection.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from sasync import AccessBroker, transact


class Boom(RuntimeError):
    """
    What the faulty consumer raises.
    """


@implementer(IConsumer)
class FaultyConsumer:
    """
    Raises L{Boom} from C{registerProducer}, C{write} (at the 30th row) or
    C{unregisterProducer}, as C{where} says.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.rows = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.where == "register":
            raise Boom("boom")

    def write(self, data: Any) -> None:
        if self.where == "write" and self.rows == 29:
            raise Boom("boom")
        self.rows += 1

    def unregisterProducer(self) -> None:
        if self.where == "unregister":
            raise Boom("boom")


class Numbers(AccessBroker):
    """
    A table of numbers to stream to a consumer.
    """

    async def startup(self) -> None:
        await self.table(
            "numbers",
            SA.Column("n", SA.Integer, primary_key=True, autoincrement=False),
        )

    @transact
    def fill(self, count: int) -> None:
        self.conn.execute(self.numbers.insert(), [{"n": i} for i in range(count)])

    @transact
    def allNumbers(self) -> Any:
        return self.conn.execute(SA.select(self.numbers).order_by(self.numbers.c.n))

    @transact
    def addAndList(self, n: int) -> Any:
        self.conn.execute(self.numbers.insert().values(n=n))
        return self.conn.execute(SA.select(self.numbers).order_by(self.numbers.c.n))

    @transact
    def count(self) -> int:
        query = SA.select(SA.func.count()).select_from(self.numbers)
        return int(self.conn.execute(query).scalar_one())


def bounded(d: Deferred[Any], seconds: float = 15) -> Deferred[Any]:
    """
    C{d}, failing with C{TimeoutError} after C{seconds} (a hang shows as a
    failure naming the call, not as the whole test timing out).
    """
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["register", "write", "unregister"])
async def test_consumerErrorFailsTheCall(dbURL: str, brokers: Any, where: str) -> None:
    """
    The call fails with the consumer's exception; then, with a single
    connection and no overflow, the next calls run (the iteration was
    stopped and its connection released), and shutdown completes.
    """
    oneConnection = (
        {} if dbURL.startswith("sqlite")
        else {"connections": 1, "overflowConnections": 0}
    )
    broker = brokers(Numbers, dbURL, batchSize=10, **oneConnection)
    await broker.fill(100)
    consumer = FaultyConsumer(where)
    with pytest.raises(Boom, match="boom"):
        await bounded(broker.allNumbers(consumer=consumer))
    assert consumer.rows == {"register": 0, "write": 29, "unregister": 100}[where]
    assert await bounded(broker.count()) == 100
    rows = await bounded(broker.allNumbers(asList=True))
    assert [row.n for row in rows] == list(range(100))
    # Nothing is left for shutdown to wait on.
    await bounded(broker.shutdown())


async def test_consumerErrorKeepsTheWrites(dbURL: str, brokers: Any) -> None:
    """
    The consumer's error does not undo the transaction whose rows it was
    given: its body had finished, and what it wrote is committed (before
    the delivery on SQLite, when the iteration stops on the servers).
    """
    broker = brokers(Numbers, dbURL, batchSize=10)
    await broker.fill(50)
    with pytest.raises(Boom):
        await bounded(broker.addAndList(1000, consumer=FaultyConsumer("write")))
    assert await bounded(broker.count()) == 51
