"""
table() on a table that exists: additive evolution (columns and indexes
added, rows kept, idempotent, race-free), and every other difference a
SchemaMismatch naming it, on SQLite, PostgreSQL and MySQL/MariaDB.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as SA
from sqlalchemy.dialects import mysql, postgresql, sqlite
from twisted.internet import defer

from sasync import (
    AccessBroker,
    MigrationFailed,
    SchemaMismatch,
    StartupError,
    transact,
)
from sasync._evolve import sqliteAffinity, typeDifference
from sasync.tables import defineTable

from .test_tables import indexesOf

Columns = Callable[[], list[Any]]


def declared(columns: Columns, **kw: Any) -> type[AccessBroker]:
    """
    A broker class whose startup() declares table C{t} with fresh
    C{columns()} and the keywords C{kw}.
    """

    class Declared(AccessBroker):
        async def startup(self) -> None:
            await self.table("t", *columns(), **kw)

        @transact
        def rows(self) -> list[dict[str, Any]]:
            query = SA.select(self.t).order_by(self.t.c.id)
            return [dict(r._mapping) for r in self.conn.execute(query)]

        @transact
        def add(self, **values: Any) -> None:
            self.conn.execute(self.t.insert().values(**values))

    return Declared


def v1() -> list[Any]:
    """
    The first release's table: an id and a name.
    """
    return [
        SA.Column("id", SA.Integer, primary_key=True),
        SA.Column("name", SA.String(20)),
    ]


def v2() -> list[Any]:
    """
    The next release's: a nullable column and a NOT NULL one with a server
    default added.
    """
    return [
        *v1(),
        SA.Column("note", SA.String(30)),
        SA.Column("level", SA.Integer, nullable=False, server_default="7"),
    ]


V2_INDEXES = {"index_note": ["note"], "unique_name": ["name"]}


def columnsOf(url: str, table: str = "t") -> list[str]:
    """
    The column names of C{table}, read with a synchronous engine.
    """
    engine = SA.create_engine(url)
    try:
        with engine.connect() as conn:
            return [c["name"] for c in SA.inspect(conn).get_columns(table)]
    finally:
        engine.dispose()


async def startV1(url: str, brokers: Any, names: list[str | None]) -> None:
    """
    Make table C{t} as the first release did, with rows of C{names}.
    """
    old = brokers(declared(v1, index_name=["name"]), url)
    for name in names:
        await old.add(name=name)
    await old.shutdown()


async def mismatch(broker: AccessBroker) -> SchemaMismatch:
    """
    The SchemaMismatch that failed C{broker}'s start-up.
    """
    with pytest.raises(StartupError) as info:
        await broker.waitUntilRunning()
    cause = info.value.__cause__
    assert isinstance(cause, SchemaMismatch), repr(cause)
    assert "docs/schema.md" in str(cause)
    return cause


async def test_addsColumnsAndIndexes(dbURL: str, brokers: Any) -> None:
    """
    The next release's broker adds a nullable column, a server-defaulted
    NOT NULL one and two indexes to the existing table; its rows are kept
    (the new columns NULL and the default); a restart changes nothing.
    """
    await startV1(dbURL, brokers, ["a", "b"])
    new = brokers(declared(v2, index_name=["name"], **V2_INDEXES), dbURL)
    rows = await new.rows()
    assert [(r["name"], r["note"], int(r["level"])) for r in rows] == [
        ("a", None, 7),
        ("b", None, 7),
    ]
    await new.add(name="c", note="x")
    await new.shutdown()
    assert columnsOf(dbURL) == ["id", "name", "note", "level"]
    expected = {"ix_t_name": False, "ix_t_note": False, "ux_t_name": True}
    assert indexesOf(dbURL, "t") == expected
    again = brokers(declared(v2, index_name=["name"], **V2_INDEXES), dbURL)
    assert len(await again.rows()) == 3
    assert indexesOf(dbURL, "t") == expected


async def test_concurrentEvolution(dbURL: str, brokers: Any) -> None:
    """
    Four brokers of the next release (separate engines on the servers)
    start at once on the old table: all start, each column and index is
    there once, and the rows are kept.
    """
    await startV1(dbURL, brokers, ["a"])
    cls = declared(v2, **V2_INDEXES)
    many = [brokers(cls, dbURL, batchSize=50 + i) for i in range(4)]
    await defer.gatherResults([b.waitUntilRunning() for b in many])
    assert columnsOf(dbURL) == ["id", "name", "note", "level"]
    assert [r["name"] for r in await many[3].rows()] == ["a"]


class AlterRace:
    """
    Holds the first two C{ALTER TABLE} statements of any engine until both
    are about to be sent, so that two brokers add the same column at once.
    """

    def __init__(self) -> None:
        self.arrivals = 0
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(2, timeout=20)
        SA.event.listen(SA.engine.Engine, "before_cursor_execute", self._before)

    def stop(self) -> None:
        """
        Stop listening.
        """
        SA.event.remove(SA.engine.Engine, "before_cursor_execute", self._before)

    def _before(self, conn: Any, cursor: Any, statement: str, *a: Any) -> None:
        # Worker thread, inside table()'s transaction.
        if not statement.startswith("ALTER TABLE"):
            return
        with self._lock:
            self.arrivals += 1
            wait = self.arrivals <= 2
        if wait:
            self._barrier.wait()


@pytest.mark.reactorTimeout(60)
async def test_addColumnRaceLost(serverURL: str, brokers: Any) -> None:
    """
    Two brokers that both found the column missing both send ALTER TABLE:
    the loser's "duplicate column" is absorbed, the comparison repeated,
    and both start on one table with the column once.
    """
    await startV1(serverURL, brokers, ["a"])
    race = AlterRace()
    try:
        both = [brokers(declared(v2), serverURL, batchSize=50 + i) for i in range(2)]
        await defer.gatherResults([b.waitUntilRunning() for b in both])
    finally:
        race.stop()
    assert race.arrivals >= 2
    assert columnsOf(serverURL) == ["id", "name", "note", "level"]


def withColumn(column: Callable[[], Any]) -> Columns:
    """
    The first release's columns, the C{name} column replaced by (or, named
    otherwise, followed by) C{column()}.
    """

    def columns() -> list[Any]:
        new = column()
        kept = [c for c in v1() if c.name != new.name]
        return [*kept, new]

    return columns


MISMATCHES: dict[str, tuple[Columns, dict[str, Any], list[str]]] = {
    "type": (
        withColumn(lambda: SA.Column("name", SA.Integer)),
        {"index_name": ["name"]},
        ["column 'name'", "type", "declared INTEGER", "found VARCHAR(20)"],
    ),
    "length": (
        withColumn(lambda: SA.Column("name", SA.String(40))),
        {"index_name": ["name"]},
        ["column 'name'", "declared VARCHAR(40)", "found VARCHAR(20)"],
    ),
    "notNullWithoutDefault": (
        withColumn(lambda: SA.Column("level", SA.Integer, nullable=False)),
        {"index_name": ["name"]},
        ["column 'level'", "missing", "NOT NULL without a server_default"],
    ),
    "nullability": (
        withColumn(lambda: SA.Column("name", SA.String(20), nullable=False)),
        {"index_name": ["name"]},
        ["column 'name'", "declared NOT NULL, found NULL"],
    ),
    "evolveOffColumn": (
        v2,
        {"index_name": ["name"], "evolve": False},
        ["column 'note'", "missing", "evolve=False"],
    ),
    "evolveOffIndex": (
        v1,
        {"index_name": ["name"], "unique_name": ["name"], "evolve": False},
        ["index 'ux_t_name'", "missing", "evolve=False"],
    ),
    "indexColumns": (
        v1,
        {"index_name": ["name", "id"]},
        ["index 'ix_t_name'", "declared on (name, id)", "found on (name)"],
    ),
    "indexUniqueness": (
        lambda: [*v1(), SA.Index("ix_t_name", "name", unique=True)],
        {},
        ["index 'ix_t_name'", "declared unique", "found not unique"],
    ),
    "primaryKey": (
        lambda: [
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("name", SA.String(20), primary_key=True),
        ],
        {"index_name": ["name"]},
        ["primary key", "declared (id, name)", "found (id)"],
    ),
}


@pytest.mark.parametrize("kind", sorted(MISMATCHES))
async def test_mismatch(dbURL: str, brokers: Any, kind: str) -> None:
    """
    Each difference table() does not add fails the start-up with a
    SchemaMismatch naming the table, the column or index, and what was
    declared and found; the table is left as it was.
    """
    columns, kw, phrases = MISMATCHES[kind]
    await startV1(dbURL, brokers, ["a"])
    error = await mismatch(brokers(declared(columns, **kw), dbURL))
    assert error.table == "t"
    assert "table 't'" in str(error)
    for phrase in phrases:
        assert phrase in str(error), (phrase, str(error))
    assert columnsOf(dbURL) == ["id", "name"]
    assert indexesOf(dbURL, "t") == {"ix_t_name": False}


async def test_uniqueIndexViolated(dbURL: str, brokers: Any) -> None:
    """
    A unique index that the existing rows violate is a SchemaMismatch
    naming the index and a duplicate; nothing of the change is left
    behind: neither the index nor the column added with it.
    """
    await startV1(dbURL, brokers, ["a", "a", "b", None, None])
    broker = brokers(declared(v2, unique_name=["name"]), dbURL)
    error = await mismatch(broker)
    assert "unique index 'ux_t_name'" in str(error)
    assert "name='a'" in str(error)
    assert columnsOf(dbURL) == ["id", "name"]
    assert indexesOf(dbURL, "t") == {"ix_t_name": False}


async def test_uniqueOnDefaultedColumn(dbURL: str, brokers: Any) -> None:
    """
    A unique index on a new server-defaulted column alone: every existing
    row would get the same value, so two rows make it unbuildable.
    """
    await startV1(dbURL, brokers, ["a", "b"])
    error = await mismatch(brokers(declared(v2, unique_level=["level"]), dbURL))
    assert "unique index 'ux_t_level'" in str(error)
    assert "2 rows would share one value" in str(error)
    assert columnsOf(dbURL) == ["id", "name"]


async def test_extraColumnsAreFine(dbURL: str, brokers: Any) -> None:
    """
    Columns and indexes the database has beyond the declaration are fine.
    """
    await startV1(dbURL, brokers, ["a"])
    broker = brokers(declared(lambda: v1()[:1]), dbURL)
    await broker.waitUntilRunning()


async def test_sqliteLooseTypes(sqliteURL: str, brokers: Any) -> None:
    """
    A SQLite table made by hand with type names SQLAlchemy does not know is
    compared by SQLite's type affinity only; a real affinity change is
    still a mismatch.
    """
    engine = SA.create_engine(sqliteURL)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR2(20), n INT4,"
            " dt TIMESTAMP)"
        )
    engine.dispose()

    def columns() -> list[Any]:
        return [
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("name", SA.String(20)),
            SA.Column("n", SA.BigInteger),
            SA.Column("dt", SA.DateTime),
        ]

    await brokers(declared(columns), sqliteURL).waitUntilRunning()

    def changed() -> list[Any]:
        return [*columns()[:2], SA.Column("n", SA.Float), columns()[3]]

    error = await mismatch(brokers(declared(changed), sqliteURL, timeout=30))
    assert "column 'n': type affinity: declared REAL, found INTEGER" in str(error)


def test_typeTolerance() -> None:
    """
    Dialect spellings of one type are no difference; kinds, lengths and
    integer widths are; stand-ins databases use are accepted.
    """
    pg, my, lite = postgresql.dialect(), mysql.dialect(), sqlite.dialect()
    assert typeDifference(SA.String(255), SA.VARCHAR(255), pg) == ""
    assert typeDifference(SA.Integer(), SA.INTEGER(), lite) == ""
    assert typeDifference(SA.Integer(), mysql.INTEGER(display_width=11), my) == ""
    assert typeDifference(SA.Boolean(), mysql.TINYINT(display_width=1), my) == ""
    assert typeDifference(SA.JSON(), mysql.LONGTEXT(), my) == ""
    assert typeDifference(SA.Float(), postgresql.DOUBLE_PRECISION(53), pg) == ""
    assert typeDifference(SA.Numeric(), mysql.DECIMAL(10, 0), my) == ""
    assert typeDifference(SA.Enum("a", "b"), SA.VARCHAR(1), lite) == ""
    assert typeDifference(SA.String(255), SA.types.NullType(), pg) == ""
    variant = SA.String(5).with_variant(mysql.VARCHAR(7), "mysql")
    assert typeDifference(variant, SA.VARCHAR(7), my) == ""
    assert "declared VARCHAR(5)" in typeDifference(variant, SA.VARCHAR(7), pg)
    assert "found BIGINT" in typeDifference(SA.Integer(), SA.BIGINT(), pg)
    assert "found TEXT" in typeDifference(SA.String(9), SA.TEXT(), pg)
    assert "found NUMERIC(10, 3)" in typeDifference(
        SA.Numeric(10, 2), SA.NUMERIC(10, 3), pg
    )
    assert typeDifference(SA.DateTime(timezone=True), SA.DATETIME(), my) == ""
    assert "WITH TIME ZONE" in typeDifference(
        SA.DateTime(timezone=True), postgresql.TIMESTAMP(), pg
    )


def test_sqliteAffinity() -> None:
    """
    SQLite's affinity rules, in their order.
    """
    cases = {
        "INTEGER": "INTEGER", "BIGINT": "INTEGER", "VARCHAR(20)": "TEXT",
        "CLOB": "TEXT", "BLOB": "BLOB", "": "BLOB", "DOUBLE": "REAL",
        "FLOATING POINT": "INTEGER", "STRING": "NUMERIC", "DATETIME": "NUMERIC",
    }  # fmt: skip
    assert {text: sqliteAffinity(text) for text in cases} == cases


def test_errorsPickle() -> None:
    """
    SchemaMismatch and MigrationFailed cross processes (processes=N) whole.
    """
    mismatch = pickle.loads(pickle.dumps(SchemaMismatch("t", ["column 'a': x"])))
    assert (mismatch.table, mismatch.differences) == ("t", ["column 'a': x"])
    assert "column 'a': x" in str(mismatch)
    failed = pickle.loads(pickle.dumps(MigrationFailed("m c3 failed", "c3", "b2")))
    assert (str(failed), failed.revision, failed.current) == ("m c3 failed", "c3", "b2")


def test_evolveMustBeBool() -> None:
    """
    table(..., evolve=) takes True or False only, and is no Table keyword.
    """
    metadata = SA.MetaData()
    with pytest.raises(TypeError, match="evolve= must be True or False"):
        defineTable(metadata, "t", v1(), [], {"evolve": "no"})
    table = defineTable(metadata, "u", v1(), [], {"evolve": False})
    assert table.info["sasync.evolve"] is False
