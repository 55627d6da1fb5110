"""
SQLAlchemy's pool keywords given to a broker: C{pool_size} and
C{max_overflow} mean the broker's C{connections} and
C{overflowConnections}; the ones that would do nothing are refused with a
message naming what to use; with a pool of the user's choice all of them
go to it. And the C{idleTimeout} option's checks.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.pool import QueuePool

from sasync import AccessBroker
from sasync.connection._engines import DEFAULT_OVERFLOW, EngineSpec

PG = "postgresql://u@h/db"


def test_poolSizeIsConnections() -> None:
    """
    C{pool_size=N} is C{connections=N} and C{max_overflow=M} is
    C{overflowConnections=M}: the same spec, so the same shared engine;
    neither reaches C{create_engine}.
    """
    theirs = EngineSpec.fromArgs(PG, {"pool_size": 6, "max_overflow": 2})
    ours = EngineSpec.fromArgs(PG, {"connections": 6, "overflowConnections": 2})
    assert (theirs.connections, theirs.overflowConnections) == (6, 2)
    assert theirs.engineKw == {}
    assert theirs == ours and theirs.key == ours.key
    onlySize = EngineSpec.fromArgs(PG, {"pool_size": 3})
    assert onlySize.overflowConnections == DEFAULT_OVERFLOW


def test_bothNamesAgreeing() -> None:
    """
    Both names with the same value are fine.
    """
    spec = EngineSpec.fromArgs(PG, {"pool_size": 5, "connections": 5})
    assert spec.connections == 5


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"pool_size": 5, "connections": 3}, ["pool_size=5", "connections=3"]),
        (
            {"max_overflow": 1, "overflowConnections": 0},
            ["max_overflow=1", "overflowConnections=0"],
        ),
        ({"pool_size": 0}, ["pool_size=0", "no limit", "connections"]),
        ({"max_overflow": -1}, ["max_overflow=-1", "overflowConnections"]),
        ({"pool_size": "5"}, ["pool_size must be a positive int"]),
        ({"max_overflow": 1.5}, ["max_overflow must be an int >= 0"]),
        ({"pool_recycle": 3600}, ["pool_recycle=3600", "idleTimeout"]),
        ({"pool_pre_ping": True}, ["pool_pre_ping=True", "leave pool_pre_ping out"]),
        ({"pool_timeout": 30}, ["pool_timeout=30", "timeout=", "maxPending"]),
        ({"pool_use_lifo": True}, ["pool_use_lifo=True"]),
    ],
)
def test_refused(kw: dict[str, Any], words: list[str]) -> None:
    """
    Conflicting names, SQLAlchemy's "no limit" values and pool keywords
    that would do nothing fail with a message naming what was wrong.
    """
    with pytest.raises(ValueError) as caught:
        EngineSpec.fromArgs(PG, kw)
    for word in words:
        assert word in str(caught.value)


def test_sqlitePoolSize() -> None:
    """
    On SQLite, C{pool_size} other than 1 is refused like C{connections},
    naming C{pool_size}.
    """
    assert EngineSpec.fromArgs("sqlite:///x.db", {"pool_size": 1}).connections == 1
    with pytest.raises(ValueError, match="not pool_size=5"):
        EngineSpec.fromArgs("sqlite:///x.db", {"pool_size": 5})


def test_userPoolGetsThemAll() -> None:
    """
    With C{poolclass} (the user chose a pool), the pool keywords are its
    own: passed on unchanged.
    """
    kw = {"poolclass": QueuePool, "pool_size": 8, "pool_recycle": 60}
    spec = EngineSpec.fromArgs(PG, kw)
    assert spec.engineKw == kw
    assert spec.connections is None


@pytest.mark.parametrize("bad", [0, -1, "10", True, float("nan")])
def test_idleTimeoutChecked(bad: Any) -> None:
    """
    C{idleTimeout} is a positive number of seconds or None.
    """
    assert EngineSpec.fromArgs(PG, {"idleTimeout": None}).idleTimeout is None
    assert EngineSpec.fromArgs(PG, {"idleTimeout": 30}).idleTimeout == 30.0
    with pytest.raises(ValueError, match="idleTimeout must be a positive number"):
        EngineSpec.fromArgs(PG, {"idleTimeout": bad})


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"]
)
def test_idleTimeoutInMemory(url: str) -> None:
    """
    An in-memory SQLite database lives only as long as its connection:
    C{idleTimeout} there is refused.
    """
    with pytest.raises(ValueError, match="in-memory SQLite"):
        EngineSpec.fromArgs(url, {"idleTimeout": 5})


def test_idleTimeoutSeparatesEngines() -> None:
    """
    Brokers with different C{idleTimeout}s don't share an engine (its
    workers have one timeout).
    """
    a = EngineSpec.fromArgs(PG, {"idleTimeout": 5})
    assert a.key != EngineSpec.fromArgs(PG, {}).key
    assert a.key == EngineSpec.fromArgs(PG, {"idleTimeout": 5.0}).key


async def test_brokerWithPoolSize(serverURL: str, brokers: Any) -> None:
    """
    A broker made with SQLAlchemy's C{pool_size} (which used to fail inside
    C{create_engine}, naming a NullPool) has that many connections.
    """
    broker = brokers(AccessBroker, serverURL, pool_size=2, max_overflow=1)
    await broker.waitUntilRunning()
    handle = broker._engine
    assert handle.connections == 2
    assert handle.spec.overflowConnections == 1
    assert [tuple(row) for row in await broker.sql("SELECT 1")] == [(1,)]
