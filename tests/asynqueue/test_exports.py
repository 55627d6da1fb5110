"""
The public names of L{asynqueue} are the real objects of their modules.
"""

from __future__ import annotations

import importlib

import pytest

import asynqueue

HOMES = {
    "AsIs": "task",
    "AsyncWorker": "workers",
    "AuthenticationError": "errors",
    "Deferator": "deferator",
    "DeferredLock": "lock",
    "DeferredTracker": "tracker",
    "Delay": "delay",
    "IWorker": "interfaces",
    "Info": "info",
    "IterationProducer": "producer",
    "IterationStopped": "errors",
    "ListConsumer": "producer",
    "Prefetcherator": "prefetch",
    "ProcessQueue": "process",
    "ProcessWorker": "process",
    "OutcomeUnknown": "errors",
    "QueueError": "errors",
    "QueueStopped": "errors",
    "RemoteTaskError": "errors",
    "ServerLost": "errors",
    "Task": "task",
    "TaskQueue": "taskqueue",
    "TaskTimeout": "errors",
    "ThreadQueue": "threads",
    "ThreadWorker": "workers",
    "UnknownSeries": "errors",
    "WorkerError": "errors",
    "currentTask": "task",
    "iteratorToProducer": "producer",
    # Small helpers, public so that sasync has one of each.
    "Waiters": "_util",
    "checkNumber": "_util",
    "follow": "_util",
    "globalReactor": "_util",
}


def test_allListed() -> None:
    """
    C{__all__} names exactly the public API.
    """
    assert sorted(asynqueue.__all__) == sorted(HOMES)


@pytest.mark.parametrize("name", sorted(HOMES))
def test_realObject(name: str) -> None:
    """
    Each public name is the object defined in its module.
    """
    module = importlib.import_module(f"asynqueue.{HOMES[name]}")
    assert getattr(asynqueue, name) is getattr(module, name)


def test_noReactorImport() -> None:
    """
    Importing asynqueue doesn't install a reactor (it is resolved lazily).
    """
    import subprocess
    import sys

    code = "import sys, asynqueue; print('twisted.internet.reactor' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_errorHierarchy() -> None:
    """
    Every error AsynQueue raises is a L{asynqueue.QueueError}; a timeout is
    also a C{TimeoutError}.
    """
    for name in (
        "QueueStopped",
        "TaskTimeout",
        "WorkerError",
        "IterationStopped",
        "RemoteTaskError",
        "OutcomeUnknown",
    ):
        assert issubclass(getattr(asynqueue, name), asynqueue.QueueError)
    assert issubclass(asynqueue.TaskTimeout, TimeoutError)
