"""
The seed's example (DESIGN.md) end to end, on SQLite, PostgreSQL and MySQL.
"""

from __future__ import annotations

import datetime
from typing import Any

from asynqueue import Deferator, ListConsumer

from .brokers import LogBroker

T0 = datetime.datetime(2024, 1, 1)


def entries(n: int, start: datetime.datetime = T0) -> list[dict[str, Any]]:
    return [
        {
            "dt": start + datetime.timedelta(seconds=i),
            "ip": f"10.0.{i // 250}.{i % 250}",
        }
        for i in range(n)
    ]


async def test_setNameValueSameID(dbURL: str, brokers: Any) -> None:
    """
    setNameValue, called twice with the same value, gives the same ID, and a
    new value a new ID; the same on every indexed-value table.
    """
    broker = brokers(LogBroker, dbURL)
    firstID = await broker.setNameValue("url", "/index.html", niceness=-15)
    againID = await broker.setNameValue("url", "/index.html", niceness=-15)
    otherID = await broker.setNameValue("url", "/other.html")
    vhost = await broker.setNameValue("vhost", "/index.html")
    assert firstID == againID
    assert otherID != firstID
    assert isinstance(vhost, int)
    assert await broker.count("url") == 2


async def test_deferatorIteration(dbURL: str, brokers: Any) -> None:
    """
    A transaction returning a row-returning Result gives a Deferator that
    hands out every row, in more than one batch, in order.
    """
    broker = brokers(LogBroker, dbURL, batchSize=100)
    await broker.addEntries(entries(1234))
    dr = await broker.entriesSince(T0 + datetime.timedelta(seconds=34))
    assert isinstance(dr, Deferator)
    seen = []
    for d in dr:
        row = await d
        seen.append(row.dt)
    assert len(seen) == 1200
    assert seen == sorted(seen)


async def test_asyncForIteration(dbURL: str, brokers: Any) -> None:
    """
    The Deferator works with `async for` too.
    """
    broker = brokers(LogBroker, dbURL)
    await broker.addEntries(entries(50))
    dr = await broker.entriesSince(T0)
    ips = [row.ip async for row in dr]
    assert len(ips) == 50


async def test_consumer(dbURL: str, brokers: Any) -> None:
    """
    With consumer=, the rows are written to the IConsumer and the Deferred
    fires with the consumer.
    """
    broker = brokers(LogBroker, dbURL, batchSize=64)
    await broker.addEntries(entries(500))
    consumer = ListConsumer()
    result = await broker.entriesSince(T0, consumer=consumer)
    assert result is consumer
    assert len(consumer.items) == 500
    assert consumer.producer is None


async def test_asList(dbURL: str, brokers: Any) -> None:
    """
    With asList=True, the Deferred fires with a list of rows.
    """
    broker = brokers(LogBroker, dbURL)
    await broker.addEntries(entries(30))
    rows = await broker.entriesSince(T0 + datetime.timedelta(seconds=10), asList=True)
    assert isinstance(rows, list)
    assert len(rows) == 20
    assert rows[0].ip == "10.0.0.10"


async def test_emptyResult(dbURL: str, brokers: Any) -> None:
    """
    An empty result is an empty Deferator (and an empty list).
    """
    broker = brokers(LogBroker, dbURL)
    dr = await broker.entriesSince(T0)
    assert [row async for row in dr] == []
    assert await broker.entriesSince(T0, asList=True) == []
