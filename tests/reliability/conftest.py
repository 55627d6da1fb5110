"""
Fixtures of the fault-injection suite: a throwaway PostgreSQL cluster the
tests may restart, and the figures summary at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.cluster import Cluster, madeOrSkipped
from tests.reliability.helpers import FIGURES


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """
    A throwaway PostgreSQL cluster for the whole session (never the shared
    server): tests may stop, restart or crash it, and must leave it running.
    """
    made = madeOrSkipped(Cluster)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def clusterURL(cluster: Cluster) -> Iterator[str]:
    """
    A new, empty database on the throwaway cluster (running again and
    dropped after the test).
    """
    url = cluster.createDatabase()
    try:
        yield url
    finally:
        cluster.ensureRunning()
        cluster.dropDatabase(url)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault-injection figures")
        for figures in FIGURES:
            terminalreporter.write_line(figures.line())
