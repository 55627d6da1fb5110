"""
@transact on real databases: commit, rollback with the original exception,
nesting, the ORM session, and the errors users meet first.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from twisted.internet import defer

from asynqueue import ListConsumer
from sasync import (
    AccessBroker,
    BrokerStopped,
    NoEngineError,
    NotInTransaction,
    transact,
    wait,
)


class Base(DeclarativeBase):
    pass


class Person(Base):
    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(SA.String(40), unique=True)
    age: Mapped[int] = mapped_column(default=0)


class PeopleBroker(AccessBroker):
    """
    A broker over one table, with transactions that exercise the rules.
    """

    async def startup(self) -> None:
        await self.table(
            "people",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("name", SA.String(40)),
            SA.Column("age", SA.Integer, default=0),
            unique_name=["name"],
        )

    @transact
    def add(self, name: str, age: int = 0) -> int:
        result = self.conn.execute(self.people.insert().values(name=name, age=age))
        return int(result.inserted_primary_key[0])

    @transact
    def addTwice(self, name: str) -> None:
        self.conn.execute(self.people.insert().values(name=name))
        self.conn.execute(self.people.insert().values(name=name))

    @transact
    def addThenFail(self, name: str) -> None:
        self.conn.execute(self.people.insert().values(name=name))
        raise KeyError(name)

    @transact
    def names(self) -> list[str]:
        query = SA.select(self.people.c.name).order_by(self.people.c.name)
        return list(self.conn.execute(query).scalars())

    @transact
    def addFamily(self, names: list[str]) -> list[int]:
        # Nested calls run inline, in this transaction, returning values.
        return [self.add(name) for name in names]

    @transact
    def addFamilyThenFail(self, names: list[str]) -> None:
        for name in names:
            self.add(name)
        raise ValueError("no family today")

    @transact
    def ormAdd(self, name: str, age: int) -> Person:
        person = Person(name=name, age=age)
        self.session.add(person)
        return person

    @transact
    def ormGet(self, name: str) -> Person | None:
        query = SA.select(Person).where(Person.name == name)
        return self.session.execute(query).scalar_one_or_none()

    @transact
    def ormAndCore(self, name: str) -> int:
        # The session and self.conn share one transaction.
        self.session.add(Person(name=name, age=1))
        self.session.flush()
        query = SA.select(SA.func.count()).select_from(self.people)
        return int(self.conn.execute(query).scalar_one())

    @transact
    def withTimeout(self, timeout: float) -> float:
        # Names a call-time keyword itself: it gets it.
        return timeout

    @transact
    def sameConnection(self) -> bool:
        return self.conn is self.connection

    @transact
    def cachedAge(self, name: str) -> int | None:
        if not self.s("age"):
            t = self.people
            self.s([t.c.age], t.c.name == SA.bindparam("name"))
        return self.s().execute(name=name).scalar()

    @transact
    def cachedStatement(self, name: str) -> Any:
        if not self.s("ready"):
            self.s(
                SA.select(self.people.c.id).where(
                    self.people.c.name == SA.bindparam("n")
                )
            )
        return self.s().execute(n=name).scalar()

    @transact
    def selexAges(self, minimum: int) -> list[int]:
        with self.selex(self.people.c.age) as sh:
            sh.where(self.people.c.age >= minimum)
            sh.order_by(self.people.c.age)
        return list(sh().scalars())

    pending: list[defer.Deferred[None]]

    @wait
    def later(self, d: defer.Deferred[None]) -> defer.Deferred[None]:
        return d


async def test_commit(dbURL: str, brokers: Any) -> None:
    """
    A transaction's writes are committed: another transaction sees them.
    """
    broker = brokers(PeopleBroker, dbURL)
    first = await broker.add("ann", 30)
    second = await broker.add("bob", 40)
    assert second != first
    assert await broker.names() == ["ann", "bob"]


async def test_rollbackOriginalType(dbURL: str, brokers: Any) -> None:
    """
    A failing transaction rolls back, and its Deferred fails with the
    original exception type (IntegrityError), which names the call.
    """
    broker = brokers(PeopleBroker, dbURL)
    with pytest.raises(IntegrityError) as info:
        await broker.addTwice("carl")
    assert "PeopleBroker.addTwice('carl')" in str(info.value)
    assert any("addTwice" in note for note in info.value.__notes__)
    assert await broker.names() == []
    # A Python error rolls back too.
    with pytest.raises(KeyError) as keyInfo:
        await broker.addThenFail("dora")
    assert any("PeopleBroker.addThenFail('dora')" in n for n in keyInfo.value.__notes__)
    assert await broker.names() == []
    # And the connection is fine afterwards.
    await broker.add("eve")
    assert await broker.names() == ["eve"]


async def test_nesting(dbURL: str, brokers: Any) -> None:
    """
    A transaction calling other @transact methods runs them inline, in the
    same transaction, getting plain values; a failure rolls it all back.
    """
    broker = brokers(PeopleBroker, dbURL)
    ids = await broker.addFamily(["fay", "gus", "hal"])
    assert len(ids) == 3 and all(isinstance(i, int) for i in ids)
    with pytest.raises(ValueError):
        await broker.addFamilyThenFail(["ida", "jon"])
    assert await broker.names() == ["fay", "gus", "hal"]


async def test_session(dbURL: str, brokers: Any) -> None:
    """
    self.session is an ORM Session in the transaction: objects added are
    flushed and committed, still usable after the commit, and the session
    shares the transaction with self.conn.
    """
    broker = brokers(PeopleBroker, dbURL)
    person = await broker.ormAdd("kim", 33)
    assert person.id is not None and person.age == 33
    loaded = await broker.ormGet("kim")
    assert loaded is not None and loaded.id == person.id
    assert await broker.ormAndCore("lee") == 2
    assert await broker.names() == ["kim", "lee"]


async def test_statementCache(dbURL: str, brokers: Any) -> None:
    """
    s() caches a select by name and runs it with new parameters; a ready
    statement can be cached too. selex builds a select in place.
    """
    broker = brokers(PeopleBroker, dbURL)
    await broker.add("max", 50)
    await broker.add("ned", 20)
    assert await broker.cachedAge("max") == 50
    assert await broker.cachedAge("ned") == 20
    assert await broker.cachedAge("nobody") is None
    assert isinstance(await broker.cachedStatement("ned"), int)
    assert await broker.selexAges(21) == [50]


async def test_conveniences(dbURL: str, brokers: Any) -> None:
    """
    sql, execute, select, selex outside a transaction, selectorator (with
    N and de), produceRows and deferToQueue do what their docs say.
    """
    broker = brokers(PeopleBroker, dbURL)
    keys = await broker.produceRows(str.lower, ["A", "B", "C"], "people", "name", age=7)
    assert len(keys) == 3 and keys == sorted(keys)
    rows = await broker.sql("SELECT name, age FROM people WHERE age = :age", age=7)
    assert sorted(r.name for r in rows) == ["a", "b", "c"]
    select = broker.select(broker.people.c.name).order_by(broker.people.c.name)
    assert [r.name for r in await broker.execute(select, asList=True)] == [
        "a",
        "b",
        "c",
    ]
    executed: defer.Deferred[None] = defer.Deferred()
    dr = await broker.selectorator(select, de=executed, N=2)
    assert executed.called
    assert [[r.name for r in group] async for group in dr] == [["a", "b"], ["c"]]
    consumer = ListConsumer()
    assert await broker.selectorator(select, consumer=consumer) is consumer
    assert len(consumer.items) == 3
    with broker.selex(broker.people.c.name) as sh:
        sh.where(broker.people.c.name > "a")
    assert sorted(r.name for r in await sh(asList=True)) == ["b", "c"]
    result = await broker.execute(broker.people.update().values(age=8))
    assert result.rowcount == 3
    thread = await broker.deferToQueue(threading.current_thread)
    assert thread is not threading.current_thread()


async def test_callTimeKeywords(dbURL: str, brokers: Any) -> None:
    """
    A call-time keyword the method names itself goes to the method; an
    unknown keyword is a TypeError at once; so is a consumer that is no
    IConsumer. conn and connection are the same.
    """
    broker = brokers(PeopleBroker, dbURL)
    assert await broker.withTimeout(timeout=2.5) == 2.5
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        broker.add("x", colour="red")
    with pytest.raises(TypeError, match="IConsumer"):
        broker.names(consumer=[])
    with pytest.raises(ValueError, match="niceness"):
        broker.names(niceness=99)
    assert await broker.sameConnection()


async def test_connOutsideTransaction(dbURL: str, brokers: Any) -> None:
    """
    self.conn, self.connection, self.session and s().execute outside a
    transaction raise NotInTransaction, saying why.
    """
    broker = brokers(PeopleBroker, dbURL)
    await broker.waitUntilRunning()
    for name in ("conn", "connection", "session"):
        with pytest.raises(
            NotInTransaction, match="only available inside a transaction"
        ):
            getattr(broker, name)
    broker.s("outside")
    broker.s(SA.select(SA.literal(1)))
    with pytest.raises(NotInTransaction):
        broker.s().execute()


async def test_afterShutdown(dbURL: str, brokers: Any) -> None:
    """
    A transaction called after shutdown fails with BrokerStopped, naming
    the call; shutdown is idempotent.
    """
    broker = brokers(PeopleBroker, dbURL)
    await broker.add("ola")
    await broker.shutdown()
    await broker.shutdown()
    assert not broker.running
    with pytest.raises(
        BrokerStopped, match=r"PeopleBroker.add\('pat'\) was called after"
    ):
        await broker.add("pat")


async def test_waitDecorator(sqliteURL: str, brokers: Any) -> None:
    """
    shutdown waits for the Deferred of a @wait method.
    """
    broker = brokers(PeopleBroker, sqliteURL)
    pending: defer.Deferred[None] = defer.Deferred()
    broker.later(pending)
    stopping = broker.shutdown()
    assert not stopping.called
    pending.callback(None)
    await stopping


def test_noURL() -> None:
    """
    No URL and no global engine: a clear NoEngineError.
    """
    from sasync.connection import _engines as engines

    saved = list(engines._globalSpec)
    engines._globalSpec.clear()
    try:
        with pytest.raises(NoEngineError, match=r"sasync.setup\(url"):
            PeopleBroker()
    finally:
        engines._globalSpec[:] = saved


async def test_globalEngine(sqliteURL: str, brokers: Any) -> None:
    """
    Brokers made without a URL use the engine set by sasync.setup, and
    share it.
    """
    import sasync
    from sasync.connection import _engines as engines

    saved = list(engines._globalSpec)
    sasync.setup(sqliteURL)
    try:
        a = brokers(PeopleBroker)
        b = brokers(PeopleBroker)
        assert a._handle is b._handle
        await a.add("quin")
        assert await b.names() == ["quin"]
    finally:
        engines._globalSpec[:] = saved


def test_globalEngineRefusesProcesses(sqliteURL: str) -> None:
    """
    sasync.setup() refuses processes=N with an error that says where it
    belongs, and leaves the global engine as it was.
    """
    import sasync
    from sasync.connection import _engines as engines

    saved = list(engines._globalSpec)
    with pytest.raises(TypeError, match=r"processes=2.*give it to the broker"):
        sasync.setup(sqliteURL, processes=2)
    assert engines._globalSpec == saved


async def test_startupWaits(dbURL: str, brokers: Any) -> None:
    """
    Calls made right after construction wait for startup (the table exists
    by the time they run); first() runs before them.
    """

    class FirstBroker(PeopleBroker):
        def first(self) -> None:
            self.conn.execute(self.people.insert().values(name="first"))

    broker = brokers(FirstBroker, dbURL)
    assert not broker.running
    d = broker.names()
    assert await d == ["first"]
    assert broker.running


class OrmBroker(PeopleBroker):
    @transact
    def everybody(self) -> Any:
        return self.session.execute(SA.select(Person).order_by(Person.name))


async def test_ormResultIterated(dbURL: str, brokers: Any) -> None:
    """
    An ORM result returned from a transaction is iterated like any other
    (read before the session ends), giving usable objects.
    """
    broker = brokers(OrmBroker, dbURL)
    await broker.ormAdd("rae", 5)
    await broker.ormAdd("sid", 6)
    dr = await broker.everybody()
    people = [row[0] async for row in dr]
    assert [(p.name, p.age) for p in people] == [("rae", 5), ("sid", 6)]


async def test_waitUntilRunningAfterShutdown(sqliteURL: str, brokers: Any) -> None:
    """
    waitUntilRunning on a shut-down broker fails with BrokerStopped.
    """
    broker = brokers(PeopleBroker, sqliteURL)
    await broker.waitUntilRunning()
    await broker.shutdown()
    with pytest.raises(BrokerStopped):
        await broker.waitUntilRunning()


async def test_callWhenRunningAndTrigger(sqliteURL: str, brokers: Any) -> None:
    """
    callWhenRunning calls once the broker runs, with the result of the
    call; the broker's shutdown is a 'before shutdown' trigger of the
    reactor until it has shut down.
    """
    from twisted.internet import reactor

    broker = brokers(PeopleBroker, sqliteURL)
    seen: list[bool] = []

    def check(x: int) -> int:
        seen.append(broker.running)
        return x * 2

    assert await broker.callWhenRunning(check, 21) == 42
    assert seen == [True]
    before = reactor._eventTriggers["shutdown"].before  # type: ignore[attr-defined]
    assert any(t[0] == broker.shutdown for t in before)
    await broker.shutdown()
    assert not any(t[0] == broker.shutdown for t in before)


class BusyStartup(PeopleBroker):
    """
    A startup that runs transactions of its own (under inlineCallbacks),
    and a first() decorated with @transact.
    """

    @defer.inlineCallbacks
    def startup(self):  # type: ignore[no-untyped-def]
        yield PeopleBroker.startup(self)
        yield self.add("from-startup")
        names = yield self.names()
        self.seenInStartup = names

    @transact
    def first(self) -> None:
        self.add("from-first")


async def test_startupRunsTransactions(dbURL: str, brokers: Any) -> None:
    """
    Transactions called by startup() run at once (no deadlock waiting for
    the startup itself); a @transact first() runs after it, before others.
    """
    broker = brokers(BusyStartup, dbURL)
    assert await broker.names() == ["from-first", "from-startup"]
    assert broker.seenInStartup == ["from-startup"]


async def test_startupFails(sqliteURL: str, brokers: Any) -> None:
    """
    A failing startup fails waiting calls and waitUntilRunning with
    StartupError, whose cause is the original error.
    """
    from sasync import StartupError

    class Broken(PeopleBroker):
        async def startup(self) -> None:
            raise ZeroDivisionError("no tables today")

    broker = brokers(Broken, sqliteURL)
    with pytest.raises(StartupError, match="no tables today") as info:
        await broker.names()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(StartupError):
        await broker.waitUntilRunning()
