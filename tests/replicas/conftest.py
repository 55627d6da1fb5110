"""
Fixtures of the replica tests: a primary with two hot standbys, made once
per test session and shared by every replica test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.cluster import madeOrSkipped
from tests.replicas.cluster import ReplicatedCluster


@pytest.fixture(scope="session")
def replicated() -> Iterator[ReplicatedCluster]:
    """
    The primary and its two standbys (the second one delayed). Tests may
    stop a standby, and must leave it running.
    """
    made = madeOrSkipped(ReplicatedCluster)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def replicaURLs(replicated: ReplicatedCluster) -> Iterator[tuple[str, list[str]]]:
    """
    A new, empty database: its URL on the primary and on both standbys
    (dropped afterwards, with every standby running again).
    """
    url, standbys = replicated.createDatabase()
    try:
        yield url, standbys
    finally:
        for standby in replicated.standbys:
            standby.ensureRunning()
        replicated.primary.dropDatabase(url)
