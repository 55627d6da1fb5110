"""
Shared test fixtures: the reactor thread, async tests and clean databases.

Async tests: any C{async def test_...} runs in the reactor thread (see
L{tests.reactorthread}); it may await Deferreds and coroutines. The default
timeout is 60 s; change it with C{@pytest.mark.reactorTimeout(seconds)}.
Sync tests run as usual and may use L{tests.reactorthread.runInReactor}.

Databases: C{dbURL} runs a test on SQLite, PostgreSQL and MySQL/MariaDB
(ids C{sqlite}, C{postgresql}, C{mysql}); C{serverURL} on the two servers;
C{sqliteURL}, C{postgresqlURL} and C{mysqlURL} on one. Each yields the
URL of a new, empty database, dropped after the test. A missing server
skips the test (naming the variable to set), or fails it with
C{SASYNC_TEST_REQUIRE_ALL=1} (see L{tests.databases}).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import KINDS, Server, ServerMissing, findServer
from tests.reactorthread import (
    DEFAULT_TIMEOUT,
    ReactorTimeoutError,
    runInReactor,
    startReactor,
    stopReactor,
)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stopReactor()
    _servers.close()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """
    Run an C{async def} test in the reactor thread and wait for it here.
    """
    __tracebackhide__ = True
    testFunction = pyfuncitem.obj
    if not inspect.iscoroutinefunction(testFunction):
        return None
    marker = pyfuncitem.get_closest_marker("reactorTimeout")
    timeout = float(marker.args[0]) if marker else DEFAULT_TIMEOUT
    kwargs = {
        name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames
    }
    try:
        runInReactor(lambda: testFunction(**kwargs), timeout=timeout)
        return True
    except ReactorTimeoutError:
        pass  # fail outside the except block: the report is just this
    pytest.fail(
        f"{pyfuncitem.name} did not finish within {timeout:g} s and was"
        " cancelled (raise the limit with @pytest.mark.reactorTimeout(s))",
        pytrace=False,
    )


_POSTGRESQL_FIXTURES = {"postgresqlURL", "cluster", "clusterURL"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """
    Tests on a PostgreSQL database of their own (the shared server's or
    a throwaway cluster's) answer C{-k postgresql}, as the parametrized
    ones do by their id: the second CI run, on psycopg 3, selects them so.
    """
    for item in items:
        if _POSTGRESQL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.extra_keyword_matches.add("postgresql")


@pytest.fixture(scope="session")
def reactor() -> Any:
    """
    The global reactor, running in its thread.
    """
    return startReactor()


class _Servers:
    """
    The database servers of this session, found on first use, and how many
    test databases each gave.
    """

    def __init__(self) -> None:
        self._found: dict[str, Server | ServerMissing] = {}
        self.used: Counter[str] = Counter()

    def server(self, kindName: str) -> Server:
        if kindName not in self._found:
            kind = KINDS[kindName]
            try:
                self._found[kindName] = Server(kind, findServer(kind))
            except ServerMissing as e:
                self._found[kindName] = e
        found = self._found[kindName]
        if isinstance(found, ServerMissing):
            if found.fatal:
                pytest.fail(str(found), pytrace=False)
            pytest.skip(str(found))
        return found

    def freshDatabase(self, kindName: str) -> Iterator[str]:
        server = self.server(kindName)
        url = server.createDatabase()
        self.used[kindName] += 1
        try:
            yield url
        finally:
            server.dropDatabase(url)

    def summary(self) -> str:
        parts = [f"sqlite {self.used['sqlite']}"]
        for kindName, found in self._found.items():
            where = (
                found.url.render_as_string() if isinstance(found, Server) else "missing"
            )
            parts.append(f"{kindName} {self.used[kindName]} ({where})")
        return "test databases made: " + ", ".join(parts)

    def close(self) -> None:
        for found in self._found.values():
            if isinstance(found, Server):
                found.close()


_servers = _Servers()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(_servers.summary())


@pytest.fixture
def sqliteURL(tmp_path: Path) -> str:
    """
    A new SQLite database file.
    """
    _servers.used["sqlite"] += 1
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def postgresqlURL() -> Iterator[str]:
    """
    A new, empty PostgreSQL database.
    """
    yield from _servers.freshDatabase("postgresql")


@pytest.fixture
def mysqlURL() -> Iterator[str]:
    """
    A new, empty MySQL/MariaDB database.
    """
    yield from _servers.freshDatabase("mysql")


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def dbURL(request: pytest.FixtureRequest) -> str:
    """
    A new, empty database on each of SQLite, PostgreSQL and MySQL/MariaDB.
    """
    url: str = request.getfixturevalue(f"{request.param}URL")
    return url


@pytest.fixture(params=["postgresql", "mysql"])
def serverURL(request: pytest.FixtureRequest) -> str:
    """
    A new, empty database on each of PostgreSQL and MySQL/MariaDB.
    """
    url: str = request.getfixturevalue(f"{request.param}URL")
    return url


@pytest.fixture
def brokers() -> Iterator[Callable[..., Any]]:
    """
    A factory, C{brokers(cls, url, **kw)}, for brokers made in the reactor
    thread (inside an async test); each is shut down after the test, its
    leftovers cancelled after 10 s.
    """
    from twisted.internet.defer import DeferredList

    from sasync import AccessBroker

    made: list[AccessBroker] = []

    def make(cls: type[AccessBroker], *args: Any, **kw: Any) -> Any:
        broker = cls(*args, **kw)
        made.append(broker)
        return broker

    yield make
    if made:
        runInReactor(
            lambda: DeferredList(
                [b.shutdown(timeout=10) for b in made], consumeErrors=True
            ),
            timeout=60,
        )
