"""
Testing your own brokers: a new database for each test, async tests run in a
reactor, and brokers shut down after each test.

With pytest, load the plugin, L{sasync.testing.plugin}: C{pytest -p
sasync.testing}, or C{pytest_plugins = ["sasync.testing"]} in your top
C{conftest.py}. Then C{async def} tests run in a reactor thread and the
fixtures C{databaseURL} and C{brokers} give a test its database and
brokers.

With trial, subclass L{sasync.testing.trial.BrokerTestCase}.

The database is a SQLite file unless C{SASYNC_TEST_DATABASE} names a
server (see L{sasync.testing.databases}). See C{docs/testing.md}.
"""

from __future__ import annotations

from .brokers import Brokers as Brokers
from .databases import DATABASE_VAR as DATABASE_VAR
from .databases import Databases as Databases
from .databases import chosenDatabase as chosenDatabase
from .reactor import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .reactor import ReactorTimeoutError as ReactorTimeoutError
from .reactor import inReactorThread as inReactorThread
from .reactor import runInReactor as runInReactor
from .reactor import startReactor as startReactor
from .reactor import stopReactor as stopReactor
from .servers import ServerMissing as ServerMissing

#: Loaded by pytest with this package (C{-p sasync.testing}): the fixtures
#: and hooks live there, so that importing this package needs no pytest.
pytest_plugins = ["sasync.testing.plugin"]

__all__ = [
    "DATABASE_VAR",
    "DEFAULT_TIMEOUT",
    "Brokers",
    "Databases",
    "ReactorTimeoutError",
    "ServerMissing",
    "chosenDatabase",
    "inReactorThread",
    "runInReactor",
    "startReactor",
    "stopReactor",
]
