"""
Fixtures of the pooler tests: a PgBouncer in transaction mode with a pool
of L{tests.pooler.bouncer.POOL_SIZE} server connections per database,
started once per test session in front of the test PostgreSQL server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.databases import KINDS, ServerMissing, findServer
from tests.pooler.bouncer import Bouncer
from tests.reliability.cluster import madeOrSkipped


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[Bouncer]:
    """
    The PgBouncer (C{SASYNC_TEST_PGBOUNCER}'s, or a throwaway one).
    """
    try:
        server = findServer(KINDS["postgresql"])
    except ServerMissing as e:
        if e.fatal:
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    made = madeOrSkipped(lambda: Bouncer(server))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def pooledURL(postgresqlURL: str, pgbouncer: Bouncer) -> str:
    """
    A new, empty PostgreSQL database, reached through the PgBouncer.
    """
    return pgbouncer.on(postgresqlURL)
