"""
The database fixtures give each test a working, clean database of its own.
"""

from __future__ import annotations

import pytest
import sqlalchemy as SA
from sqlalchemy.engine import make_url
from twisted.internet.threads import deferToThread

from tests.databases import pgDriver

# Connections deliberately left open by test_dropWithOpenConnections.
_leaked: list[SA.Connection] = []


def _useDatabase(url: str) -> list[str]:
    """
    In a worker thread: return the tables present, then create a table with
    a named index (index names are per database in PostgreSQL and SQLite)
    and write a row to it.
    """
    engine = SA.create_engine(url)
    try:
        before = SA.inspect(engine).get_table_names()
        metadata = SA.MetaData()
        table = SA.Table(
            "sentinel",
            metadata,
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("value", SA.Integer),
            SA.Index("ix_sentinel_value", "value", unique=True),
        )
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(table.insert().values(value=1))
            assert conn.execute(SA.select(table.c.value)).scalar_one() == 1
        return before
    finally:
        engine.dispose()


@pytest.mark.parametrize("attempt", [1, 2])
async def test_cleanDatabase(dbURL: str, attempt: int) -> None:
    """
    Each test starts on an empty database: the second attempt would see the
    first one's table (and trip over its index name) if anything leaked.
    """
    before = await deferToThread(_useDatabase, dbURL)
    assert before == []


def test_serverDialect(serverURL: str) -> None:
    """
    C{serverURL} names a test database on PostgreSQL or MySQL, with the
    project's drivers (PostgreSQL's chosen by C{SASYNC_TEST_PG_DRIVER}).
    """
    url = make_url(serverURL)
    assert url.drivername in (f"postgresql+{pgDriver()}", "mysql+pymysql")
    assert url.database is not None
    assert url.database.startswith("sasync_test_")


def test_sqliteURL(sqliteURL: str) -> None:
    """
    C{sqliteURL} is a file database that works.
    """
    assert sqliteURL.startswith("sqlite:///")
    assert _useDatabase(sqliteURL) == []


def test_dropWithOpenConnections(serverURL: str) -> None:
    """
    A test may leave connections open, even inside a transaction holding
    locks: dropping its database afterwards still does not hang.
    """
    engine = SA.create_engine(serverURL)
    conn = engine.connect()
    conn.exec_driver_sql("CREATE TABLE held (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.exec_driver_sql("INSERT INTO held (id) VALUES (1)")
    _leaked.append(conn)
