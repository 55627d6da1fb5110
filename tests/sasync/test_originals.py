"""
The original sAsync's shapes that its users rely on (issue 20): C{@wait}
on a method returning a plain value, and C{produceRows} with an C{f}
returning a Deferred (refused clearly). Real databases.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet import defer

from sasync import AccessBroker, wait


class PlainBroker(AccessBroker):
    """
    A broker with a C{@wait} method that returns a plain value, and one
    table for C{produceRows}.
    """

    async def startup(self) -> None:
        await self.table(
            "words",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("word", SA.String(40)),
        )

    @wait
    def plain(self, x: int) -> int:
        return x + 1

    @wait
    def deferred(self, d: defer.Deferred[None]) -> defer.Deferred[None]:
        return d


async def test_waitPlainValue(dbURL: str, brokers: Any) -> None:
    """
    C{@wait} passes a plain value through as it is, as the original did;
    a Deferred is still waited for by shutdown.
    """
    broker = brokers(PlainBroker, dbURL)
    await broker.waitUntilRunning()
    assert broker.plain(1) == 2
    d: defer.Deferred[None] = defer.Deferred()
    assert broker.deferred(d) is d
    stopped = broker.shutdown()
    assert not stopped.called
    d.callback(None)
    await stopped


async def test_produceRowsDeferredRefused(dbURL: str, brokers: Any) -> None:
    """
    An C{f} returning a Deferred is refused with a TypeError that says
    what to do, and nothing is written.
    """
    broker = brokers(PlainBroker, dbURL)
    with pytest.raises(TypeError, match="f=None"):
        await broker.produceRows(defer.succeed, ["a", "b"], "words", "word")
    assert await broker.sql("SELECT word FROM words") == []
    keys = await broker.produceRows(None, ["a", "b"], "words", "word")
    assert len(keys) == 2
