"""
L{sasync.testing.databases}: which database C{SASYNC_TEST_DATABASE}
chooses, and new databases made and dropped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as SA
from sqlalchemy.engine import make_url

from sasync.testing.databases import DATABASE_VAR, Databases, chosenDatabase
from sasync.testing.servers import KINDS, ServerMissing, findServer, withDriver


@pytest.mark.parametrize(
    ("value", "chosen"),
    [
        ("", ("sqlite", None)),
        ("sqlite", ("sqlite", None)),
        ("postgresql", ("postgresql", None)),
        ("mysql", ("mysql", None)),
        ("sqlite:///x.db", ("sqlite", None)),
        ("postgresql://u@h/p", ("postgresql", "postgresql://u@h/p")),
        ("mysql+pymysql://r@h/t", ("mysql", "mysql+pymysql://r@h/t")),
        ("mariadb://r@h/t", ("mysql", "mariadb://r@h/t")),
    ],
)
def test_chosen(
    monkeypatch: pytest.MonkeyPatch, value: str, chosen: tuple[str, str | None]
) -> None:
    """
    A kind's name or a server's URL chooses the kind; nothing chooses
    SQLite.
    """
    monkeypatch.setenv(DATABASE_VAR, value)
    assert chosenDatabase() == chosen


@pytest.mark.parametrize("value", ["oracle://scott@db/orcl", "postgres", ":"])
def test_chosenBad(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """
    Anything else is refused, naming the variable and what it may be.
    """
    monkeypatch.setenv(DATABASE_VAR, value)
    with pytest.raises(ValueError, match=f"^{DATABASE_VAR}=.*: expected one of"):
        chosenDatabase()


def test_badKind() -> None:
    """
    L{Databases.fresh} refuses an unknown kind, naming it.
    """
    with (
        pytest.raises(ValueError, match="kindName='oracle': expected one of"),
        Databases().fresh("oracle"),
    ):
        pass


def test_sqliteInTemporaryFolder(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Without a folder, a SQLite database is made in a temporary one,
    removed afterwards.
    """
    monkeypatch.delenv(DATABASE_VAR, raising=False)
    databases = Databases()
    with databases.fresh() as url:
        path = Path(make_url(url).database or "")
        engine = SA.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        engine.dispose()
        assert path.exists()
    assert not path.parent.exists()
    assert databases.used["sqlite"] == 1


def test_keepDriver(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A server URL of C{SASYNC_TEST_DATABASE} keeps the driver it names,
    unless C{SASYNC_TEST_PG_DRIVER} names one; one naming none gets the
    default.
    """
    kind = KINDS["postgresql"]
    monkeypatch.delenv("SASYNC_TEST_PG_DRIVER", raising=False)
    url = "postgresql+psycopg://u@h/p"
    assert withDriver(kind, url, keepDriver=True).drivername == "postgresql+psycopg"
    assert withDriver(kind, url).drivername == "postgresql+psycopg2"
    assert withDriver(kind, "postgresql://u@h/p", keepDriver=True).drivername == (
        "postgresql+psycopg2"
    )
    monkeypatch.setenv("SASYNC_TEST_PG_DRIVER", "psycopg2")
    assert withDriver(kind, url, keepDriver=True).drivername == "postgresql+psycopg2"
    mysql = withDriver(KINDS["mysql"], "mysql+mysqldb://r@h/t", keepDriver=True)
    assert mysql.drivername == "mysql+mysqldb"


@pytest.mark.parametrize("kindName", ["postgresql", "mysql"])
def test_serverFromURL(monkeypatch: pytest.MonkeyPatch, kindName: str) -> None:
    """
    C{SASYNC_TEST_DATABASE} set to a server's admin URL: each database is
    new, on that server, and dropped afterwards.
    """
    try:
        admin = findServer(KINDS[kindName])
    except ServerMissing as e:
        if e.fatal:
            pytest.fail(str(e))
        pytest.skip(str(e))
    monkeypatch.setenv(DATABASE_VAR, admin.render_as_string(hide_password=False))
    databases = Databases()
    try:
        with databases.fresh() as url:
            made = make_url(url)
            assert made.drivername == admin.drivername
            assert (made.host, made.port) == (admin.host, admin.port)
            assert made.database and made.database.startswith("sasync_test_")
            engine = SA.create_engine(url)
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            engine.dispose()
        names = _databaseNames(admin)
        assert made.database not in names
        assert databases.used[kindName] == 1
        assert f"{kindName} 1 (" in databases.summary()
    finally:
        databases.close()


def test_missingServerVariable(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A server URL in C{SASYNC_TEST_DATABASE} that does not answer is fatal,
    and the message names that variable.
    """
    monkeypatch.setenv(DATABASE_VAR, "postgresql://nobody@127.0.0.1:1/none")
    with (
        pytest.raises(ServerMissing, match=f"^{DATABASE_VAR}=") as caught,
        Databases().fresh(),
    ):
        pass
    assert caught.value.fatal


def _databaseNames(admin: SA.URL) -> set[str]:
    engine = SA.create_engine(admin)
    try:
        with engine.connect() as conn:
            if admin.get_backend_name() == "postgresql":
                rows = conn.exec_driver_sql("SELECT datname FROM pg_database")
            else:
                rows = conn.exec_driver_sql("SHOW DATABASES")
            return {row[0] for row in rows}
    finally:
        engine.dispose()
