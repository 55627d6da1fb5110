"""
L{sasync.stores.parray.PersistentArray} on SQLite, PostgreSQL and MySQL/MariaDB.
"""

from __future__ import annotations

import threading

import pytest
from twisted.internet.defer import Deferred, DeferredList

from sasync.errors import BrokerStopped
from sasync.stores.parray import PersistentArray
from tests.sasync.stores.storetools import stores


async def test_roundTrip(dbURL: str) -> None:
    """
    Elements come back as set, at any int coordinates (past 64 bits too);
    unset elements are None; C{set} overwrites; C{delete} unsets.
    """
    a = PersistentArray("rt", dbURL)
    async with stores(a):
        corners = [
            (0, 0, 0),
            (1, 2, 3),
            (-5, 0, 7),
            (2**63 - 1, -(2**63), 0),
            (2**100, -(2**100), 2**63),
        ]
        for i, (x, y, z) in enumerate(corners):
            await a.set(x, y, z, {"i": i, "at": (x, y, z)})
        for i, (x, y, z) in enumerate(corners):
            assert await a.get(x, y, z) == {"i": i, "at": (x, y, z)}
        assert await a.get(3, 2, 1) is None
        await a.set(1, 2, 3, "again")
        assert await a.get(1, 2, 3) == "again"
        await a.delete(1, 2, 3)
        assert await a.get(1, 2, 3) is None
        await a.delete(9, 9, 9)


async def test_clearAndIsolation(dbURL: str) -> None:
    """
    Arrays with different IDs are separate; C{clear} empties only its own.
    """
    a = PersistentArray("a", dbURL)
    b = PersistentArray("b", dbURL)
    async with stores(a, b):
        await a.set(0, 0, 0, "a0")
        await a.set(1, 0, 0, "a1")
        await b.set(0, 0, 0, "b0")
        assert await a.get(0, 0, 0) == "a0"
        assert await b.get(0, 0, 0) == "b0"
        await a.clear()
        assert await a.get(0, 0, 0) is None
        assert await a.get(1, 0, 0) is None
        assert await b.get(0, 0, 0) == "b0"
        await a.set(2, 2, 2, "after clear")
        assert await a.get(2, 2, 2) == "after clear"


async def test_persistsAcrossInstances(dbURL: str) -> None:
    """
    Elements written before shutdown are there for a new array with the
    same ID.
    """
    a = PersistentArray(42, dbURL)
    await a.set(1, 1, 1, [1, 1, 1])
    await a.shutdown()
    again = PersistentArray(42, dbURL)
    async with stores(again):
        assert await again.get(1, 1, 1) == [1, 1, 1]


async def test_readsSeeEarlierWrites(dbURL: str) -> None:
    """
    A C{get} issued after a C{set}, C{delete} or C{clear} sees it, though
    the write has not landed yet.
    """
    a = PersistentArray("ryw", dbURL)
    async with stores(a):
        await a.set(0, 0, 0, "old")
        a.set(0, 0, 0, "new")
        assert await a.get(0, 0, 0) == "new"
        a.delete(0, 0, 0)
        assert await a.get(0, 0, 0) is None
        a.set(1, 1, 1, "one")
        a.clear()
        cleared = a.get(1, 1, 1)
        a.set(2, 2, 2, "two")
        assert await cleared is None
        assert await a.get(2, 2, 2) == "two"


@pytest.mark.reactorTimeout(120)
async def test_concurrentWriters(dbURL: str) -> None:
    """
    60 writes to one element issued at once: the last one lands. 60 writes
    to distinct elements: none is lost.
    """
    a = PersistentArray("race", dbURL)
    async with stores(a):
        writes: list[Deferred[None]] = [a.set(0, 0, 0, i) for i in range(60)]
        writes += [a.set(i, -i, i * i, i) for i in range(1, 61)]
        await DeferredList(writes, fireOnOneErrback=True, consumeErrors=True)
        again = PersistentArray("race", dbURL)
        async with stores(again):
            assert await again.get(0, 0, 0) == 59
            for i in range(1, 61):
                assert await again.get(i, -i, i * i) == i


async def test_shutdownWaitsForPendingWrites(dbURL: str) -> None:
    """
    Writes pending at C{shutdown} all land; later ones are refused.
    """
    a = PersistentArray("pending", dbURL)
    for i in range(50):
        a.set(i % 10, 0, 0, i)
    a.delete(0, 0, 0)
    await a.shutdown()
    with pytest.raises(BrokerStopped):
        a.set(0, 0, 0, 1)
    again = PersistentArray("pending", dbURL)
    async with stores(again):
        assert await again.get(0, 0, 0) is None
        for x in range(1, 10):
            assert await again.get(x, 0, 0) == 40 + x


async def test_badInput(dbURL: str) -> None:
    """
    Unhashable coordinates, and hashable ones without a stable stored
    form, raise C{TypeError} naming them; a NaN C{ValueError}; unpicklable
    values C{TypeError}: all at the call, changing nothing.
    """
    a = PersistentArray("bad", dbURL)
    async with stores(a):
        await a.set(0, 0, 0, "kept")
        for bad, named in (([1], r"\[1\]"), ({"k": 1}, "dict"), (object(), "object")):
            with pytest.raises(TypeError, match=named):
                a.get(bad, 0, 0)
            with pytest.raises(TypeError, match=named):
                a.set(0, bad, 0, 1)
            with pytest.raises(TypeError, match=named):
                a.delete(0, 0, bad)
        with pytest.raises(ValueError, match="NaN"):
            a.set(float("nan"), 0, 0, 1)
        with pytest.raises(TypeError, match=r"\(0, 0, 0\)"):
            a.set(0, 0, 0, threading.Lock())
        assert await a.get(0, 0, 0) == "kept"


async def test_anyHashable(dbURL: str) -> None:
    """
    Coordinates may be any supported key; equal coordinates (1, 1.0,
    True) are one element, and they meet again in a new store object.
    """
    a = PersistentArray(("board", 7), dbURL)
    async with stores(a):
        a.set("a", None, (1, "b"), "first")
        a.set(1, 2.5, frozenset({"x", "y"}), "second")
        a.set(b"\x00", -0.0, 0, "third")
        assert await a.get(True, 2.5, frozenset({"y", "x"})) == "second"
        assert await a.get(b"\x00", 0, False) == "third"
        assert await a.get("a", None, (1.0, "b")) == "first"
    b = PersistentArray(("board", 7.0), dbURL)
    async with stores(b):
        assert await b.get("a", None, (True, "b")) == "first"
        assert await b.get(1.0, 2.5, frozenset({"x", "y"})) == "second"
        assert await b.get(b"\x00", 0.0, 0) == "third"
        assert await b.get("1", 2.5, frozenset({"x", "y"})) is None
        await b.set(1, 2.5, frozenset({"x", "y"}), "changed")
        assert await b.get(True, 2.5, frozenset({"x", "y"})) == "changed"


@pytest.mark.reactorTimeout(120)
async def test_manyAtOnce(dbURL: str) -> None:
    """
    Setting and deleting more elements than one statement takes (1,200)
    in one go works.
    """
    a = PersistentArray("bulk", dbURL)
    async with stores(a):
        for i in range(1200):
            a.set(i, i % 7, -i, i)
        await a.deferToWrites()
        for i in range(1100):
            a.delete(i, i % 7, -i)
        await a.deferToWrites()
        assert await a.get(5, 5, -5) is None
        assert await a.get(1150, 1150 % 7, -1150) == 1150
        again = PersistentArray("bulk", dbURL)
        async with stores(again):
            assert len(await again._readKeys()) == 100
