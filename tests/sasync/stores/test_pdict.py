"""
L{sasync.stores.pdict.PersistentDict} on SQLite, PostgreSQL and MySQL/MariaDB:
default (deferred) mode, preload mode, lazy writes, and nothing lost.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.pool import NullPool
from twisted.internet.defer import fail

from sasync.errors import BrokerStopped, WritesLost
from sasync.stores.items import Items
from sasync.stores.pdict import NotPreloaded, PersistentDict
from tests.sasync.stores.storetools import stores


async def contents(ID: str, url: str) -> dict[str, Any]:
    """
    What a fresh dict with this ID finds in the database.
    """
    d = PersistentDict(ID, url)
    async with stores(d):
        result: dict[str, Any] = await d.copy()
        return result


async def test_defaultModeReadsAreDeferred(dbURL: str) -> None:
    """
    Without preload, item reads and the dict methods that must read the
    database return Deferreds; a missing key fails with C{KeyError}.
    """
    d = PersistentDict("default", dbURL)
    async with stores(d):
        assert isinstance(d, MutableMapping)
        assert not d.isPreloaded
        d["a"] = 1
        d["b"] = [2]
        assert await d["a"] == 1
        with pytest.raises(KeyError):
            await d["missing"]
        assert await d.get("missing") is None
        assert await d.get("missing", "dflt") == "dflt"
        assert await d.get("b") == [2]
        assert await d.has("a") is True
        assert await d.has("missing") is False
        assert await d.length() == 2
        assert await d.keys() == ["a", "b"]
        assert await d.values() == [1, [2]]
        assert await d.items() == [("a", 1), ("b", [2])]
        assert await d.copy() == {"a": 1, "b": [2]}
        del d["a"]
        del d["never there"]
        assert await d.keys() == ["b"]
        d.update({"c": 3}, e=5)
        assert await d.copy() == {"b": [2], "c": 3, "e": 5}
        await d.deferToWrites()
        assert await contents("default", dbURL) == {"b": [2], "c": 3, "e": 5}


async def test_defaultModeSetdefaultPop(dbURL: str) -> None:
    """
    C{setdefault} keeps an existing value and sets a missing one; C{pop}
    returns the value and deletes it (or the default, or C{KeyError});
    C{popitem} removes some item; C{clear} empties the dict.
    """
    d = PersistentDict("sdp", dbURL)
    async with stores(d):
        d["x"] = "old"
        assert await d.setdefault("x", "new") == "old"
        assert await d.setdefault("y", "why") == "why"
        assert await d.setdefault("z") is None
        assert await d.copy() == {"x": "old", "y": "why", "z": None}
        assert await d.pop("x") == "old"
        assert await d.pop("x", "gone") == "gone"
        with pytest.raises(KeyError):
            await d.pop("x")
        key, value = await d.popitem()
        assert (key, value) in {("y", "why"), ("z", None)}
        d.clear()
        assert await d.length() == 0
        with pytest.raises(KeyError):
            await d.popitem()
        await d.deferToWrites()
        assert await contents("sdp", dbURL) == {}


async def test_defaultModeSyncOperationsNeedPreload(dbURL: str) -> None:
    """
    C{len()}, C{in} and iteration must answer at once: before preload they
    raise L{NotPreloaded} naming the deferred alternative; C{==} is
    identity.
    """
    d = PersistentDict("sync", dbURL)
    async with stores(d):
        with pytest.raises(NotPreloaded, match=r"d\.length\(\)"):
            len(d)
        with pytest.raises(NotPreloaded, match=r"d\.has\(key\)"):
            _ = "a" in d
        with pytest.raises(NotPreloaded, match=r"d\.keys\(\)"):
            list(d)
        assert d == d
        assert d != {}
        await d.preload()
        assert d == {}
        assert len(d) == 0


async def test_preloadMode(dbURL: str) -> None:
    """
    After C{preload}, access is synchronous, like a dict, and writes land
    in the background: C{deferToWrites} fires when they have.
    """
    d = PersistentDict("pre", dbURL)
    async with stores(d):
        d["kept"] = {"v": 1}
        await d.deferToWrites()
        await d.preload()
        assert d.isPreloaded
        assert d["kept"] == {"v": 1}
        d["a"] = 1
        d["b"] = 2
        d["a"] += 10
        del d["b"]
        with pytest.raises(KeyError):
            del d["b"]
        with pytest.raises(KeyError):
            d["b"]
        assert "a" in d and "b" not in d
        assert len(d) == 2
        assert sorted(d) == ["a", "kept"]
        assert dict(d.items()) == {"a": 11, "kept": {"v": 1}}
        assert sorted(d.keys()) == ["a", "kept"]
        assert d.get("nope", 0) == 0
        assert d.setdefault("s", "set") == "set"
        assert d.setdefault("s", "other") == "set"
        assert d.pop("s") == "set"
        assert d.copy() == {"a": 11, "kept": {"v": 1}}
        assert d == {"a": 11, "kept": {"v": 1}}
        assert await d.has("a") is True
        assert await d.length() == 2
        await d.deferToWrites()
        assert await contents("pre", dbURL) == {"a": 11, "kept": {"v": 1}}
        d.clear()
        assert len(d) == 0
        await d.deferToWrites()
        assert await contents("pre", dbURL) == {}


async def test_writesDuringPreloadAreKept(dbURL: str) -> None:
    """
    Writes issued while C{preload} is loading are in the cache it makes
    and in the database.
    """
    d = PersistentDict("during", dbURL)
    async with stores(d):
        for i in range(10):
            d[f"k{i}"] = i
        await d.deferToWrites()
        loading = d.preload()
        d["new"] = "n"
        del d["k0"]
        d["k1"] = "one"
        await loading
        expected = {f"k{i}": i for i in range(2, 10)}
        expected.update(new="n", k1="one")
        assert d.copy() == expected
        await d.deferToWrites()
        assert await contents("during", dbURL) == expected


class ThreadNoted:
    """
    A value that notes the thread it is unpickled in; the one named C{hook}
    runs L{ThreadNoted.onLoad} there first.
    """

    threads: list[int] = []
    onLoad: Any = None

    def __init__(self, name: str) -> None:
        self.name = name

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        ThreadNoted.threads.append(threading.get_ident())
        if self.name == "hook" and ThreadNoted.onLoad is not None:
            ThreadNoted.onLoad()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThreadNoted) and other.name == self.name


async def test_bigPreloadUnpickledInAWorkerThread(
    dbURL: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A preload whose values add up to more than UNPICKLE_INLINE_BYTES is
    unpickled in a worker thread, not the reactor's; a write issued
    meanwhile is still in the cache it makes. Small reads stay inline.
    """
    from twisted.internet import reactor

    from sasync.stores import _store

    reactorThread = threading.get_ident()
    d = PersistentDict("offreactor", dbURL)
    async with stores(d):
        for name in ("a", "b", "hook"):
            d[name] = ThreadNoted(name)
        await d.deferToWrites()

        ThreadNoted.threads = []
        await d.preload()
        assert ThreadNoted.threads == [reactorThread] * 3

        monkeypatch.setattr(_store, "UNPICKLE_INLINE_BYTES", 0)
        written = threading.Event()

        def writeLate() -> None:
            d["late"] = "during the unpickling"
            written.set()

        def onLoad() -> None:
            # Worker thread: have the reactor issue a write, and wait for it.
            reactor.callFromThread(writeLate)  # type: ignore[attr-defined]
            assert written.wait(10)

        monkeypatch.setattr(ThreadNoted, "onLoad", staticmethod(onLoad))
        ThreadNoted.threads = []
        await d.preload()
        assert len(ThreadNoted.threads) == 3
        assert reactorThread not in ThreadNoted.threads
        assert d.copy() == {
            "a": ThreadNoted("a"),
            "b": ThreadNoted("b"),
            "hook": ThreadNoted("hook"),
            "late": "during the unpickling",
        }
        await d.deferToWrites()
        assert (await contents("offreactor", dbURL))["late"] == "during the unpickling"


@pytest.mark.reactorTimeout(120)
async def test_concurrentWriters(dbURL: str) -> None:
    """
    60 lazy writes to one key and 60 to distinct keys, all at once: the
    last write to the key wins and no key is lost.
    """
    d = PersistentDict("race", dbURL)
    async with stores(d):
        await d.preload()
        for i in range(60):
            d["one"] = i
            d[f"k{i}"] = i
        await d.deferToWrites()
        expected = {f"k{i}": i for i in range(60)}
        expected["one"] = 59
        assert d.copy() == expected
        assert await contents("race", dbURL) == expected


async def test_shutdownLosesNothing(dbURL: str) -> None:
    """
    Lazy writes still pending when C{shutdown} is called all land before
    it fires; later writes are refused.
    """
    d = PersistentDict("shut", dbURL)
    await d.preload()
    for i in range(200):
        d[f"k{i % 50}"] = i
    del d["k0"]
    await d.shutdown()
    with pytest.raises(BrokerStopped):
        d["late"] = 1
    expected = {f"k{i % 50}": i for i in range(200)}
    del expected["k0"]
    assert await contents("shut", dbURL) == expected


async def test_unpicklableValue(dbURL: str) -> None:
    """
    A value that cannot be pickled raises C{TypeError} naming the key at
    the call, in either mode, and neither the cache nor the database
    changes.
    """
    d = PersistentDict("pickle", dbURL)
    async with stores(d):
        d["k"] = "good"
        with pytest.raises(TypeError, match="'k'"):
            d["k"] = threading.Lock()
        with pytest.raises(TypeError, match="'n'"):
            d.setdefault("n", lambda: None)
        assert await d["k"] == "good"
        await d.preload()
        with pytest.raises(TypeError, match="'k'"):
            d["k"] = threading.Lock()
        with pytest.raises(TypeError, match="'n'"):
            d.setdefault("n", lambda: None)
        assert d.copy() == {"k": "good"}
        await d.deferToWrites()
        assert await contents("pickle", dbURL) == {"k": "good"}


async def test_badKeys(dbURL: str) -> None:
    """
    Unhashable keys, and keys without a stable stored form, raise
    C{TypeError} naming them at the call, in either mode.
    """
    d = PersistentDict("bad", dbURL)
    async with stores(d):
        for preloaded in (False, True):
            if preloaded:
                await d.preload()
            for bad, named in (([1], "unhashable"), (object(), "no stable")):
                with pytest.raises(TypeError, match=named):
                    d[bad]
                with pytest.raises(TypeError, match=named):
                    d[bad] = 1
                with pytest.raises(TypeError, match=named):
                    del d[bad]
                with pytest.raises(TypeError, match=named):
                    d.get(bad)
                with pytest.raises(TypeError, match=named):
                    d.has(bad)
            with pytest.raises(TypeError, match="unhashable"):
                _ = [1] in d
        assert len(d) == 0


async def test_anyHashableKeys(dbURL: str) -> None:
    """
    Keys may be ints, tuples, None, bytes...: they meet again after a
    restart (a new dict object), and equal keys are one, as in a dict.
    """
    keys: list[Any] = [1, (2, "b"), None, b"c", frozenset({1, 2}), "s", 2.5]
    d = PersistentDict(("dict", 1), dbURL)
    async with stores(d):
        for i, key in enumerate(keys):
            d[key] = i
        d[1.0] = "one"
        assert await d[True] == "one"
    again = PersistentDict(("dict", 1.0), dbURL)
    async with stores(again):
        await again.preload()
        assert dict(again) == {**{k: i for i, k in enumerate(keys)}, 1: "one"}
        assert (2.0, "b") in again and True in again and "1" not in again
        assert await again.length() == len(keys)


async def test_failedWriteIsReported(dbURL: str) -> None:
    """
    A background write that fails is reported by C{deferToWrites}, with a
    L{WritesLost} naming its key and carrying its error, and again by every
    later call (and by C{shutdown}) until a later write of the key is
    stored. An error that is not the database's own is not retried.
    """
    d = PersistentDict("fail", dbURL)
    async with stores(d):
        await d.waitUntilRunning()
        broker = d._items._broker
        real = broker.writeUnit
        broker.writeUnit = lambda *a, **kw: fail(RuntimeError("disk on fire"))  # type: ignore[method-assign]
        d["k"] = 1
        d["j"] = 1
        for _ in range(2):
            with pytest.raises(WritesLost, match="disk on fire") as caught:
                await d.deferToWrites()
            assert sorted(caught.value.keys) == ["j", "k"]
            assert isinstance(caught.value.errors["k"], RuntimeError)
            assert "PersistentDict 'fail'" in str(caught.value)
        broker.writeUnit = real  # type: ignore[method-assign]
        d["k"] = 2
        with pytest.raises(WritesLost) as caught:
            await d.deferToWrites()
        assert caught.value.keys == ["j"]
        del d["j"]
        await d.deferToWrites()
        assert await d["k"] == 2


async def test_separateFromItems(dbURL: str) -> None:
    """
    A PersistentDict and an Items store with the same ID use separate
    tables and never see each other.
    """
    d = PersistentDict("same", dbURL)
    items = Items("same", dbURL)
    async with stores(d, items):
        d["k"] = "dict"
        await items.update("k", "items")
        await d.deferToWrites()
        assert await d["k"] == "dict"
        assert await items.load("k") == "items"


async def test_refusedValueSparesItsNeighbour(mysqlURL: str) -> None:
    """
    MySQL/MariaDB close the connection on a value over C{max_allowed_packet}
    (every time it is sent): that write alone is reported, and the valid
    write queued in the same batch is stored. C{deferToWrites()} fails
    naming only it, at every call, and so does C{shutdown()}. Before the
    fix the neighbour was dropped with it, visible only in the log.
    """
    engine = SA.create_engine(mysqlURL, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            limit = int(
                conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one()
            )
    finally:
        engine.dispose()
    if limit > 200_000_000:
        pytest.skip(f"max_allowed_packet is {limit}: too big a value to send")
    size = max(20_000_000, limit + 1_000_000)
    d = PersistentDict("big", mysqlURL)
    try:
        await d.waitUntilRunning()
        # Runs at once, so that the next two writes share one batch.
        d["before"] = 1
        d["big"] = "z" * size
        d["after"] = 2
        for _ in range(2):
            with pytest.raises(WritesLost) as caught:
                await d.deferToWrites()
            assert caught.value.keys == ["big"]
            notes = getattr(caught.value.errors["big"], "__notes__", [])
            assert "max_allowed_packet" in " ".join(notes)
        assert d._items._lander.split >= 1
        assert await d.get("after") == 2
        assert await d.has("big") is False
    finally:
        with pytest.raises(WritesLost, match="'big'"):
            await d.shutdown()
    assert await contents("big", mysqlURL) == {"before": 1, "after": 2}


def test_badWriteRetryTime(tmp_path: Any) -> None:
    """
    C{writeRetryTime} must be a number of seconds >= 0: anything else is
    refused at construction, naming it, before any engine is made.
    """
    url = f"sqlite:///{tmp_path}/never.db"
    for bad in (-1, "5", None, True, float("inf")):
        with pytest.raises(ValueError, match="writeRetryTime"):
            PersistentDict("x", url, writeRetryTime=bad)
        with pytest.raises(ValueError, match="writeRetryTime"):
            Items("x", url, writeRetryTime=bad)
    assert not (tmp_path / "never.db").exists()
