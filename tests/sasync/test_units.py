"""
Deterministic unit tests: no reactor, no threads, no database server.
Keyword parsing, registry keys, error notes, the statement cache, the
canceller's targeting, row streams, and the public names.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import CancelledError
from zope.interface.verify import verifyObject

import sasync
from asynqueue import IWorker, ListConsumer, Task
from sasync.connection._cancel import Canceller
from sasync.connection._engines import EngineSpec, _freeze
from sasync.connection._results import RowStream, grouped, rowsInTransaction
from sasync.errors import NotInTransaction, TableNameError
from sasync.statements import StatementCache
from sasync.tables import checkTableName
from sasync.transact import (
    CALL_KEYWORDS,
    Accepts,
    CallOptions,
    describeCall,
    noteCall,
    splitKeywords,
)

# Keyword parsing -------------------------------------------------------------


def plain(self: Any, a: int, b: int = 0) -> None: ...


def namesTimeout(self: Any, timeout: float) -> None: ...


def anyKeywords(self: Any, *args: Any, **kw: Any) -> None: ...


def test_splitKeywordsNone() -> None:
    """
    No keywords: the shared default options, nothing to pass on.
    """
    options, own = splitKeywords(Accepts.of(plain), "plain", {})
    assert options == CallOptions() and own == {}


def test_splitKeywordsCallTime() -> None:
    """
    Call-time keywords become options; the method's own stay.
    """
    consumer = ListConsumer()
    options, own = splitKeywords(
        Accepts.of(plain), "plain", {"b": 2, "niceness": -15, "consumer": consumer}
    )
    assert own == {"b": 2}
    assert options.niceness == -15 and options.consumer is consumer


def test_splitKeywordsMethodWins() -> None:
    """
    A call-time keyword the method names as a parameter goes to the method.
    """
    options, own = splitKeywords(Accepts.of(namesTimeout), "f", {"timeout": 3})
    assert own == {"timeout": 3} and options.timeout is None


def test_splitKeywordsVarKeyword() -> None:
    """
    A method taking **kw gets unknown keywords, but not call-time ones.
    """
    options, own = splitKeywords(Accepts.of(anyKeywords), "f", {"x": 1, "asList": True})
    assert own == {"x": 1} and options.asList


def test_splitKeywordsUnknown() -> None:
    """
    An unknown keyword is a TypeError naming it and the call-time keywords.
    """
    with pytest.raises(TypeError) as info:
        splitKeywords(Accepts.of(plain), "plain", {"colour": "red"})
    message = str(info.value)
    assert "'colour'" in message and "plain()" in message
    assert all(k in message for k in CALL_KEYWORDS)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"niceness": 21}, ValueError, "niceness"),
        ({"niceness": "low"}, TypeError, "niceness"),
        ({"consumer": object()}, TypeError, "IConsumer"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": True}, ValueError, "timeout"),
        ({"asList": True, "raw": True}, ValueError, "exclude"),
        ({"asList": True, "consumer": ListConsumer()}, ValueError, "exclude"),
        ({"doNext": True, "doLast": True}, ValueError, "exclude"),
    ],
)
def test_splitKeywordsBadValues(
    kw: dict[str, Any], error: type[Exception], match: str
) -> None:
    """
    Bad call-time values are clear errors, raised in the caller.
    """
    with pytest.raises(error, match=match):
        splitKeywords(Accepts.of(plain), "plain", kw)


# Error notes -----------------------------------------------------------------


class LogBroker:
    pass


def setNameValue(self: Any, name: str, value: str) -> None: ...


def test_describeCall() -> None:
    """
    Calls are named as Class.method(args), shortened.
    """
    text = describeCall(LogBroker(), setNameValue, ("url", "x" * 100), {"n": 1})
    assert text.startswith("LogBroker.setNameValue('url', 'xxx")
    assert text.endswith(", n=1)")
    assert len(text) < 100


def test_noteCall() -> None:
    """
    The note is added once; a SQLAlchemy statement error gets it in its
    message too, keeping its type.
    """
    error = KeyError("k")
    noteCall(error, "B.f()")
    noteCall(error, "B.f()")
    assert error.__notes__ == ["in transaction B.f()"]
    integrity = IntegrityError("INSERT ...", {}, Exception("duplicate"))
    noteCall(integrity, "B.g(1)")
    assert "in transaction B.g(1)" in str(integrity)
    assert isinstance(integrity, IntegrityError)


# Registry keys ----------------------------------------------------------------


def test_specOptions() -> None:
    """
    Broker options are taken out of the engine keywords.
    """
    spec = EngineSpec.fromArgs(
        "postgresql://u@h/db", {"connections": 7, "batchSize": 10, "echo": True}
    )
    assert spec.connections == 7 and spec.batchSize == 10
    assert dict(spec.engineKw) == {"echo": True}


@pytest.mark.parametrize(
    ("url", "kw", "match"),
    [
        ("sqlite:///x.db", {"connections": 2}, "one writer"),
        ("postgresql://h/db", {"connections": 0}, "connections"),
        ("postgresql://h/db", {"overflowConnections": -1}, "overflowConnections"),
        ("postgresql://h/db", {"batchSize": 0}, "batchSize"),
    ],
)
def test_specBadOptions(url: str, kw: dict[str, Any], match: str) -> None:
    """
    Bad broker options are clear errors.
    """
    with pytest.raises(ValueError, match=match):
        EngineSpec.fromArgs(url, kw)


def test_keySameURLAndKeywords() -> None:
    """
    Same URL and keywords (in any order, nested dicts too): same key;
    other keywords or URL: another key.
    """
    a = EngineSpec.fromArgs(
        "postgresql://h/db", {"echo": False, "connect_args": {"a": 1, "b": [2]}}
    )
    b = EngineSpec.fromArgs(
        "postgresql://h/db", {"connect_args": {"b": [2], "a": 1}, "echo": False}
    )
    c = EngineSpec.fromArgs("postgresql://h/db", {"echo": True})
    d = EngineSpec.fromArgs("postgresql://h/other", {"echo": False})
    assert a.key == b.key
    assert len({a.key, c.key, d.key}) == 3
    assert EngineSpec.fromArgs("postgresql://h/db", {"connections": 2}).key != a.key


def test_keySQLiteByFile(tmp_path: Any, monkeypatch: Any) -> None:
    """
    SQLite files are keyed by their real path, whatever the keywords: one
    connection per file.
    """
    monkeypatch.chdir(tmp_path)
    relative = EngineSpec.fromArgs("sqlite:///x.db", {})
    absolute = EngineSpec.fromArgs(f"sqlite:///{tmp_path / 'x.db'}", {"echo": True})
    assert relative.key == absolute.key
    memory = EngineSpec.fromArgs("sqlite://", {})
    assert memory.key != EngineSpec.fromArgs("sqlite://", {"echo": True}).key


def test_freezeUnhashable() -> None:
    """
    Unhashable keyword values still make a key.
    """
    assert hash(_freeze({"x": [{"y": {1, 2}}], "z": bytearray(b"a")}))


# Tables ------------------------------------------------------------------------


class Broker:
    indexedValues = ("a",)

    def method(self) -> None: ...


def test_checkTableName() -> None:
    """
    Names of methods, class attributes, instance attributes and private
    names are refused; plain words are fine.
    """
    broker = Broker()
    broker.__dict__["pending"] = {}
    for name, match in [
        ("method", "shadow the method"),
        ("indexedValues", "shadow the attribute"),
        ("pending", "overwrite the attribute"),
        ("_x", "starts with '_'"),
        ("", "non-empty"),
    ]:
        with pytest.raises(TableNameError, match=match):
            checkTableName(broker, name, {})
    checkTableName(broker, "url", {})
    broker.__dict__["url"] = SA.Table("url", SA.MetaData())
    checkTableName(broker, "url", {"url": broker.url})


# Statement cache -----------------------------------------------------------------


def test_statementCache() -> None:
    """
    s(name) selects and reports; s([cols], where) and s(statement) cache;
    s() returns; misuse is a clear error.
    """
    t = SA.table("t", SA.column("id"), SA.column("v"))
    cache = StatementCache()
    with pytest.raises(LookupError, match="no statement name"):
        cache.s()
    assert cache.s("a") is False
    with pytest.raises(LookupError, match="nothing is cached"):
        cache.s()
    cache.s([t.c.id], t.c.v == SA.bindparam("v"))
    assert cache.s("a") is True
    assert "WHERE t.v = :v" in str(cache.s().statement)
    cache.s("b")
    ready = SA.select(t.c.v)
    cache.s(ready)
    assert cache.s().statement is ready
    with pytest.raises(TypeError):
        cache.s(42)
    with pytest.raises(NotInTransaction):
        cache.s().execute()


# Cancelling ----------------------------------------------------------------------


class FakePG:
    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> None:
        self.cancels += 1


def test_cancellerTargetsItsTask() -> None:
    """
    A cancel is sent only while the task it is for runs on the connection.
    """
    target = FakePG()
    canceller = Canceller("postgresql", None)
    canceller.attach(target)
    task: Task[Any] = Task(lambda: None)
    other: Task[Any] = Task(lambda: None)
    canceller.sendCancel(task)
    assert target.cancels == 0
    canceller.enter(task)
    canceller.sendCancel(other)
    assert target.cancels == 0
    canceller.sendCancel(task)
    assert target.cancels == 1
    canceller.leave()
    canceller.sendCancel(task)
    assert target.cancels == 1


def test_cancellerMySQL() -> None:
    """
    On MySQL the cancel is KILL QUERY of the connection's thread id.
    """
    killed: list[int] = []

    class FakeMySQL:
        def thread_id(self) -> int:
            return 42

    canceller = Canceller("mysql", killed.append)
    canceller.attach(FakeMySQL())
    task: Task[Any] = Task(lambda: None)
    canceller.enter(task)
    canceller.sendCancel(task)
    assert killed == [42]


# Row streams ----------------------------------------------------------------------


def test_rowStream() -> None:
    """
    A RowStream hands out the rows of its batches; closing it unstarted
    runs the cleanup the generator never would.
    """

    def batches() -> Any:
        yield [1, 2]
        yield [3]

    assert list(RowStream(batches())) == [1, 2, 3]
    cleaned: list[bool] = []
    stream = RowStream(batches(), lambda: cleaned.append(True))
    stream.close()
    assert cleaned == [True]
    started = RowStream(batches(), lambda: cleaned.append(False))
    assert started.__next__() == 1
    started.close()
    assert cleaned == [True]


def test_rowsInTransactionStoppedBeforeCommit() -> None:
    """
    Rows read inside their transaction end it with COMMIT, unless the
    check before COMMIT refuses (the task was stopped while it still ran:
    the rows fitted in its first batch): then it rolls back, and the
    iteration fails with the check's error.
    """
    engine = SA.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.commit()
            transaction = conn.begin()
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            result = conn.exec_driver_sql("SELECT x FROM t")

            def refuse() -> None:
                raise CancelledError("stopped before COMMIT")

            def leave() -> None:
                if transaction.is_active:
                    transaction.rollback()

            with pytest.raises(CancelledError):
                list(rowsInTransaction(result, transaction, 10, refuse, leave))
            assert not transaction.is_active
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    finally:
        engine.dispose()


def test_grouped() -> None:
    """
    Rows in lists of N, the last one shorter.
    """
    assert list(grouped(iter([1, 2, 3, 4, 5]), 2)) == [[1, 2], [3, 4], [5]]  # type: ignore[arg-type]


# Public names ---------------------------------------------------------------------


def test_exports() -> None:
    """
    sasync exports the real objects its __all__ names.
    """
    import importlib

    broker = importlib.import_module("sasync.broker")
    errors = importlib.import_module("sasync.errors")
    transactModule = importlib.import_module("sasync.transact")
    assert sasync.AccessBroker is broker.AccessBroker
    assert sasync.transact is transactModule.transact
    assert sasync.wait is transactModule.wait
    assert sasync.setup is sasync.connection._engines.setup
    assert sasync.Listener is importlib.import_module("sasync.notifications").Listener
    for name in sasync.__all__:
        obj = getattr(sasync, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert getattr(errors, name) is obj
    assert issubclass(sasync.BrokerStopped, __import__("asynqueue").QueueStopped)


def test_connectionWorkerIsAWorker() -> None:
    """
    ConnectionWorker provides IWorker (without starting a connection).
    """
    from asynqueue.workers import MemoryJobRunner
    from sasync.connection._workers import ConnectionWorker

    engine = SA.create_engine("sqlite://")
    runner = MemoryJobRunner()
    done: list[object] = []
    worker = ConnectionWorker(
        engine,
        holdIterations=False,
        batchSize=10,
        name="w",
        runner=runner,
        callFromThread=lambda f, *a: done.append(f(*a)),
    )
    assert verifyObject(IWorker, worker)
    worker.stop()
    runner.performAll()
    assert runner.quitted
    engine.dispose()


# Streaming policy -------------------------------------------------------------


class FakeHandle:
    guessesReadOnly = False

    def __init__(self, sqlite: bool = False, streams: bool = True) -> None:
        self.isSQLite = sqlite
        self.supportsStreaming = not sqlite
        self.streamsByDefault = streams


def wantsStream(
    handle: FakeHandle, learned: dict[Any, bool], f: Any = plain, **kw: Any
) -> bool:
    from sasync.transact import TransactionCall

    call = TransactionCall(LogBroker(), handle, f, CallOptions(**kw), learned)  # type: ignore[arg-type]
    return call._wantsStream()


def test_streamingPolicy() -> None:
    """
    PostgreSQL streams calls to be iterated, unless the method was seen
    returning no rows; asList/raw never stream; stream= decides; SQLite
    never; MySQL only when asked.
    """
    from sasync.transact import ALWAYS_STREAM

    pg = FakeHandle()
    learned: dict[Any, bool] = {}
    assert wantsStream(pg, learned)
    learned[plain] = False
    assert not wantsStream(pg, learned)
    assert wantsStream(pg, learned, stream=True)
    learned[plain] = True
    assert not wantsStream(pg, learned, asList=True)
    assert not wantsStream(pg, learned, raw=True)
    assert not wantsStream(pg, learned, stream=False)
    assert not wantsStream(FakeHandle(sqlite=True), learned, stream=True)
    mysql = FakeHandle(streams=False)
    assert not wantsStream(mysql, learned)
    assert wantsStream(mysql, learned, stream=True)
    ALWAYS_STREAM.add(namesTimeout)
    try:
        learned[namesTimeout] = False
        assert wantsStream(pg, learned, f=namesTimeout)
    finally:
        ALWAYS_STREAM.discard(namesTimeout)


def test_stoppedTaskStartsNoStatement() -> None:
    """
    Once its task was asked to stop, a transaction can start no statement:
    the engine's execution context refuses it.
    """
    from twisted.internet.defer import CancelledError

    from asynqueue.task import setCurrentTask
    from sasync.connection._engines import _instrument

    engine = SA.create_engine("sqlite://")
    _instrument(engine)
    task: Task[Any] = Task(lambda: None)
    with engine.connect() as conn:
        conn.rollback()
        setCurrentTask(task)
        try:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
            task.requestStop(CancelledError("stop"))
            # SQLAlchemy wraps it; the task's caller sees the stop reason.
            with pytest.raises(SA.exc.StatementError, match="asked to stop") as info:
                conn.exec_driver_sql("SELECT 1")
            assert isinstance(info.value.orig, CancelledError)
        finally:
            setCurrentTask(None)
        assert conn.exec_driver_sql("SELECT 2").scalar() == 2
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://postgres@127.0.0.1/test", "postgresql+psycopg2"),
        ("mysql://root@127.0.0.1/test", "mysql+pymysql"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_defaultDriver(url: str, driver: str) -> None:
    """
    A URL naming no driver gets the one sAsync installs (SQLAlchemy 2.1
    alone would pick psycopg 3 or mysqlclient); a named driver is kept.
    """
    assert EngineSpec.fromArgs(url, {}).url.drivername == driver


def test_defaultDriverSharesHandle() -> None:
    """
    C{postgresql://} and C{postgresql+psycopg2://} name the same engine.
    """
    a = EngineSpec.fromArgs("postgresql://h/db", {})
    b = EngineSpec.fromArgs("postgresql+psycopg2://h/db", {})
    assert a.key == b.key
