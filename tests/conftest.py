"""
The project's own test fixtures: those of the public pytest plugin,
L{sasync.testing.plugin} (async tests in the reactor thread, a new database
per test, C{brokers}), plus the C{-k postgresql} keyword below.

Async tests: any C{async def test_...} runs in the reactor thread; it may
await Deferreds and coroutines. The default timeout is 60 s; change it with
C{@pytest.mark.reactorTimeout(seconds)}. Sync tests run as usual and may use
L{sasync.testing.runInReactor} (also importable from L{tests.reactorthread}).

Databases: C{dbURL} runs a test on SQLite, PostgreSQL and MySQL/MariaDB
(ids C{sqlite}, C{postgresql}, C{mysql}); C{serverURL} on the two servers;
C{sqliteURL}, C{postgresqlURL} and C{mysqlURL} on one. Each yields the
URL of a new, empty database, dropped after the test. A missing server
skips the test (naming the variable to set), or fails it with
C{SASYNC_TEST_REQUIRE_ALL=1} (see L{sasync.testing.servers}).
"""

from __future__ import annotations

import pytest

pytest_plugins = ["sasync.testing"]

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
