"""
L{sasync.stores.items.Items} on SQLite, PostgreSQL and MySQL/MariaDB: round trips,
groups, persistence, ordering of concurrent writes, shutdown, bad input.
"""

from __future__ import annotations

import datetime
import decimal
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred, DeferredList

from sasync.errors import BrokerStopped
from sasync.stores._storage import MAX_NAME_LENGTH
from sasync.stores.items import Items, Missing
from tests.sasync.stores.storetools import stores


@dataclass
class Point:
    """
    A user class, to show instances round-trip.
    """

    x: int
    y: int


VALUES: dict[str, Any] = {
    "none": None,
    "zero": 0,
    "negative": -17,
    "big": 2**100,
    "float": 1.5,
    "empty": "",
    "unicode": "ünïcødé € 𝄞",
    "bytes": b"\x00\xff binary",
    "list": [1, [2, [3]]],
    "dict": {"a": (1, 2), 3: {"b"}},
    "frozenset": frozenset({1, 2}),
    "date": datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.UTC),
    "decimal": decimal.Decimal("3.14159"),
    "point": Point(3, 4),
    # Past MySQL's 64 KiB BLOB: the value column is a LONGBLOB there.
    "large": b"x" * 300_000,
}


async def test_roundTrip(dbURL: str) -> None:
    """
    Values of many picklable types come back equal, one at a time and all
    at once; names come back sorted.
    """
    items = Items("roundtrip", dbURL)
    async with stores(items):
        for name, value in VALUES.items():
            await items.update(name, value)
        for name, value in VALUES.items():
            assert await items.load(name) == value
        assert await items.loadAll() == VALUES
        assert await items.names() == sorted(VALUES)


async def test_missing(dbURL: str) -> None:
    """
    A name without an item loads as a falsy L{Missing} naming its group
    and name; a stored None is not Missing.
    """
    items = Items(7, dbURL)
    async with stores(items):
        missing = await items.load("nothing")
        assert isinstance(missing, Missing)
        assert not missing
        assert (missing.group, missing.name) == (7, "nothing")
        assert missing == Missing(7, "nothing")
        await items.update("nothing", None)
        assert await items.load("nothing") is None


async def test_updateInsertDelete(dbURL: str) -> None:
    """
    C{update} adds or replaces; C{insert} adds, and fails with
    C{IntegrityError} on an existing name, leaving it unchanged;
    C{delete} removes several names at once and ignores unknown ones;
    C{clear} empties the group.
    """
    items = Items("crud", dbURL)
    async with stores(items):
        await items.update("a", 1)
        await items.update("a", 2)
        await items.insert("b", 3)
        with pytest.raises(IntegrityError):
            await items.insert("b", 4)
        assert await items.loadAll() == {"a": 2, "b": 3}
        await items.update("c", 5)
        await items.delete("a", "b", "unknown")
        assert await items.loadAll() == {"c": 5}
        await items.clear()
        assert await items.loadAll() == {}
        await items.insert("d", 6)
        assert await items.loadAll() == {"d": 6}


async def test_keysAreExact(dbURL: str) -> None:
    """
    Keys differing only in case, trailing spaces or accents are different
    keys on every database (MySQL's default collation would merge them);
    long and non-ASCII keys work.
    """
    names = ["a", "A", "a ", " a", "ä", "\u00e9", "e\u0301", "ß", "ss", "𝄞"]
    names.append("x" * MAX_NAME_LENGTH)
    items = Items("keys", dbURL)
    async with stores(items):
        for i, name in enumerate(names):
            await items.update(name, i)
        loaded = await items.loadAll()
        assert loaded == {name: i for i, name in enumerate(names)}
        for i, name in enumerate(names):
            assert await items.load(name) == i


async def test_groupsAreIsolated(dbURL: str) -> None:
    """
    Stores with different IDs on one database never see each other's
    items, including the int 1 and the str "1"; a new store with the same
    ID sees them.
    """
    a, b, one, oneStr = (Items(ID, dbURL) for ID in ("a", "b", 1, "1"))
    async with stores(a, b, one, oneStr):
        await a.update("k", "from a")
        await b.update("k", "from b")
        await one.update("k", "from 1")
        await oneStr.update("only", "in '1'")
        assert await a.loadAll() == {"k": "from a"}
        assert await b.loadAll() == {"k": "from b"}
        assert await one.loadAll() == {"k": "from 1"}
        assert await oneStr.loadAll() == {"only": "in '1'"}
        await a.delete("k")
        await b.clear()
        assert await one.load("k") == "from 1"
        assert isinstance(await a.load("k"), Missing)
        again = Items("a", dbURL)
        async with stores(again):
            await one.update("other", 1)
            assert await again.names() == []


async def test_persistsAcrossInstances(dbURL: str) -> None:
    """
    Items written before a store's shutdown are there for a new store with
    the same ID.
    """
    items = Items("persist", dbURL)
    await items.update("a", {"deep": [1, 2]})
    await items.update("b", "bee")
    await items.shutdown()
    again = Items("persist", dbURL)
    async with stores(again):
        assert await again.loadAll() == {"a": {"deep": [1, 2]}, "b": "bee"}


async def test_readsSeeEarlierWrites(dbURL: str) -> None:
    """
    A read issued after a write sees it even though reads run at a higher
    priority and the write has not landed; a read issued before a write
    does not.
    """
    items = Items("ryw", dbURL)
    async with stores(items):
        await items.update("k", "old")
        before = items.load("k")
        items.update("k", "new")
        items.update("gone", 1)
        items.delete("gone")
        after = items.load("k")
        everything = items.loadAll()
        names = items.names()
        gone = items.load("gone")
        assert await before == "old"
        assert await after == "new"
        assert await everything == {"k": "new"}
        assert await names == ["k"]
        assert isinstance(await gone, Missing)
        await items.deferToWrites()
        assert await items.loadAll() == {"k": "new"}


@pytest.mark.reactorTimeout(120)
async def test_concurrentWritersToOneKey(dbURL: str) -> None:
    """
    60 writes to one key issued at once, with reads among them: the last
    write issued is the value that lands.
    """
    items = Items("race", dbURL)
    async with stores(items):
        writes: list[Deferred[None]] = []
        reads: list[Deferred[Any]] = []
        for i in range(60):
            writes.append(items.update("k", i))
            if i % 10 == 0:
                reads.append(items.load("k"))
        await DeferredList(writes, fireOnOneErrback=True, consumeErrors=True)
        # Each read saw the last write issued before it.
        assert [await r for r in reads] == [0, 10, 20, 30, 40, 50]
        assert await items.load("k") == 59
        again = Items("race", dbURL)
        async with stores(again):
            assert await again.load("k") == 59


@pytest.mark.reactorTimeout(120)
async def test_concurrentWritersToDistinctKeys(dbURL: str) -> None:
    """
    60 writes to distinct keys, and 60 from a second store on the same
    database, issued at once: none is lost.
    """
    a = Items("many", dbURL)
    b = Items("many-b", dbURL)
    async with stores(a, b):
        writes = [a.update(f"k{i}", i) for i in range(60)]
        writes += [b.update(f"k{i}", -i) for i in range(60)]
        await DeferredList(writes, fireOnOneErrback=True, consumeErrors=True)
        assert await a.loadAll() == {f"k{i}": i for i in range(60)}
        assert await b.loadAll() == {f"k{i}": -i for i in range(60)}


async def test_shutdownWaitsForPendingWrites(dbURL: str) -> None:
    """
    Writes not yet landed when C{shutdown} is called all land before it
    fires; a new store sees them all. Later writes are refused.
    """
    items = Items("pending", dbURL)
    for i in range(100):
        items.update(f"k{i % 30}", i)
    items.delete("k0")
    items.insert("fresh", "yes")
    await items.shutdown()
    with pytest.raises(BrokerStopped):
        items.update("late", 1)
    assert await items.shutdown() is None
    again = Items("pending", dbURL)
    async with stores(again):
        expected = {f"k{i % 30}": i for i in range(100)}
        del expected["k0"]
        expected["fresh"] = "yes"
        assert await again.loadAll() == expected


async def test_brokerShutdownDrainsWrites(dbURL: str) -> None:
    """
    The broker's own shutdown (what runs before the reactor stops) lets
    the store's pending writes land first.
    """
    items = Items("drain", dbURL)
    for i in range(20):
        items.update(f"k{i}", i)
    await items._broker.shutdown()
    again = Items("drain", dbURL)
    async with stores(again):
        assert len(await again.names()) == 20


async def test_reactorShutdownRunsTheDrainingShutdown(dbURL: str) -> None:
    """
    The trigger the broker adds for reactor shutdown calls the store
    broker's own C{shutdown} (which drains pending writes first), not
    C{AccessBroker.shutdown} directly.
    """
    from twisted.internet import reactor

    items = Items("trigger", dbURL)
    async with stores(items):
        # Twisted keeps system event triggers in _eventTriggers.
        triggers = reactor._eventTriggers["shutdown"].before  # type: ignore[attr-defined]
        assert any(f == items._broker.shutdown for f, _, _ in triggers)


async def test_unpicklableValue(dbURL: str) -> None:
    """
    A value that cannot be pickled raises C{TypeError} naming the key, at
    the call, and the stored value stays as it was.
    """
    items = Items("pickle", dbURL)
    async with stores(items):
        await items.update("k", "good")
        for bad in (threading.Lock(), lambda: None, (x for x in ())):
            with pytest.raises(TypeError, match="'k'"):
                items.update("k", bad)
            with pytest.raises(TypeError, match="'new'"):
                items.insert("new", bad)
        assert await items.loadAll() == {"k": "good"}


async def test_mutatingAfterWriteChangesNothing(dbURL: str) -> None:
    """
    The value is pickled at the call: changing it afterwards does not
    change what is stored.
    """
    items = Items("snapshot", dbURL)
    async with stores(items):
        value = [1]
        d = items.update("k", value)
        value.append(2)
        await d
        assert await items.load("k") == [1]


async def test_badKeys(dbURL: str) -> None:
    """
    Unhashable names, and hashable ones without a stable stored form,
    raise C{TypeError} naming them at the call; a NaN or a name too long
    C{ValueError}; bad IDs the same.
    """
    items = Items("bad", dbURL)
    async with stores(items):
        for bad, named in (
            ([1], "list is unhashable"),
            ({"a": 1}, "dict is unhashable"),
            (("t", [1]), r"its part \[1\]"),
            (object(), "object has no stable stored form"),
        ):
            with pytest.raises(TypeError, match=named):
                items.load(bad)
            with pytest.raises(TypeError, match=named):
                items.update(bad, 1)
            with pytest.raises(TypeError, match=named):
                items.insert(bad, 1)
            with pytest.raises(TypeError, match=named):
                items.delete("ok", bad)
        for bad in ("x" * (MAX_NAME_LENGTH + 1), float("nan"), (1, float("nan"))):
            with pytest.raises(ValueError):
                items.update(bad, 1)
        assert await items.names() == []
    for badID in ([1], object()):
        with pytest.raises(TypeError, match=r"unhashable|no stable stored form"):
            Items(badID, dbURL)
    with pytest.raises(ValueError, match="NaN"):
        Items(float("nan"), dbURL)


KEYS: list[Any] = [
    "plain",
    "[1,2]",  # a str that reads like the stored form of (1, 2)
    (1, 2),
    7,
    2**70,
    0.5,
    None,
    b"\x00\xff",
    ("nested", (1, None), frozenset({"a", 3})),
    "nul\x00 inside",
    "lone \ud800 surrogate",
    float("inf"),
]


async def test_anyHashableKeys(dbURL: str) -> None:
    """
    Names may be any supported hashable key, and come back as written, in a
    new store object too; equal keys (1, 1.0, True) are one item, which
    keeps the first key written, as a dict does.
    """
    items = Items(("any", 1), dbURL)
    async with stores(items):
        for i, key in enumerate(KEYS):
            items.update(key, i)
        items.update(True, "first")
        items.update(1.0, "second")
        assert await items.load(1) == "second"
        assert await items.load((1.0, 2.0)) == 2
    again = Items(("any", True), dbURL)
    async with stores(again):
        everything = await again.loadAll()
        assert everything == {**{k: i for i, k in enumerate(KEYS)}, 1: "second"}
        assert [type(k) for k in everything if k == 1] == [bool]
        assert set(await again.names()) == set(everything)
        for i, key in enumerate(KEYS):
            assert await again.load(key) == i
        await again.delete((1.0, 2), 1)
        assert (1, 2) not in await again.loadAll()
        assert isinstance(await again.load(True), Missing)
        assert await again.load("[1,2]") == 1


async def test_earlierRowsReadBack(dbURL: str) -> None:
    """
    Rows the first versions wrote (written here by hand, with their
    digests: SHA-256 of C{"s:"}/C{"i:"} and the ID, and of the str name)
    read back with the same names, and are overwritten, not duplicated.
    """
    import hashlib
    import pickle

    import sqlalchemy as SA

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    first = Items("old", dbURL)
    async with stores(first):
        await first.waitUntilRunning()
    engine = SA.create_engine(dbURL)
    table = SA.Table("sasync_items", SA.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "group_key": sha(f"s:{ID}")
                    if isinstance(ID, str)
                    else sha(f"i:{ID}"),
                    "name_key": sha(name),
                    "name": name,
                    "value": pickle.dumps(value),
                }
                for ID, name, value in [
                    ("old", "a", 1),
                    ("old", "ü", [2]),
                    (42, "b", 3),
                ]
            ],
        )
    engine.dispose()
    old, byInt = Items("old", dbURL), Items(42.0, dbURL)
    async with stores(old, byInt):
        assert await old.loadAll() == {"a": 1, "ü": [2]}
        assert await byInt.names() == ["b"]
        await old.update("a", "new")
        assert await old.loadAll() == {"a": "new", "ü": [2]}


@pytest.mark.reactorTimeout(120)
async def test_manyAtOnce(dbURL: str) -> None:
    """
    Writing and deleting more keys than one statement takes (1,200) in one
    go works.
    """
    items = Items("bulk", dbURL)
    async with stores(items):
        names = [f"n{i:04d}" for i in range(1200)]
        for i, name in enumerate(names):
            items.update(name, i)
        await items.deferToWrites()
        assert len(await items.names()) == 1200
        await items.delete(*names[:1100])
        assert await items.loadAll() == {
            name: 1100 + i for i, name in enumerate(names[1100:])
        }
