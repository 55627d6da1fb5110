"""
The pytest plugin: async tests in the reactor thread, a new database for
each test, brokers shut down after it. Load it with C{pytest -p
sasync.testing}, or with C{pytest_plugins = ["sasync.testing"]} in your
top C{conftest.py}.

Tests:
  - C{async def test_...} runs in the reactor thread (see
    L{sasync.testing.reactor}) and may await Deferreds and coroutines.
  - A plain C{def} test marked C{@pytest.mark.inReactor} is called in the
    reactor thread too, and the L{Deferred<twisted.internet.defer.Deferred>}
    it returns (e.g. from an C{inlineCallbacks} function) is waited for.
  - Either is cancelled and fails after 60 s; C{@pytest.mark.reactorTimeout
    (seconds)} changes that.
  - Other tests run in pytest's thread, as usual, and may call
    L{sasync.testing.runInReactor}.

Fixtures:
  - C{databaseURL}: the URL of a new, empty database, dropped after the
    test: a SQLite file, or the kind or server C{SASYNC_TEST_DATABASE}
    names (see L{sasync.testing.databases}).
  - C{sqliteURL}, C{postgresqlURL}, C{mysqlURL}: one of that kind;
    C{dbURL} runs the test on each of the three, C{serverURL} on the two
    servers. A missing server skips the test, naming the variable to set,
    or fails it with C{SASYNC_TEST_REQUIRE_ALL=1} (see
    L{sasync.testing.servers}).
  - C{brokers}: L{Brokers}, a factory, C{brokers(MyBroker, url, **kw)},
    called in the reactor thread (in an async test); each broker is shut
    down after the test, its leftovers cancelled after 10 s.
  - C{reactor}: the global reactor, running in its thread.

Async fixtures are not supported: use sync fixtures and L{runInReactor}.
The line before pytest's last one says how many databases of each kind
were made.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .brokers import Brokers
from .databases import Databases
from .reactor import (
    DEFAULT_TIMEOUT,
    ReactorTimeoutError,
    runInReactor,
    startReactor,
    stopReactor,
)
from .servers import ServerMissing

_databases = Databases()


def pytest_configure(config: pytest.Config) -> None:
    """
    Declare the plugin's markers.
    """
    config.addinivalue_line(
        "markers", "reactorTimeout(seconds): timeout for an async test (default 60 s)"
    )
    config.addinivalue_line(
        "markers",
        "inReactor: call this sync test in the reactor thread and wait for"
        " the Deferred it returns",
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """
    Stop the reactor thread and release the database servers.
    """
    stopReactor()
    _databases.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """
    Say how many databases of each kind the tests made.
    """
    terminalreporter.write_line(_databases.summary())


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """
    Run an C{async def} test, or one marked C{inReactor}, in the reactor
    thread and wait for it here.
    """
    __tracebackhide__ = True
    testFunction = pyfuncitem.obj
    if not (
        inspect.iscoroutinefunction(testFunction)
        or pyfuncitem.get_closest_marker("inReactor")
    ):
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


@pytest.fixture(scope="session")
def reactor() -> Any:
    """
    The global reactor, running in its thread.
    """
    return startReactor()


def _fresh(kindName: str | None, directory: Path) -> Iterator[str]:
    # A missing server skips the test, or fails it when all are required.
    try:
        with _databases.fresh(kindName, directory) as url:
            yield url
            return
    except ServerMissing as e:
        missing = e
    if missing.fatal:
        pytest.fail(str(missing), pytrace=False)
    pytest.skip(str(missing))


@pytest.fixture
def databaseURL(tmp_path: Path) -> Iterator[str]:
    """
    A new, empty database of the kind C{SASYNC_TEST_DATABASE} chooses (a
    SQLite file by default).
    """
    yield from _fresh(None, tmp_path)


@pytest.fixture
def sqliteURL(tmp_path: Path) -> Iterator[str]:
    """
    A new SQLite database file.
    """
    yield from _fresh("sqlite", tmp_path)


@pytest.fixture
def postgresqlURL(tmp_path: Path) -> Iterator[str]:
    """
    A new, empty PostgreSQL database.
    """
    yield from _fresh("postgresql", tmp_path)


@pytest.fixture
def mysqlURL(tmp_path: Path) -> Iterator[str]:
    """
    A new, empty MySQL/MariaDB database.
    """
    yield from _fresh("mysql", tmp_path)


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
def brokers() -> Iterator[Brokers]:
    """
    A factory, C{brokers(cls, url, **kw)}, for brokers made in the reactor
    thread (inside an async test); each is shut down after the test, its
    leftovers cancelled after 10 s.
    """
    made = Brokers()
    yield made
    if len(made):
        runInReactor(made.shutdown, timeout=60)
