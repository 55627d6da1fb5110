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
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet import defer

from sasync import AccessBroker, TableNameError
from sasync.tables import MAX_NAME, indexName, splitIndexKeywords

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


class ShadowBroker(AccessBroker):
    def __init__(self, url: str, name: str) -> None:
        super().__init__(url)
        self.tableName = name

    def startup(self) -> Any:
        return self.table(self.tableName, SA.Column("id", SA.Integer, primary_key=True))


@pytest.mark.parametrize(
    "name", ["shutdown", "table", "s", "running", "conn", "_x", "tableName"]
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
    Table names like url, entries, engine, queue, metadata, tables are fine:
    the broker keeps none of those as attributes.
    """
    names = [
        "url",
        "engine",
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
