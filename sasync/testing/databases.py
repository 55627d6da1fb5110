"""
A test session's databases: a new, empty one for each test, on SQLite or on
a server, dropped afterwards.

Which kind a test gets when it does not ask for one comes from
C{SASYNC_TEST_DATABASE}::

    unset, or sqlite      a new SQLite file (the default)
    postgresql, mysql     a new database on that kind's server, found as
                          L{sasync.testing.servers} says
    a URL                 a new database on the server at that admin URL,
                          e.g. postgresql+psycopg://postgres@127.0.0.1/postgres

This module does not import pytest or trial: L{sasync.testing.plugin} and
L{sasync.testing.trial} use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .servers import KINDS, Server, ServerMissing, findServer

#: The variable naming the database kind, or a server URL, for tests that
#: take whichever database the person running them chose.
DATABASE_VAR = "SASYNC_TEST_DATABASE"

#: The kinds of database, by the names tests use.
KIND_NAMES = ("sqlite", *KINDS)

# A URL's backend name -> kind name.
_BACKENDS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def chosenDatabase() -> tuple[str, str | None]:
    """
    The database C{SASYNC_TEST_DATABASE} chooses.

    @return: C{(kind name, server URL)}: the URL is C{None} unless the
        variable is one (then a server URL, or C{None} for SQLite).
    @raise ValueError: If the variable is neither a kind's name nor a URL
        of a supported database.
    """
    value = os.environ.get(DATABASE_VAR, "").strip()
    if not value:
        return "sqlite", None
    if value in KIND_NAMES:
        return value, None
    try:
        backend = make_url(value).get_backend_name()
    except ArgumentError:
        backend = ""
    kindName = _BACKENDS.get(backend)
    if kindName is None:
        raise ValueError(
            f"{DATABASE_VAR}={value!r}: expected one of {', '.join(KIND_NAMES)}"
            " or the admin URL of a PostgreSQL or MySQL/MariaDB server"
        )
    return kindName, (None if kindName == "sqlite" else value)


class Databases:
    """
    The database servers of a test session, found on first use, and a new,
    empty database for each test. Use it from one thread: the tests' own,
    never the reactor thread (making and dropping databases blocks).

    @ivar used: How many databases of each kind were made.
    """

    def __init__(self) -> None:
        self._found: dict[str, Server | ServerMissing] = {}
        self.used: Counter[str] = Counter()

    def server(self, kindName: str, url: str | None = None) -> Server:
        """
        The server of a kind, found on first use.

        @param url: Its admin URL, from C{SASYNC_TEST_DATABASE}; by default
            the one the kind's variable names (see L{findServer}).
        @raise ServerMissing: If there is none (C{fatal}: fail, don't skip).
        """
        key = kindName if url is None else url
        if key not in self._found:
            envVar = "" if url is None else DATABASE_VAR
            try:
                self._found[key] = Server(
                    KINDS[kindName], findServer(KINDS[kindName], url, envVar)
                )
            except ServerMissing as e:
                self._found[key] = e
        found = self._found[key]
        if isinstance(found, ServerMissing):
            raise found
        return found

    @contextmanager
    def fresh(
        self, kindName: str | None = None, directory: Path | None = None
    ) -> Iterator[str]:
        """
        A new, empty database for the block, dropped after it even if
        connections to it were left open.

        @param kindName: C{"sqlite"}, C{"postgresql"} or C{"mysql"}; by
            default the one C{SASYNC_TEST_DATABASE} chooses.
        @param directory: Where a SQLite file goes (a temporary folder,
            removed afterwards, by default).
        @return: A context manager giving the database's URL.
        @raise ServerMissing: If the kind's server is missing.
        @raise ValueError: If C{kindName}, or C{SASYNC_TEST_DATABASE}, names
            no kind of database.
        """
        url: str | None = None
        if kindName is None:
            kindName, url = chosenDatabase()
        if kindName not in KIND_NAMES:
            raise ValueError(
                f"kindName={kindName!r}: expected one of {', '.join(KIND_NAMES)}"
            )
        if kindName == "sqlite":
            with self._sqliteFile(directory) as fileURL:
                self.used["sqlite"] += 1
                yield fileURL
            return
        server = self.server(kindName, url)
        made = server.createDatabase()
        self.used[kindName] += 1
        try:
            yield made
        finally:
            server.dropDatabase(made)

    @contextmanager
    def _sqliteFile(self, directory: Path | None) -> Iterator[str]:
        if directory is not None:
            yield f"sqlite:///{directory / 'test.db'}"
            return
        made = tempfile.mkdtemp(prefix="sasync-test-")
        try:
            yield f"sqlite:///{Path(made) / 'test.db'}"
        finally:
            shutil.rmtree(made, ignore_errors=True)

    def summary(self) -> str:
        """
        @return: A line saying how many databases of each kind were made,
            and on which servers.
        """
        parts = [f"sqlite {self.used['sqlite']}"]
        for key, found in self._found.items():
            if isinstance(found, Server):
                kindName = found.kind.name
                where = found.url.render_as_string()
            else:
                kindName, where = key, "missing"
            parts.append(f"{kindName} {self.used[kindName]} ({where})")
        return "test databases made: " + ", ".join(parts)

    def close(self) -> None:
        """
        Release the servers' admin engines.
        """
        for found in self._found.values():
            if isinstance(found, Server):
                found.close()
