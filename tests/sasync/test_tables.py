"""
table(): creation, per-table index names, idempotence across restarts and
concurrent brokers, and names that would shadow the broker's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet import defer

from sasync import AccessBroker, TableNameError, transact
from sasync.tables import MAX_NAME, checkTableName, indexName, splitIndexKeywords

from .brokers import LogBroker


def indexesOf(url: str, table: str) -> dict[str, bool]:
    """
    The indexes of C{table}, by name, with whether each is unique (read with
    a separate, synchronous engine).
    """
    engine = SA.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                i["name"]: bool(i["unique"])
                for i in SA.inspect(conn).get_indexes(table)
            }
    finally:
        engine.dispose()


async def test_indexNamesPerTable(dbURL: str, brokers: Any) -> None:
    """
    The seed's unique_value= on two tables gives two indexes, named after
    their tables; index_dt/index_ip are plain indexes.
    """
    broker = brokers(LogBroker, dbURL)
    await broker.waitUntilRunning()
    await broker.shutdown()
    assert indexesOf(dbURL, "url") == {"ux_url_value": True}
    assert indexesOf(dbURL, "vhost") == {"ux_vhost_value": True}
    assert indexesOf(dbURL, "entries") == {
        "ix_entries_dt": False,
        "ix_entries_ip": False,
    }


async def test_restartIdempotent(dbURL: str, brokers: Any) -> None:
    """
    A second broker after the first shut down, on the same database, starts
    without error and sees the first one's rows; nothing is duplicated.
    """
    first = brokers(LogBroker, dbURL)
    ID = await first.setNameValue("url", "/a")
    await first.shutdown()
    second = brokers(LogBroker, dbURL)
    assert await second.setNameValue("url", "/a") == ID
    assert await second.count("url") == 1
    assert indexesOf(dbURL, "url") == {"ux_url_value": True}


async def test_concurrentBrokers(dbURL: str, brokers: Any) -> None:
    """
    Four brokers starting at once on the same database (separate engines on
    the servers: different options) all start, and share the tables.
    """
    many = [brokers(LogBroker, dbURL, batchSize=50 + i) for i in range(4)]
    if not dbURL.startswith("sqlite"):
        assert len({id(b._handle) for b in many}) == 4
    await defer.gatherResults([b.waitUntilRunning() for b in many])
    IDs = [await b.setNameValue("vhost", "example.com") for b in many]
    assert len(set(IDs)) == 1
    assert indexesOf(dbURL, "vhost") == {"ux_vhost_value": True}


async def test_sameURLSharesEngine(dbURL: str, brokers: Any) -> None:
    """
    Brokers with the same URL and options share one engine and queue.
    """
    a = brokers(LogBroker, dbURL)
    b = brokers(LogBroker, dbURL)
    assert a._handle is b._handle
    await defer.gatherResults([a.waitUntilRunning(), b.waitUntilRunning()])


class Raced(AccessBroker):
    """
    A broker with one indexed table, C{raced}.
    """

    async def startup(self) -> None:
        await self.table(
            "raced",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("value", SA.String(40)),
            index_value=["value"],
            unique_pair=["id", "value"],
        )

    @transact
    def add(self, value: str) -> None:
        self.conn.execute(self.raced.insert().values(value=value))

    @transact
    def values(self) -> list[str]:
        return sorted(self.conn.execute(SA.select(self.raced.c.value)).scalars())


class CreateRace:
    """
    Holds the first C{parties} workers about to create the table or index
    C{name} (its existence already checked, found missing) until all are
    there: each then sends its CREATE, and all but one lose the race.
    Listens to every C{target} (C{SA.Table} or C{SA.Index}) until L{stop}.
    """

    def __init__(self, target: type[Any], name: str, parties: int = 2) -> None:
        self.target = target
        self.name = name
        self.parties = parties
        self.arrivals = 0
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(parties, timeout=20)
        SA.event.listen(target, "before_create", self._beforeCreate)

    def stop(self) -> None:
        """
        Stop listening.
        """
        SA.event.remove(self.target, "before_create", self._beforeCreate)

    def _beforeCreate(self, target: Any, connection: Any, **kw: Any) -> None:
        # Worker thread, inside table()'s transaction.
        if target.name != self.name:
            return
        with self._lock:
            self.arrivals += 1
            wait = self.arrivals <= self.parties
        if wait:
            self._barrier.wait()


async def raceToStart(url: str, brokers: Any, race: CreateRace) -> None:
    """
    Two brokers on separate engines (and connections) start at once, both
    held by C{race} before they create: both run and share one table, with
    each index once.
    """
    try:
        both = [brokers(Raced, url, batchSize=50 + i) for i in range(2)]
        assert both[0]._handle is not both[1]._handle
        await defer.gatherResults([b.waitUntilRunning() for b in both])
    finally:
        race.stop()
    assert race.arrivals == 2, f"both brokers were to create {race.name}"
    await both[0].add("a")
    await both[1].add("b")
    assert await both[0].values() == await both[1].values() == ["a", "b"]
    assert indexesOf(url, "raced") == {
        "ix_raced_value": False,
        "ux_raced_pair": True,
    }


@pytest.mark.reactorTimeout(60)
async def test_createTableRaceLost(serverURL: str, brokers: Any) -> None:
    """
    Two brokers that both found the table missing both send CREATE TABLE:
    the loser's error ("already exists", or PostgreSQL's duplicate catalog
    key) is absorbed, both start, and the table has each index once.
    """
    await raceToStart(serverURL, brokers, CreateRace(SA.Table, "raced"))


@pytest.mark.reactorTimeout(60)
async def test_createIndexRaceLost(serverURL: str, brokers: Any) -> None:
    """
    The table exists without its index (made by an older release) and two
    brokers add the index at once: one CREATE INDEX loses, both brokers
    start, and the index is there once.
    """
    older = SA.MetaData()
    SA.Table(
        "raced",
        older,
        SA.Column("id", SA.Integer, primary_key=True),
        SA.Column("value", SA.String(40)),
        SA.Index("ux_raced_pair", "id", "value", unique=True),
    )
    engine = SA.create_engine(serverURL)
    try:
        older.create_all(engine)
    finally:
        engine.dispose()
    await raceToStart(serverURL, brokers, CreateRace(SA.Index, "ix_raced_value"))


class ShadowBroker(AccessBroker):
    def __init__(self, url: str, name: str) -> None:
        super().__init__(url)
        self.tableName = name

    def startup(self) -> Any:
        return self.table(self.tableName, SA.Column("id", SA.Integer, primary_key=True))


@pytest.mark.parametrize(
    "name",
    ["shutdown", "table", "s", "running", "conn", "engine", "_x", "tableName"],
)
async def test_shadowingName(sqliteURL: str, brokers: Any, name: str) -> None:
    """
    A table name that would shadow a method or attribute of the broker is a
    TableNameError, which fails startup (and so waitUntilRunning) clearly.
    """
    broker = brokers(ShadowBroker, sqliteURL, name)
    with pytest.raises(Exception) as info:
        await broker.waitUntilRunning()
    cause = info.value.__cause__
    assert isinstance(cause, TableNameError)
    assert repr(name) in str(cause)


async def test_plainWordsAreFine(sqliteURL: str, brokers: Any) -> None:
    """
    Table names like url, entries, queue, metadata, tables are fine: the
    broker keeps none of those as attributes. (Not engine: that is the
    broker's SQLAlchemy engine.)
    """
    names = [
        "url",
        "queue",
        "metadata",
        "tables",
        "handle",
        "reactor",
        "spec",
    ]

    class Many(AccessBroker):
        async def startup(self) -> None:
            for name in names:
                await self.table(name, SA.Column("id", SA.Integer, primary_key=True))

    broker = brokers(Many, sqliteURL)
    await broker.waitUntilRunning()
    for name in names:
        assert isinstance(getattr(broker, name), SA.Table)


async def test_tableTwice(sqliteURL: str, brokers: Any) -> None:
    """
    Asking for the same table twice in one broker gives the same Table.
    """

    class Twice(AccessBroker):
        async def startup(self) -> None:
            a, b = await defer.gatherResults(
                [
                    self.table("t", SA.Column("id", SA.Integer, primary_key=True)),
                    self.table("t", SA.Column("id", SA.Integer, primary_key=True)),
                ]
            )
            assert a is b
            assert await self.table("t") is a

    broker = brokers(Twice, sqliteURL)
    await broker.waitUntilRunning()


def test_indexName() -> None:
    """
    Index names derive from table and keyword; long ones are cut with a
    stable hash, staying unique.
    """
    assert indexName("url", "value", True) == "ux_url_value"
    assert indexName("entries", "dt", False) == "ix_entries_dt"
    long1 = indexName("t" * 60, "a", False)
    long2 = indexName("t" * 60, "b", False)
    assert len(long1) <= MAX_NAME and len(long2) <= MAX_NAME
    assert long1 != long2


#: (table, keyword name, unique) -> the database name, written out by hand:
#: a database made by one release or process must be found by the next.
GOLDEN_NAMES = {
    ("t" * 60, "a", False): "ix_" + "t" * 49 + "_dac6aa34af",
    ("t" * 60, "b", False): "ix_" + "t" * 49 + "_955ff0f5f0",
    (
        "events_by_customer_and_region_archive",
        "customer_region_created",
        True,
    ): "ux_events_by_customer_and_region_archive_customer_re_b280f0e9c4",
}


def shortened(full: str) -> str:
    """
    The documented rule, computed here without sasync: the first 52
    characters, '_', and the first 10 hex digits of the name's SHA-1.
    """
    return f"{full[:52]}_{hashlib.sha1(full.encode('utf-8')).hexdigest()[:10]}"


def test_indexNameGolden() -> None:
    """
    A long index name is the same fixed string in every process and
    release: the golden names, and the rule recomputed with hashlib.
    """
    for (table, name, unique), expected in GOLDEN_NAMES.items():
        assert indexName(table, name, unique) == expected
        full = f"{'ux' if unique else 'ix'}_{table}_{name}"
        assert len(full) > MAX_NAME
        assert shortened(full) == expected
        assert len(expected) == MAX_NAME


@pytest.mark.parametrize("seed", ["1", "2"])
def test_indexNameAcrossHashSeeds(seed: str) -> None:
    """
    Another interpreter, with its own string hash seed, derives the same
    long index names (else a restart would create every index again).
    """
    script = (
        "import json, sys\n"
        "from sasync.tables import indexName\n"
        "print(json.dumps([indexName(*k) for k in json.loads(sys.argv[1])]))\n"
    )
    keys = list(GOLDEN_NAMES)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(keys)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == [GOLDEN_NAMES[k] for k in keys]


def test_splitIndexKeywords() -> None:
    """
    index_*/unique_* keywords become index specs; the rest stay for Table;
    bad values are clear errors.
    """
    specs, rest = splitIndexKeywords(
        "t", {"index_a": ["x"], "unique_b": ["x", "y"], "mysql_engine": "InnoDB"}
    )
    assert rest == {"mysql_engine": "InnoDB"}
    assert [(s.dbName, s.columns, s.unique) for s in specs] == [
        ("ix_t_a", ("x",), False),
        ("ux_t_b", ("x", "y"), True),
    ]
    assert splitIndexKeywords("t", {"index_a": "x"})[0][0].columns == ("x",)
    with pytest.raises(TypeError, match="list of column names"):
        splitIndexKeywords("t", {"index_a": [1]})
    with pytest.raises(ValueError, match="names no index"):
        splitIndexKeywords("t", {"unique_": ["x"]})


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
