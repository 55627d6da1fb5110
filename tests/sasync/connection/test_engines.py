"""
Engine specs, deterministic: broker options taken out of the engine
keywords, registry keys, default drivers, and the execution context that
refuses a statement once its task was asked to stop.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import CancelledError

from asynqueue import Task
from sasync.connection._engines import EngineSpec, _freeze

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


def test_stoppedTaskStartsNoStatement() -> None:
    """
    Once its task was asked to stop, a transaction can start no statement:
    the engine's execution context refuses it.
    """

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


def test_givesWayAroundEachStatement() -> None:
    """
    Before each statement and once its answer has come, the worker thread
    gives way to a reactor that is behind (L{ThreadWorker.giveWay}), so
    that a transaction of many statements does not keep the GIL from it
    throughout; a thread that is no worker's does not.
    """
    from sasync.connection._engines import _instrument
    from sasync.connection._threadstate import state

    class Worker:
        def __init__(self) -> None:
            self.asked = 0

        def giveWay(self) -> bool:
            self.asked += 1
            return False

    engine = SA.create_engine("sqlite://")
    _instrument(engine)
    worker = Worker()
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        state.worker = worker  # type: ignore[assignment]
        try:
            for n in range(3):
                assert conn.execute(SA.text("SELECT :n"), {"n": n}).scalar() == n
        finally:
            state.worker = None
        conn.exec_driver_sql("SELECT 2")
    engine.dispose()
    assert worker.asked == 6


def _countLooks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # The statements the execution context looks at to tell what they are.
    from sasync.connection import _engines

    looks: list[str] = []
    isSelect = _engines._isSelect

    def counted(context: Any) -> bool:
        looks.append(context.unicode_statement)
        return isSelect(context)

    monkeypatch.setattr(_engines, "_isSelect", counted)
    return looks


def test_statementKindOncePerCompiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    What a statement is (a SELECT, a write) is worked out once per compiled
    statement, not per execution; each execution of a write still marks
    the transaction as having written.
    """
    from sasync.connection import _engines
    from sasync.connection._threadstate import state

    looks = _countLooks(monkeypatch)
    engine = SA.create_engine("sqlite://")
    _engines._instrument(engine)
    insert = SA.text("INSERT INTO t (n) VALUES (:n)")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        state.connection = conn
        try:
            for n in range(4):
                state.wrote = False
                conn.execute(insert, {"n": n})
                assert state.wrote
                assert conn.execute(SA.text("SELECT count(*) FROM t")).scalar() == n + 1
        finally:
            state.connection = None
            state.wrote = False
    engine.dispose()
    assert len(looks) == 2


def test_statementKindOncePerDriverSQL(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A statement run without a compiled one (C{exec_driver_sql}) is looked
    at once per SQL string, and still marks each transaction that writes;
    the strings kept are bounded, so SQL made up per call cannot grow them
    without end.
    """
    from sasync.connection import _engines
    from sasync.connection._threadstate import state

    looks = _countLooks(monkeypatch)
    monkeypatch.setattr(_engines, "_driverKinds", {}, raising=False)
    monkeypatch.setattr(_engines, "_DRIVER_KINDS_MAX", 3, raising=False)
    engine = SA.create_engine("sqlite://")
    _engines._instrument(engine)
    insert = "INSERT INTO t (n) VALUES (?)"
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        state.connection = conn
        try:
            for n in range(4):
                state.wrote = False
                conn.exec_driver_sql(insert, (n,))
                assert state.wrote
                state.wrote = False
                assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == n + 1
                assert not state.wrote
            assert looks == [insert, "SELECT count(*) FROM t"]
            for n in range(4):
                conn.exec_driver_sql(f"SELECT {n}")
            assert len(_engines._driverKinds) <= 3
        finally:
            state.connection = None
            state.wrote = False
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
