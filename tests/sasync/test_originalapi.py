"""
The original sAsync's spellings (issue 20): its modules re-export with a
warning or fail naming the replacement; C{AccessBroker(url, verbose=,
spew=)}; the public, read-only C{broker.engine} and the deprecated
C{broker.q.engine} and C{broker.singleton}; C{selex} with a callable making
the statement. Real databases.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet import defer

import sasync
from asynqueue.moved import Gone
from sasync import AccessBroker, transact


def _moved(module: str, name: str) -> tuple[object, str]:
    # The object and the one warning a lookup gives.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(importlib.import_module(module), name)
    [warning] = caught
    assert warning.category is DeprecationWarning
    return value, str(warning.message)


@pytest.mark.parametrize(
    ("module", "name", "new"),
    [
        ("sasync.database", "AccessBroker", "sasync.AccessBroker"),
        ("sasync.database", "transact", "sasync.transact"),
        ("sasync.database", "wait", "sasync.wait"),
        ("sasync.items", "Items", "sasync.Items"),
        ("sasync.items", "Missing", "sasync.Missing"),
        ("sasync.parray", "PersistentArray", "sasync.PersistentArray"),
        ("sasync", "engine", "sasync.setup"),
    ],
)
def test_movedNames(module: str, name: str, new: str) -> None:
    """
    Each of the original's names is the real object, with a warning naming
    the new spelling.
    """
    value, message = _moved(module, name)
    assert value is getattr(sasync, new.split(".")[1])
    assert (
        message == f"{module}.{name} is deprecated: use {new} (see docs/originals.md)"
    )


@pytest.mark.parametrize(
    ("module", "name", "hint"),
    [
        ("sasync.database", "SA", "import sqlalchemy as SA"),
        ("sasync.queue", "Factory", "sasync.setup"),
        ("sasync.selex", "SelectAndResultHolder", "broker.selex"),
        ("sasync.errors", "TransactionError", "IntegrityError"),
        ("sasync.errors", "AsyncError", "WrongThread"),
        ("sasync.items", "Transactor", "internal"),
    ],
)
def test_goneNames(module: str, name: str, hint: str) -> None:
    """
    A name that did not come back fails (as C{from ... import} too) with
    an error naming what to use.
    """
    with pytest.raises(Gone, match=hint):
        exec(f"from {module} import {name}", {})
    assert not hasattr(importlib.import_module(module), "noSuchName")


class Entries(AccessBroker):
    """
    One table, and transactions deleting with C{selex(table.delete)}.
    """

    async def startup(self) -> None:
        await self.table(
            "entries",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("n", SA.Integer),
        )

    @transact
    def fill(self, count: int) -> None:
        self.conn.execute(self.entries.insert(), [{"n": i} for i in range(count)])

    @transact
    def deleteBelow(self, n: int) -> int:
        with self.selex(self.entries.delete) as sh:
            sh.where(self.entries.c.n < n)
        return int(sh().rowcount)

    @transact
    def count(self) -> int:
        return int(self.conn.execute(SA.text("SELECT COUNT(*) FROM entries")).scalar())


async def test_selexCallable(dbURL: str, brokers: Any) -> None:
    """
    C{selex(table.delete)} holds the delete the callable makes: its
    C{where} narrows it, inside a transaction or (a Deferred) outside.
    """
    broker = brokers(Entries, dbURL)
    await broker.fill(10)
    assert await broker.deleteBelow(3) == 3
    with broker.selex(broker.entries.delete) as sh:
        sh.where(broker.entries.c.n >= 8)
    result = await sh()
    assert result.rowcount == 2
    assert await broker.count() == 5
    with broker.selex(broker.entries.delete()) as sh:
        sh.where(broker.entries.c.n == 5)
    await sh()
    assert await broker.count() == 4


def test_selexCallableNotAStatement() -> None:
    """
    A callable that does not make a statement is refused, naming what it
    returned.
    """
    from sasync.statements import selectHolder

    with pytest.raises(TypeError, match="returned 3, not a statement"):
        next(selectHolder(lambda *a, **k: defer.succeed(None), (lambda: 3,), {}))


async def test_engine(dbURL: str, brokers: Any) -> None:
    """
    C{broker.engine} is the SQLAlchemy engine (URL, dialect), read-only;
    the deprecated C{q.engine} is the same, and C{singleton} says SQLite.
    """
    broker = brokers(Entries, dbURL)
    await broker.waitUntilRunning()
    engine = broker.engine
    assert isinstance(engine, SA.Engine)
    assert engine.url.render_as_string() == SA.make_url(dbURL).render_as_string()
    dialect = engine.dialect.name
    assert dbURL.startswith(dialect)
    with pytest.raises(AttributeError):
        broker.engine = None
    with pytest.warns(DeprecationWarning, match="use broker.engine"):
        q = broker.q
    assert q.engine is engine
    with pytest.raises(Gone, match="deferToQueue"):
        q.call(len, [])
    with pytest.warns(DeprecationWarning, match="dialect.name"):
        assert broker.singleton is (dialect == "sqlite")


async def test_verboseSpew(brokers: Any) -> None:
    """
    The original's C{verbose} and C{spew} are accepted with a warning each:
    C{spew=True} turns on SQLAlchemy's echo (unless C{echo} is given).
    (In-memory SQLite: brokers of one SQLite file share its first engine.)
    """
    url = "sqlite://"
    with pytest.warns(DeprecationWarning) as caught:
        quiet = brokers(Entries, url, verbose=True, spew=False)
        loud = brokers(Entries, url, spew=True)
        chosen = brokers(Entries, url, spew=True, echo=False)
    messages = [str(w.message) for w in caught]
    assert any(
        m.startswith("AccessBroker(verbose=...) is deprecated") for m in messages
    )
    assert any("echo=True" in m for m in messages)
    # They point at the user's code making the broker (here this test: the
    # brokers fixture is sAsync's own, sasync.testing).
    assert all(w.filename == __file__ for w in caught), [w.filename for w in caught]
    await loud.waitUntilRunning()
    assert not quiet.engine.echo
    assert loud.engine.echo is True
    assert chosen.engine.echo is False


def test_verboseNotABool() -> None:
    """
    C{verbose} and C{spew} must be bools; the error names the keyword.
    """
    with pytest.raises(TypeError, match=r"spew='yes'"):
        AccessBroker("sqlite://", spew="yes")


async def test_engineUnderProcesses(postgresqlURL: str, brokers: Any) -> None:
    """
    Under C{processes=N} the parent has no engine: C{broker.engine} says
    so; C{singleton} still answers (from the URL).
    """
    from sasync import NotSupported
    from tests.sasync.multicore.brokers import MultiBroker

    broker = brokers(MultiBroker, postgresqlURL, processes=1)
    with pytest.raises(NotSupported, match="processes=N"):
        broker.engine  # noqa: B018
    with pytest.warns(DeprecationWarning):
        assert broker.singleton is False
    await broker.waitUntilRunning()
