"""
L{sasync.testing.trial.BrokerTestCase} under trial, in a child process:
brokers shut down after each test, a missing server skips (or fails).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.sasync.testing.children import runChild

_TESTS = """
from sasync import AccessBroker
from sasync.testing.trial import BrokerTestCase

made = []


class UserTests(BrokerTestCase):
    def test_1_make(self):
        broker = self.makeBroker(AccessBroker, self.databaseURL())
        made.append(broker)
        return broker.waitUntilRunning()

    def test_2_stopped(self):
        [broker] = made
        self.assertFalse(broker.running)

    def test_3_mysql(self):
        self.databaseURL("mysql")
"""


@pytest.mark.parametrize(
    ("requireAll", "outcome"), [("", "SKIPPED"), ("1", "FAIL")], ids=["skip", "fail"]
)
def test_trial(tmp_path: Path, requireAll: str, outcome: str) -> None:
    """
    A broker made by C{makeBroker} is shut down after its test; a missing
    server skips the test, naming the variable to set, or fails it with
    C{SASYNC_TEST_REQUIRE_ALL=1}.
    """
    (tmp_path / "test_user.py").write_text(_TESTS)
    done = runChild(
        tmp_path,
        *("-m", "twisted.trial", "test_user"),
        env={
            "SASYNC_TEST_DATABASE": None,
            "SASYNC_TEST_MYSQL": None,
            "SASYNC_TEST_NO_LOCAL_MYSQL": "1",
            "SASYNC_TEST_REQUIRE_ALL": requireAll,
        },
    )
    out = done.stdout
    outcomes = dict(re.findall(r"(test_\w+) \.\.\.\s+\[(\w+)\]", out))
    assert outcomes == {
        "test_1_make": "OK",
        "test_2_stopped": "OK",
        "test_3_mysql": outcome,
    }, out
    assert "no MySQL/MariaDB server for the tests: set SASYNC_TEST_MYSQL=" in out
