"""
The pytest plugin, C{-p sasync.testing}, as a user's test session sees
it: run in a child pytest, in a folder of its own.
"""

from __future__ import annotations

from pathlib import Path

from tests.sasync.testing.children import runChild

_TESTS = """
import pytest
from twisted.internet import defer, task

from sasync import AccessBroker, BrokerStopped
from sasync.testing import inReactorThread, runInReactor

made = []


def later(seconds, value=None):
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds, lambda: value)


async def test_asyncInReactor(databaseURL, brokers):
    assert inReactorThread()
    broker = brokers(AccessBroker, databaseURL)
    await broker.waitUntilRunning()
    made.append(broker)
    assert await later(0.01, 7) == 7


def test_brokerShutDownAfterTest():
    assert not inReactorThread()
    [broker] = made
    assert not broker.running
    with pytest.raises(BrokerStopped):
        runInReactor(broker.waitUntilRunning)


@pytest.mark.inReactor
@defer.inlineCallbacks
def test_inlineCallbacks():
    assert inReactorThread()
    value = yield later(0.01, 8)
    assert value == 8


@pytest.mark.reactorTimeout(0.3)
async def test_tooSlow():
    await later(30)


async def test_raises():
    await later(0.01)
    raise ZeroDivisionError("boom")


def test_sqliteByDefault(databaseURL, tmp_path):
    assert databaseURL == f"sqlite:///{tmp_path / 'test.db'}"
"""


def test_plugin(tmp_path: Path) -> None:
    """
    Async tests and C{inReactor} ones run in the reactor thread, a slow one
    is cancelled at its timeout and a failing one fails, each alone;
    brokers are shut down after their test; C{databaseURL} is a SQLite
    file unless C{SASYNC_TEST_DATABASE} says otherwise.
    """
    (tmp_path / "test_user.py").write_text(_TESTS)
    done = runChild(
        tmp_path,
        *("-m", "pytest", "-p", "sasync.testing", "-p", "no:cacheprovider"),
        *("-rA", "-q", "test_user.py"),
        # Wide: the summary lines are not cut.
        env={"SASYNC_TEST_DATABASE": None, "COLUMNS": "300"},
    )
    out = done.stdout
    for name in (
        "asyncInReactor",
        "brokerShutDownAfterTest",
        "inlineCallbacks",
        "sqliteByDefault",
    ):
        assert f"PASSED test_user.py::test_{name}" in out, out
    assert (
        "FAILED test_user.py::test_tooSlow - Failed: test_tooSlow did not"
        " finish within 0.3 s and was cancelled"
    ) in out, out
    assert "FAILED test_user.py::test_raises - ZeroDivisionError: boom" in out, out
    assert "2 failed, 4 passed" in out
    assert "test databases made: sqlite 2" in out


def test_badDatabaseVariable(tmp_path: Path) -> None:
    """
    A C{SASYNC_TEST_DATABASE} naming no database fails the tests that use
    C{databaseURL}, saying what it should be.
    """
    (tmp_path / "test_user.py").write_text("def test_db(databaseURL):\n    pass\n")
    done = runChild(
        tmp_path,
        *("-m", "pytest", "-p", "sasync.testing", "-p", "no:cacheprovider"),
        *("-q", "test_user.py"),
        env={"SASYNC_TEST_DATABASE": "oracle://scott@db/orcl"},
    )
    assert done.returncode == 1
    assert (
        "ValueError: SASYNC_TEST_DATABASE='oracle://scott@db/orcl': expected one"
        " of sqlite, postgresql, mysql or the admin URL of a PostgreSQL or"
        " MySQL/MariaDB server"
    ) in done.stdout, done.stdout
