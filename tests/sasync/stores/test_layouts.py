"""
The stores open databases of earlier layouts (L{sasync.stores._layouts}):
the original sAsync 0.9's C{sasync_items} (its C{Items} and
C{PersistentDict}) and C{sasync_array}, and this sAsync's first
C{sasync_array}, each built here with plain SQLAlchemy from its schema,
with rows encoded as their writer encoded them.
"""

from __future__ import annotations

import datetime
import hashlib
import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.engine import Engine, Row
from sqlalchemy.pool import NullPool

from sasync.errors import SchemaMismatch, StartupError
from sasync.stores import _layouts, originalHash
from sasync.stores.items import ORIGINAL_ITEMS, Items, ItemsBroker
from sasync.stores.parray import PersistentArray
from sasync.stores.pdict import PersistentDict
from tests.sasync.stores.storetools import stores

#: Pickles as Python 2 wrote them (protocol 2, its str a byte string).
PY2_PICKLES: dict[str, tuple[bytes, Any]] = {
    "py2 str": (b"\x80\x02U\x02OKq\x00.", "OK"),
    "py2 latin": (b"\x80\x02U\x04caf\xe9q\x00.", "caf\xe9"),
    "py2 unicode": (b"\x80\x02X\x05\x00\x00\x00\xc3\xbcn\xc3\xafq\x00.", "ünï"),
    "py2 dict": (
        b"\x80\x02}q\x00(U\x01aq\x01K\x01U\x01bq\x02]q\x03(K\x02K\x03eu.",
        {"a": 1, "b": [2, 3]},
    ),
    "py2 datetime": (
        b"\x80\x02cdatetime\ndatetime\nq\x00U\n\x07\xe8\x02\x1d\x0c\x1e"
        b"\x00\x00\x00\x00q\x01\x85q\x02Rq\x03.",
        datetime.datetime(2024, 2, 29, 12, 30),
    ),
}

#: What a Python 3 port of the original wrote through C{PickleType}.
PY3_VALUES: dict[str, Any] = {
    "foo": "OK",
    "list": [1, (2, 3), {"x": None}],
    "ünïcødé name": 2**80,
}

#: A value no process can unpickle: copied all the same.
GARBAGE = b"not a pickle at all"


@contextmanager
def plainEngine(url: str) -> Iterator[Engine]:
    """
    A plain SQLAlchemy engine on the test's database, disposed after.
    """
    engine = SA.create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def originalItemsTable(metadata: SA.MetaData, name: str = "sasync_items") -> SA.Table:
    """
    The original's C{sasync_items}, as its C{Transactor.startup()} declared
    it.
    """
    return SA.Table(
        name,
        metadata,
        SA.Column("group_id", SA.Integer, primary_key=True),
        SA.Column("name", SA.String(40), primary_key=True),
        SA.Column("value", SA.PickleType, nullable=False),
    )


def makeOriginalItems(url: str, extra: int = 0) -> list[tuple[int, str, bytes]]:
    """
    Write the original's C{sasync_items}: groups 123 and 124 (its tests'
    IDs; its C{Items(ID)} stored C{hash(ID)}, the int itself), and a
    negative one, as a str ID's C{hash()} gave. Values pickled by Python 2,
    by a Python 3 port (C{PickleType}), and one that is no pickle.

    @param extra: this many more rows in group 125.
    @return: every row, as (group_id, name, pickled value).
    """
    rows: list[tuple[int, str, bytes]] = []
    for name, (data, _) in PY2_PICKLES.items():
        rows.append((123, name, data))
    for name, value in PY3_VALUES.items():
        rows.append((123, name, pickle.dumps(value, pickle.HIGHEST_PROTOCOL)))
    rows.append((124, "foo", pickle.dumps("bogus")))
    rows.append((124, "garbage", GARBAGE))
    rows.append((-1791085461, "prefs", pickle.dumps("by a str ID")))
    rows.extend((125, f"n{i:05d}", pickle.dumps(i)) for i in range(extra))
    with plainEngine(url) as engine:
        metadata = SA.MetaData()
        originalItemsTable(metadata)
        metadata.create_all(engine)
        # Written raw: the pickles above are what its PickleType stored.
        raw = SA.Table(
            "sasync_items",
            SA.MetaData(),
            SA.Column("group_id", SA.Integer),
            SA.Column("name", SA.String(40)),
            SA.Column("value", SA.LargeBinary),
        )
        with engine.begin() as conn:
            conn.execute(
                raw.insert(),
                [{"group_id": g, "name": n, "value": v} for g, n, v in rows],
            )
    return rows


def tableState(url: str, name: str) -> tuple[set[str], set[tuple[Any, ...]]]:
    """
    @return: the column names and the rows (values as bytes) of table
        C{name}.
    """
    with plainEngine(url) as engine:
        table = SA.Table(name, SA.MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            rows = {
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in conn.execute(SA.select(table))
            }
        return {c.name for c in table.columns}, rows


def tableNames(url: str) -> set[str]:
    with plainEngine(url) as engine:
        return set(SA.inspect(engine).get_table_names())


def expectedValues() -> dict[str, Any]:
    values = {name: value for name, (_, value) in PY2_PICKLES.items()}
    values.update(PY3_VALUES)
    return values


async def test_originalItems(dbURL: str) -> None:
    """
    C{Items} opens the original's C{sasync_items}: every group's rows are
    copied into the current layout (values byte for byte, even one that is
    no pickle), the original is kept whole as C{sasync_items_sasync09}, and
    the original's int IDs find their items, with Python 2 pickles loading.
    Writing works after, and a restart finds it all again.
    """
    rows = makeOriginalItems(dbURL)
    before = tableState(dbURL, "sasync_items")
    items, other, byHash = (
        Items(123, dbURL),
        Items(124, dbURL),
        Items(-1791085461, dbURL),
    )
    async with stores(items, other, byHash):
        assert await items.loadAll() == expectedValues()
        assert await items.load("py2 latin") == "café"
        assert await byHash.load("prefs") == "by a str ID"
        assert await other.names() == ["foo", "garbage"]
        with pytest.raises(pickle.UnpicklingError):
            await other.load("garbage")
        await items.update("foo", "changed")
        await items.insert("new", 1)
    assert tableState(dbURL, "sasync_items_sasync09") == before
    columns, now = tableState(dbURL, "sasync_items")
    assert columns == {"group_key", "name_key", "name", "value"}
    assert len(now) == len(rows) + 1
    kept = {bytes(row[-1]) for row in now}
    assert {v for g, n, v in rows if (g, n) != (123, "foo")} <= kept
    assert GARBAGE in kept
    again = Items(123.0, dbURL)
    async with stores(again):
        assert (await again.loadAll())["foo"] == "changed"
        assert await again.load("new") == 1
    assert tableNames(dbURL) >= {"sasync_items", "sasync_items_sasync09"}
    assert not any(n.endswith(_layouts.BUILDING_SUFFIX) for n in tableNames(dbURL))


@pytest.mark.parametrize("itemsFirst", [False, True])
async def test_originalPersistentDict(dbURL: str, itemsFirst: bool) -> None:
    """
    The original kept its C{PersistentDict} in C{sasync_items}: our
    C{PersistentDict} fills its own table from there, whether C{Items}
    upgraded the table first (then from the kept original) or not (then
    the original's table is left as it was, for C{Items} to upgrade).
    """
    makeOriginalItems(dbURL)
    before = tableState(dbURL, "sasync_items")
    if itemsFirst:
        items = Items(124, dbURL)
        async with stores(items):
            assert await items.load("foo") == "bogus"
    d = PersistentDict(123, dbURL)
    async with stores(d):
        await d.preload()
        assert dict(d) == expectedValues()
        d["foo"] = "mine"
    original = "sasync_items_sasync09" if itemsFirst else "sasync_items"
    assert tableState(dbURL, original) == before
    items = Items(123, dbURL)
    async with stores(items):
        # Separate from here on: the dict's write is its own.
        assert await items.load("foo") == "OK"
    assert tableState(dbURL, "sasync_items_sasync09") == before


async def test_interruptedUpgrade(dbURL: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    An upgrade that fails half way (after more than one chunk of rows was
    copied) leaves the original table whole, and the store's start-up
    fails; the next start upgrades it with nothing lost.
    """
    rows = makeOriginalItems(dbURL, extra=2 * _layouts.COPY_CHUNK)
    before = tableState(dbURL, "sasync_items")
    copied = 0

    def failing(row: Row[Any]) -> Mapping[str, Any]:
        nonlocal copied
        copied += 1
        if copied > _layouts.COPY_CHUNK + 10:
            raise RuntimeError("power cut")
        return ORIGINAL_ITEMS.convert(row)

    monkeypatch.setattr(
        ItemsBroker, "oldLayouts", (replace(ORIGINAL_ITEMS, convert=failing),)
    )
    items = Items(125, dbURL)
    with pytest.raises(Exception, match="power cut"):
        await items.waitUntilRunning()
    await items.shutdown()
    assert copied > _layouts.COPY_CHUNK
    assert tableState(dbURL, "sasync_items") == before
    assert "sasync_items_sasync09" not in tableNames(dbURL)
    monkeypatch.undo()
    items = Items(125, dbURL)
    async with stores(items):
        assert len(await items.names()) == 2 * _layouts.COPY_CHUNK
        assert await items.load("n01999") == 1999
    assert tableState(dbURL, "sasync_items_sasync09") == before
    assert len(tableState(dbURL, "sasync_items")[1]) == len(rows)


async def test_keptNameTaken(sqliteURL: str) -> None:
    """
    If the name the original table is to be kept under is taken, nothing
    changes and the start-up fails with L{SchemaMismatch} saying so (in
    the broker's L{StartupError}).
    """
    makeOriginalItems(sqliteURL)
    with plainEngine(sqliteURL) as engine:
        metadata = SA.MetaData()
        originalItemsTable(metadata, "sasync_items_sasync09")
        metadata.create_all(engine)
    before = tableState(sqliteURL, "sasync_items")
    items = Items(123, sqliteURL)
    with pytest.raises(StartupError, match=r"'sasync_items_sasync09' .* exists"):
        await items.waitUntilRunning()
    await items.shutdown()
    assert tableState(sqliteURL, "sasync_items") == before


async def test_upgradeSeenHalfwayOutsideLock(
    sqliteURL: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The first look at the tables, outside the migration lock, may catch
    another store's upgrade halfway (MySQL: the old layout, then its kept
    copy, in two looks): that is no L{SchemaMismatch} yet; the look under
    the lock decides, and finds the upgrade done.
    """
    makeOriginalItems(sqliteURL)
    first = Items(123, sqliteURL)
    async with stores(first):
        pass
    plan = _layouts._plan
    looks: list[int] = []

    def halfway(*args: Any, **kw: Any) -> Any:
        looks.append(1)
        if len(looks) == 1:
            raise SchemaMismatch("sasync_items", ["a look halfway"])
        return plan(*args, **kw)

    monkeypatch.setattr(_layouts, "_plan", halfway)
    again = Items(123, sqliteURL)
    async with stores(again):
        assert await again.load("foo") == expectedValues()["foo"]
    assert len(looks) >= 2


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_originalArray(dbURL: str) -> None:
    """
    C{PersistentArray} opens the original's C{sasync_array} (C{hash()} of
    the ID and of each coordinate: the ints themselves), keeping it as
    C{sasync_array_sasync09}.
    """
    with plainEngine(dbURL) as engine:
        metadata = SA.MetaData()
        table = SA.Table(
            "sasync_array",
            metadata,
            SA.Column("group_id", SA.Integer),
            SA.Column("x", SA.Integer),
            SA.Column("y", SA.Integer),
            SA.Column("z", SA.Integer),
            SA.Column("value", SA.PickleType, nullable=False),
        )
        SA.Index(
            "unique_elements",
            table.c.group_id,
            table.c.x,
            table.c.y,
            table.c.z,
            unique=True,
        )
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                table.insert(),
                [
                    {"group_id": 5, "x": 1, "y": 2, "z": 3, "value": "a"},
                    {"group_id": 5, "x": -2, "y": 0, "z": 0, "value": [1]},
                    {"group_id": 6, "x": 1, "y": 2, "z": 3, "value": "other"},
                ],
            )
    before = tableState(dbURL, "sasync_array")
    a, b = PersistentArray(5, dbURL), PersistentArray(6, dbURL)
    async with stores(a, b):
        assert await a.get(1, 2, 3) == "a"
        assert await a.get(-2, 0, 0) == [1]
        assert await b.get(1.0, 2, 3) == "other"
        assert await a.get(0, 0, 0) is None
    assert tableState(dbURL, "sasync_array_sasync09") == before


async def test_firstArray(dbURL: str) -> None:
    """
    C{PersistentArray} opens the table this sAsync's first versions wrote
    (BIGINT coordinates, a digest of C{"s:"}/C{"i:"} and the ID): every
    element is found at the same coordinates, the old table kept as
    C{sasync_array_v1}.
    """
    from sqlalchemy.dialects import mysql

    with plainEngine(dbURL) as engine:
        metadata = SA.MetaData()
        table = SA.Table(
            "sasync_array",
            metadata,
            SA.Column("group_key", SA.String(64), primary_key=True),
            *[
                SA.Column(c, SA.BigInteger, primary_key=True, autoincrement=False)
                for c in "xyz"
            ],
            SA.Column(
                "value",
                SA.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
                nullable=False,
            ),
        )
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                table.insert(),
                [
                    {
                        "group_key": sha("s:rt"),
                        "x": 0,
                        "y": 0,
                        "z": 0,
                        "value": pickle.dumps("origin"),
                    },
                    {
                        "group_key": sha("s:rt"),
                        "x": 2**63 - 1,
                        "y": -(2**63),
                        "z": 7,
                        "value": pickle.dumps({"far": 1}),
                    },
                    {
                        "group_key": sha("i:9"),
                        "x": 1,
                        "y": 1,
                        "z": 1,
                        "value": pickle.dumps(9),
                    },
                ],
            )
    before = tableState(dbURL, "sasync_array")
    a, b = PersistentArray("rt", dbURL), PersistentArray(9, dbURL)
    async with stores(a, b):
        assert await a.get(0, 0, 0) == "origin"
        assert await a.get(2**63 - 1, -(2**63), 7) == {"far": 1}
        assert await b.get(1, 1.0, True) == 9
        await a.set("x", "y", "z", "new")
        assert await a.get("x", "y", "z") == "new"
    assert tableState(dbURL, "sasync_array_v1") == before


async def test_upgradesAtOnce(dbURL: str) -> None:
    """
    Stores on engines of their own starting at once on the original's
    database take turns: one upgrades, the others find it done, and all
    find their items.
    """
    rows = makeOriginalItems(dbURL, extra=3 * _layouts.COPY_CHUNK)
    made = [
        Items(123, dbURL),
        Items(125, dbURL, logging_name="many"),
        Items(124, dbURL, logging_name="other"),
        PersistentDict(124, dbURL, logging_name="dict"),
    ]
    async with stores(*made):
        first, many, other, d = made
        assert await first.loadAll() == expectedValues()
        assert len(await many.names()) == 3 * _layouts.COPY_CHUNK
        assert await other.load("foo") == "bogus"
        assert await d.get("foo") == "bogus"
    assert len(tableState(dbURL, "sasync_items")[1]) == len(rows)
    assert len(tableState(dbURL, "sasync_dict")[1]) == len(rows)
    assert len(tableState(dbURL, "sasync_items_sasync09")[1]) == len(rows)


#: The advisory locks held in the current database (other tests' databases
#: on the same server may hold theirs).
ADVISORY_LOCKS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND database ="
    " (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.mark.parametrize("pooled", [False, True], ids=["direct", "pooled"])
async def test_pooledUpgradeLock(
    postgresqlURL: str, monkeypatch: pytest.MonkeyPatch, pooled: bool
) -> None:
    """
    Behind a transaction-mode pooler (C{pooled=True}) the upgrade's
    migration lock is a transaction's, held on a connection of its own (a
    session lock would stay on whichever server connection the pooler
    lent); on a direct URL it is the upgrading connection's session lock.
    Either way no lock is left once the store runs.
    """
    makeOriginalItems(postgresqlURL)
    held: list[tuple[int, list[int]]] = []
    build = _layouts._build

    def watched(connection: Any, target: SA.Table, plan: Any) -> Any:
        # Worker thread, the lock held: who holds it?
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        holders = connection.exec_driver_sql(ADVISORY_LOCKS + " AND granted").scalars()
        held.append((int(pid), [int(h) for h in holders]))
        return build(connection, target, plan)

    monkeypatch.setattr(_layouts, "_build", watched)
    items = Items(123, postgresqlURL, pooled=pooled)
    async with stores(items):
        assert await items.loadAll() == expectedValues()
        [(pid, holders)] = held
        assert len(holders) == 1
        assert (holders[0] == pid) is not pooled
    with plainEngine(postgresqlURL) as engine, engine.connect() as conn:
        left = conn.exec_driver_sql(ADVISORY_LOCKS).all()
    assert left == []


async def test_originalStrIDs(sqliteURL: str) -> None:
    """
    A group the original stored under a str ID's Python 2 C{hash()} (64
    bits: SQLite held it, the servers' INTEGER did not) is found with
    L{originalHash}, and so is an array element at str coordinates.
    """
    with plainEngine(sqliteURL) as engine:
        metadata = SA.MetaData()
        items = originalItemsTable(metadata)
        array = SA.Table(
            "sasync_array",
            metadata,
            *[SA.Column(c, SA.Integer) for c in ("group_id", "x", "y", "z")],
            SA.Column("value", SA.PickleType, nullable=False),
        )
        metadata.create_all(engine)
        with engine.begin() as conn:
            # Python 2.7's hash("prefs"), hash("a"), hash(("a", 1)).
            conn.execute(
                items.insert(),
                [{"group_id": -1221839637565758149, "name": "color", "value": "blue"}],
            )
            conn.execute(
                array.insert(),
                [
                    {
                        "group_id": -3828833845468547008,
                        "x": 12416037344,
                        "y": 0,
                        "z": 0,
                        "value": "at a",
                    }
                ],
            )
    prefs = Items(originalHash("prefs"), sqliteURL)
    board = PersistentArray(originalHash(("a", 1)), sqliteURL)
    async with stores(prefs, board):
        assert await prefs.loadAll() == {"color": "blue"}
        assert await board.get(originalHash("a"), 0, 0) == "at a"


def test_nameTypeRefused(sqliteURL: str) -> None:
    """
    The original's C{nameType=} is refused with a C{TypeError} saying it is
    gone and why, before anything is made.
    """
    for make in (Items, PersistentDict):
        with pytest.raises(TypeError, match=r"nameType= \(the original sAsync's\)"):
            make(5, sqliteURL, nameType=int)
