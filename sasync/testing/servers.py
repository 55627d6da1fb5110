"""
Database servers for tests: which ones to use, and a clean database per test.

The servers come from the environment::

    SASYNC_TEST_POSTGRESQL   a URL, e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/postgres
    SASYNC_TEST_MYSQL        a URL, e.g. mysql+pymysql://root@127.0.0.1:3306/test
    SASYNC_TEST_REQUIRE_ALL  1: a missing server fails the tests instead of skipping
    SASYNC_TEST_PG_DRIVER    the PostgreSQL driver: psycopg2 (the default) or
                             psycopg (psycopg 3); it replaces the one a URL names

Without a URL, a local server on the default port is used if it answers
(C{SASYNC_TEST_NO_LOCAL_PG=1} / C{SASYNC_TEST_NO_LOCAL_MYSQL=1} turn that off).
A URL that names no driver gets psycopg2's or PyMySQL's. The URL names an
admin connection: L{Server} creates and drops the tests' databases
through it.

This module does not import pytest. A shell script can probe a server::

    python -m sasync.testing.servers probe postgresql   # prints the URL, or exits 1
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from dataclasses import dataclass

import sqlalchemy as SA
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

# psycopg2 and PyMySQL both take it, in seconds.
CONNECT_ARGS = {"connect_timeout": 5}


@dataclass(frozen=True)
class ServerKind:
    """
    How to find one kind of database server.
    """

    name: str
    label: str
    envVar: str
    localURL: str
    noLocalVar: str
    driver: str
    install: str


KINDS = {
    "postgresql": ServerKind(
        "postgresql",
        "PostgreSQL",
        "SASYNC_TEST_POSTGRESQL",
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        "SASYNC_TEST_NO_LOCAL_PG",
        "postgresql+psycopg2",
        "or run ./scripts/test, which starts a throwaway server when the"
        " PostgreSQL server binaries are installed (apt-get install postgresql)",
    ),
    "mysql": ServerKind(
        "mysql",
        "MySQL/MariaDB",
        "SASYNC_TEST_MYSQL",
        "mysql+pymysql://root@127.0.0.1:3306/test",
        "SASYNC_TEST_NO_LOCAL_MYSQL",
        "mysql+pymysql",
        "or start one on 127.0.0.1:3306 with user root and no password"
        " (apt-get install mariadb-server)",
    ),
}


def requireAll() -> bool:
    """
    @return: whether C{SASYNC_TEST_REQUIRE_ALL} asks for every database.
    """
    return os.environ.get("SASYNC_TEST_REQUIRE_ALL", "") not in ("", "0")


class ServerMissing(Exception):
    """
    No server of this kind for the tests. C{fatal}: fail, don't skip.
    """

    def __init__(self, message: str, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


#: The PostgreSQL drivers the tests run on.
PG_DRIVERS = ("psycopg2", "psycopg")
_PG_DRIVER = "SASYNC_TEST_PG_DRIVER"


def pgDriver() -> str:
    """
    @return: The PostgreSQL driver the tests use: C{SASYNC_TEST_PG_DRIVER},
        C{psycopg2} by default.
    @raise ValueError: If the variable names another driver.
    """
    name = os.environ.get(_PG_DRIVER, "") or "psycopg2"
    if name not in PG_DRIVERS:
        raise ValueError(
            f"SASYNC_TEST_PG_DRIVER={name!r}: expected one of {', '.join(PG_DRIVERS)}"
        )
    return name


def withDriver(kind: ServerKind, url: str, keepDriver: bool = False) -> URL:
    """
    @param keepDriver: keep the driver C{url} names, unless
        C{SASYNC_TEST_PG_DRIVER} names one.
    @return: C{url} parsed, with the kind's default driver if it names
        none; a PostgreSQL URL gets L{pgDriver}'s unless C{keepDriver}.
    """
    parsed = make_url(url)
    named = "+" in parsed.drivername
    if kind.name == "postgresql":
        if os.environ.get(_PG_DRIVER) or not (keepDriver and named):
            parsed = parsed.set(drivername=f"postgresql+{pgDriver()}")
    elif not named:
        parsed = parsed.set(drivername=kind.driver)
    return parsed


def probe(url: URL) -> str | None:
    """
    @return: C{None} if a server answers at C{url}, else the error.
    """
    engine = SA.create_engine(url, poolclass=NullPool, connect_args=CONNECT_ARGS)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as e:
        return f"{type(e).__name__}: {e}".strip()
    finally:
        engine.dispose()
    return None


def findServer(kind: ServerKind, url: str | None = None, envVar: str = "") -> URL:
    """
    Find the server to test on.

    @param url: the server's admin URL, from C{envVar}; by default the
        value of the kind's own variable (C{SASYNC_TEST_POSTGRESQL}, ...).
    @return: the admin URL of a server that answers.
    @raise ServerMissing: when there is none; fatal when the variable names a
        server that does not answer, or when all databases are required.
    """
    configured = os.environ.get(kind.envVar, "") if url is None else url
    if configured:
        parsed = withDriver(kind, configured, keepDriver=url is not None)
        error = probe(parsed)
        if error is None:
            return parsed
        raise ServerMissing(
            f"{envVar or kind.envVar}={parsed.render_as_string()} is set but"
            f" that {kind.label} server does not answer: {error}",
            fatal=True,
        )
    if os.environ.get(kind.noLocalVar, "") in ("", "0"):
        local = withDriver(kind, kind.localURL)
        if probe(local) is None:
            return local
    raise ServerMissing(
        f"no {kind.label} server for the tests: set"
        f" {kind.envVar}={kind.localURL} (or another URL), {kind.install}",
        fatal=requireAll(),
    )


class Server:
    """
    An admin connection to one database server that makes a fresh, empty
    database for each test and drops it afterwards, even when the test left
    connections open. Use it from one thread.
    """

    _counter = itertools.count(1)

    def __init__(self, kind: ServerKind, url: URL) -> None:
        self.kind = kind
        self.url = url
        self._engine = SA.create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
            connect_args=CONNECT_ARGS,
        )

    def createDatabase(self) -> str:
        """
        @return: the URL of a new, empty database.
        """
        name = f"sasync_test_{os.getpid()}_{next(self._counter)}"
        with self._engine.connect() as conn:
            if self.kind.name == "postgresql":
                # template0: immune to whatever was added to template1.
                conn.exec_driver_sql(
                    f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"
                )
            else:
                conn.exec_driver_sql(
                    f"CREATE DATABASE {name} CHARACTER SET utf8mb4"
                    " COLLATE utf8mb4_unicode_ci"
                )
        return self.url.set(database=name).render_as_string(hide_password=False)

    def dropDatabase(self, url: str) -> None:
        """
        Drop the database at C{url}, closing its connections first.
        """
        name = make_url(url).database
        assert name and name.startswith("sasync_test_"), name
        with self._engine.connect() as conn:
            if self.kind.name == "postgresql":
                conn.exec_driver_sql("SET lock_timeout = '30s'")
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                return
            conn.exec_driver_sql("SET SESSION lock_wait_timeout = 30")
            ids = conn.exec_driver_sql(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = %s AND id <> CONNECTION_ID()",
                (name,),
            ).scalars()
            for connectionID in list(ids):
                # It may have ended by itself meanwhile.
                with contextlib.suppress(SA.exc.OperationalError):
                    conn.exec_driver_sql(f"KILL CONNECTION {int(connectionID)}")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")

    def close(self) -> None:
        """
        Release the admin engine.
        """
        self._engine.dispose()


def main(argv: list[str]) -> int:
    """
    C{probe KIND}: print the URL of the server to test on, or the reason
    there is none on stderr and exit 1.
    """
    if len(argv) != 2 or argv[0] != "probe" or argv[1] not in KINDS:
        print(
            f"usage: python -m sasync.testing.servers probe {'|'.join(KINDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        url = findServer(KINDS[argv[1]])
    except ServerMissing as e:
        print(e, file=sys.stderr)
        return 1
    print(url.render_as_string(hide_password=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
