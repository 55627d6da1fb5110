"""
Code written for the original sAsync and AsynQueue runs here unchanged
(issue 20's measure): L{tests.sasync.originalclient}, a log analyzer in the
original's style, uses every shape the issue lists, and runs on each
database with no change, only deprecation warnings that each name the new
spelling.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Any

import pytest

#: The original's spellings the real client needed changed (issue 20, "the
#: API moved"), as they appear in the client's source.
SHAPES = (
    "from sasync.database import AccessBroker, transact, wait",
    "AccessBroker.__init__(self, url, verbose=verbose, spew=spew)",
    "self.q.engine",
    "self.singleton",
    "self.selex(self.entries.delete)",
    "iteration.ListConsumer",
    "IPRecorder(prefix=",
    "def processItem(",
    "yield recorder()",
    "producer.registerConsumer(",
    ".acquireAndRelease()",
    "len(q)",
    "from asynqueue import iteration, util",
    "from asynqueue.info import showResult",
    "from asynqueue.null import NullQueue",
)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_everyShapeUsed() -> None:
    """
    The client uses each of the original's spellings the issue lists: the
    count of those that had to change is the count of those missing, zero.
    """
    import tests.sasync.originalclient as client

    source = inspect.getsource(client)
    changed = [shape for shape in SHAPES if shape not in source]
    assert changed == []


async def test_originalClient(dbURL: str) -> None:
    """
    The client runs unchanged and finds the right answers; each
    deprecation warning on the way names what to write instead.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client: Any = importlib.reload(
            importlib.import_module("tests.sasync.originalclient")
        )
        found = await client.analyze(dbURL)
    dialect = dbURL.split(":")[0].split("+")[0]
    assert found == {
        "recorded": [f"ip:10.0.0.{i}" for i in range(2, 6)],
        "produced": [f"10.0.0.{i}" for i in range(2, 6)],
        "workers": 1,
        "doubled": 8,
        "purged": 2,
        "left": 4,
        "dialect": dialect,
        "described": f"{dialect} single={dialect == 'sqlite'}",
    }
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    messages = {str(w.message) for w in deprecations}
    for old in (
        "sasync.database.AccessBroker",
        "asynqueue.null.NullQueue()",
        "AccessBroker(verbose=...)",
        "AccessBroker(spew=...)",
        "broker.q.engine",
        "broker.singleton",
        "asynqueue.info.showResult",
    ):
        [message] = [m for m in messages if m.startswith(f"{old} is deprecated")]
        assert ": use " in message
