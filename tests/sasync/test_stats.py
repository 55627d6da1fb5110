"""
C{broker.stats()} and the structured log events, on real databases: exact
counts after a scripted mix of committed, failed, cancelled, timed-out and
retried calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import sqlalchemy as SA
from twisted.internet.defer import CancelledError
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from sasync import AccessBroker, TransactionTimeout, retry, transact

T = TypeVar("T")

#: How many rows the streamed SELECT reads.
ROWS = 7


class Boom(Exception):
    """
    The failure of L{MixBroker.fail}.
    """


class MixBroker(AccessBroker):
    """
    Transactions that commit, fail, block, and conflict once.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, connections=1, **kw)
        self.started = threading.Event()
        self.release = threading.Event()
        self.conflicts = 0

    async def startup(self) -> None:
        await self.table(
            "things",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("name", SA.String(40)),
        )

    @transact
    def add(self, name: str) -> int:
        result = self.conn.execute(self.things.insert().values(name=name))
        return int(result.inserted_primary_key[0])

    @transact
    def fail(self) -> None:
        raise Boom("on purpose")

    @transact
    def block(self) -> None:
        # Holds the only connection until the test lets go.
        self.started.set()
        self.release.wait(30)

    @transact
    def conflictOnce(self) -> str:
        if not self.conflicts:
            self.conflicts += 1
            error = Boom("a conflict, as the database would say")
            retry.markRetryable(error, retry.SERIALIZATION)
            raise error
        return "second time lucky"

    @transact
    def names(self) -> Any:
        return self.conn.execute(SA.select(self.things.c.name))


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """
    The log events of namespace C{sasync.*} emitted during the test.
    """
    caught: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if str(event.get("log_namespace", "")).startswith("sasync."):
            caught.append(event)

    globalLogPublisher.addObserver(observer)
    yield caught
    globalLogPublisher.removeObserver(observer)


def _namespaced(events: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    return [e for e in events if e["log_namespace"] == namespace]


async def scriptedMix(broker: MixBroker, during: Callable[[], T]) -> T:
    """
    On a running L{MixBroker}: ROWS commits, one failure, one call retried
    once then committed, a streamed SELECT of ROWS rows, then with the
    connection held by a blocked call, one queued call cancelled and one
    timed out; the blocked call then commits.

    @return: What C{during} returned, called while two calls are queued
        behind the blocked one.
    """
    for i in range(ROWS):
        await broker.add(f"n{i}")
    with pytest.raises(Boom):
        await broker.fail()
    assert await broker.conflictOnce(retries=2) == "second time lucky"
    rows = [row async for row in await broker.names()]
    assert len(rows) == ROWS
    # The one connection is held: the next calls queue behind it.
    blocked = broker.block()
    await deferToThread(broker.started.wait, 10)
    queued = broker.add("never")
    timedOut = broker.add("late", timeout=0.05)
    seen = during()
    queued.cancel()
    with pytest.raises(CancelledError):
        await queued
    with pytest.raises(TransactionTimeout):
        await timedOut
    broker.release.set()
    await blocked
    return seen


async def test_scriptedMix(dbURL: str, events: list[dict[str, Any]]) -> None:
    """
    After the L{scriptedMix} and one more failure, stats() counts each
    outcome exactly, and the retry and the timeout were logged with
    structured fields.
    """
    broker = MixBroker(dbURL)
    try:
        await broker.waitUntilRunning()
        before = broker.stats()
        assert (before.committed, before.failed, before.cancelled) == (0, 0, 0)
        assert before.connections == 1
        with pytest.raises(Boom):
            await broker.fail()
        during = await scriptedMix(broker, broker.stats)
        stats = broker.stats()
    finally:
        broker.release.set()
        await broker.shutdown()
    assert during.running == 1
    assert during.queued == 2
    assert during.idleConnections == 0
    assert stats.committed == ROWS + 3  # adds, conflictOnce, names, block
    assert stats.failed == 2
    assert stats.cancelled == 1
    assert stats.timedOut == 1
    assert dict(stats.retried) == {retry.SERIALIZATION: 1}
    assert stats.rowsStreamed == ROWS
    assert (stats.queued, stats.running) == (0, 0)
    assert stats.connections == stats.idleConnections == 1
    assert stats.heldByIterations == stats.overflowConnections == 0
    [server] = stats.servers.values()
    assert server.calls == ROWS + 3 + 2 + 1 + 1
    assert server.healthy
    [retried] = _namespaced(events, "sasync.retry")
    assert retried["reason"] == retry.SERIALIZATION
    assert (retried["n"], retried["m"]) == (1, 2)
    assert "MixBroker.conflictOnce" in retried["call"]
    [timeout] = _namespaced(events, "sasync.timeout")
    assert timeout["timeout"] == 0.05
    assert "MixBroker.add('late')" in timeout["call"]
    for event in events:
        assert "{" in event["log_format"]


async def test_slowTransaction(sqliteURL: str, events: list[dict[str, Any]]) -> None:
    """
    A call slower than the broker's C{slowTransaction} is logged once, with
    its broker, method, duration and outcome; faster ones are not.
    """
    broker = MixBroker(sqliteURL, slowTransaction=0.05)
    try:
        await broker.waitUntilRunning()
        await broker.add("quick")
        blocked = broker.block()
        await deferToThread(broker.started.wait, 10)
        await deferToThread(threading.Event().wait, 0.1)
        broker.release.set()
        await blocked
    finally:
        broker.release.set()
        await broker.shutdown()
    logged = _namespaced(events, "sasync.slow")
    # Whatever was logged took at least the threshold (on a loaded machine
    # the quick call may, too: the log says how long calls took, it does
    # not promise they were fast); the call held for 0.1 s was logged once.
    for event in logged:
        assert event["threshold"] == 0.05
        assert event["seconds"] >= 0.05, event
    [slow] = [e for e in logged if e["method"] == "block"]
    assert (slow["broker"], slow["outcome"]) == ("MixBroker", "committed")
    assert slow["seconds"] >= 0.1


def test_slowTransactionChecked() -> None:
    """
    A bad C{slowTransaction} is refused, naming the option.
    """
    with pytest.raises(ValueError, match="slowTransaction"):
        AccessBroker("sqlite://", slowTransaction=-1)


def test_passwordHidden() -> None:
    """
    The servers of stats() never show the password of the URL.
    """
    from sasync._stats import CallStats

    url = SA.make_url("postgresql://app:secret@db/x").render_as_string(
        hide_password=True
    )
    stats = CallStats("B", url, object()).snapshot()
    assert "secret" not in repr(stats)
