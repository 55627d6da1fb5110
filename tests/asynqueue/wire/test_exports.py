"""
The public names of L{asynqueue.wire} are the real objects of their
modules, and importing it installs no reactor.
"""

from __future__ import annotations

import subprocess
import sys

import asynqueue
import asynqueue.wire
from asynqueue.wire import _calls, _interrupt, _queue, _server, _worker


def test_realObjects() -> None:
    """
    Each name in C{__all__} is the object of its home module.
    """
    homes = {
        "AuthenticationError": asynqueue,
        "RemoteTaskError": asynqueue,
        "ServerLost": asynqueue,
        "TaskInterrupted": _interrupt,
        "WireQueue": _queue,
        "WireServer": _server,
        "WireWorker": _worker,
        "idempotent": _calls,
    }
    assert sorted(asynqueue.wire.__all__) == sorted(homes)
    for name, home in homes.items():
        assert getattr(asynqueue.wire, name) is getattr(home, name)
    assert issubclass(asynqueue.ServerLost, asynqueue.WorkerError)
    assert issubclass(asynqueue.AuthenticationError, asynqueue.QueueError)


def test_noReactorImport() -> None:
    """
    Importing asynqueue.wire doesn't install a reactor.
    """
    code = (
        "import sys, asynqueue.wire; print('twisted.internet.reactor' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
