"""
LISTEN/NOTIFY on a real PostgreSQL server: notifications arrive in order in
the reactor thread, only once their transaction commits, and a listener
whose backend is terminated listens again by itself and says so; other
databases refuse clearly.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from sasync import AccessBroker, Backoff, Listener, NotSupported, transact


class NotifyingBroker(AccessBroker):
    """
    Sends notifications from inside its transactions.
    """

    @transact
    def sendMany(self, channel: str, first: int, count: int) -> None:
        for i in range(first, first + count):
            self.notify(channel, str(i))

    @transact
    def sendThenFail(self, channel: str) -> None:
        self.notify(channel, "rolled back")
        raise ValueError("roll it back")

    @transact
    def terminateListeners(self, channel: str) -> int:
        return len(
            self.conn.execute(
                SA.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query = :q"
                ),
                {"q": f'LISTEN "{channel}"'},
            ).all()
        )


class Collector:
    """
    A callback that keeps what it gets, the thread it ran in, and can wake
    a test once it has a given number.
    """

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.threads: set[int] = set()
        self.reconnected = 0
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def __call__(self, payload: str) -> None:
        self.payloads.append(payload)
        self.threads.add(threading.get_ident())
        still = []
        for count, d in self._waiting:
            if len(self.payloads) >= count:
                d.callback(None)
            else:
                still.append((count, d))
        self._waiting = still

    def onReconnect(self) -> None:
        self.reconnected += 1

    def waitFor(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.payloads) >= count:
            d.callback(None)
        else:
            self._waiting.append((count, d))
        return d


async def until(check: Any, seconds: float = 20.0) -> None:
    """
    Wait (in the reactor) until C{check()} is true.
    """
    from twisted.internet import reactor

    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"{check} still false after {seconds} s")


@pytest.mark.reactorTimeout(120)
async def test_thousandsInOrder(postgresqlURL: str, brokers: Any) -> None:
    """
    5,000 notifications, sent by 10 transactions and 100 separate
    notify() calls, reach the callback in the order sent, in the reactor
    thread, on a channel whose name needs quoting.
    """
    broker = brokers(NotifyingBroker, postgresqlURL)
    got = Collector()
    listener = await broker.listen("Mixed Case", got)
    assert isinstance(listener, Listener) and listener.active
    for batch in range(10):
        await broker.sendMany("Mixed Case", batch * 490, 490)
    for i in range(4900, 5000):
        await broker.notify("Mixed Case", str(i))
    await got.waitFor(5000)
    assert got.payloads == [str(i) for i in range(5000)]
    assert got.threads == {threading.get_ident()}
    await listener.stop()
    assert not listener.active


@pytest.mark.reactorTimeout(60)
async def test_rollbackDeliversNothing(postgresqlURL: str, brokers: Any) -> None:
    """
    A notification sent inside a transaction that rolls back is never
    delivered; one sent after it is (so the first would have come before).
    """
    broker = brokers(NotifyingBroker, postgresqlURL)
    got = Collector()
    await broker.listen("events", got)
    with pytest.raises(ValueError, match="roll it back"):
        await broker.sendThenFail("events")
    await broker.notify("events", "committed")
    await got.waitFor(1)
    await broker.notify("events", "last")
    await got.waitFor(2)
    assert got.payloads == ["committed", "last"]


@pytest.mark.reactorTimeout(60)
async def test_terminatedBackendListensAgain(postgresqlURL: str, brokers: Any) -> None:
    """
    pg_terminate_backend on the listening connection: the listener connects
    again, LISTENs again, calls onReconnect(), and gets what is sent after.
    """
    broker = brokers(
        NotifyingBroker, postgresqlURL, backoff=Backoff(firstReconnect=0.05)
    )
    got = Collector()
    listener = await broker.listen("events", got)
    await broker.notify("events", "before")
    await got.waitFor(1)
    assert await broker.terminateListeners("events") == 1
    await until(lambda: got.reconnected == 1)
    assert listener.reconnects == 1 and listener.active
    await broker.notify("events", "after")
    await got.waitFor(2)
    assert got.payloads == ["before", "after"]


@pytest.mark.reactorTimeout(60)
async def test_shutdownStopsListeners(postgresqlURL: str) -> None:
    """
    The broker's shutdown stops its listeners: their connections are gone.
    """
    broker = NotifyingBroker(postgresqlURL)
    listener = await broker.listen("events", Collector())
    other = NotifyingBroker(postgresqlURL)
    await broker.shutdown()
    assert not listener.active
    assert await other.terminateListeners("events") == 0
    await listener.stop()  # (Idempotent.)
    await other.shutdown()


@pytest.mark.parametrize("kind", ["sqlite", "mysql"])
async def test_notSupported(
    kind: str, request: pytest.FixtureRequest, brokers: Any
) -> None:
    """
    listen() and notify() elsewhere than PostgreSQL fail with NotSupported,
    naming what was asked and the database.
    """
    broker = brokers(NotifyingBroker, request.getfixturevalue(f"{kind}URL"))
    with pytest.raises(NotSupported, match=r"listen\('events'\).*PostgreSQL"):
        await broker.listen("events", Collector())
    with pytest.raises(NotSupported, match=r"notify\('events'\).*PostgreSQL"):
        await broker.notify("events", "x")
    with pytest.raises(NotSupported, match=r"notify\('events'\)"):
        await broker.sendMany("events", 0, 1)


async def test_badArguments(postgresqlURL: str, brokers: Any) -> None:
    """
    A bad channel or payload is refused with a message naming it.
    """
    broker = brokers(NotifyingBroker, postgresqlURL)
    with pytest.raises(ValueError, match="channel ''"):
        await broker.listen("", Collector())
    with pytest.raises(ValueError, match="not callable"):
        await broker.listen("events", None)
    with pytest.raises(ValueError, match="at most 7999"):
        await broker.notify("events", "x" * 8000)


async def test_failingCallbackDoesNotStopDelivery(
    postgresqlURL: str, brokers: Any
) -> None:
    """
    A callback that raises is logged, and the next notification is still
    delivered to it.
    """
    broker = brokers(NotifyingBroker, postgresqlURL)
    got = Collector()

    def callback(payload: str) -> None:
        got(payload)
        if payload == "bad":
            raise RuntimeError("callback failed")

    await broker.listen("events", callback)
    await broker.notify("events", "bad")
    await broker.notify("events", "good")
    await got.waitFor(2)
    assert got.payloads == ["bad", "good"]


@pytest.mark.reactorTimeout(120)
async def test_processes(postgresqlURL: str, brokers: Any) -> None:
    """
    With processes=N the transactions (notify included) run in worker
    processes, and the listener in the parent: delivery is the same.
    """
    broker = brokers(NotifyingBroker, postgresqlURL, processes=1)
    got = Collector()
    await broker.listen("events", got)
    await broker.sendMany("events", 0, 100)
    await broker.notify("events", "100")
    await got.waitFor(101)
    assert got.payloads == [str(i) for i in range(101)]
