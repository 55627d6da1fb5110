"""
The original AsynQueue's C{ThreadQueue(**kw)} and C{ProcessQueue(N, **kw)}
passed C{warn}, C{spew} and C{returnFailure} on to C{TaskQueue}: they are
accepted here too, deprecated as on L{TaskQueue} (see
C{test_originalapi.OriginalKeywordTests}), with real threads and worker
processes. Each C{async def} test runs in the reactor thread (see
C{tests/conftest.py}).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from twisted.logger import capturedLogs

from asynqueue import ProcessQueue, TaskQueue, ThreadQueue

from . import processtasks as pt


def made(cls: Any, *args: Any, **kw: Any) -> tuple[TaskQueue, list[str]]:
    """
    C{cls(*args, **kw)}, and the deprecation messages it gave, each checked
    to point at this file (the caller's line, not the library's).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = cls(*args, **kw)
    for w in caught:
        assert w.category is DeprecationWarning
        assert w.filename == __file__, w.filename
    return q, [str(w.message) for w in caught]


def raises() -> None:
    raise ValueError("nope")


async def test_threadQueueSpew() -> None:
    """
    C{ThreadQueue(n, spew=True)} logs every call with its outcome, and says
    it is deprecated, naming C{ThreadQueue}.
    """
    q, messages = made(ThreadQueue, 1, spew=True)
    try:
        assert len(messages) == 1
        assert "ThreadQueue(spew=...) is deprecated" in messages[0]
        with capturedLogs() as events:
            assert await q.call(pt.add, 2, y=5) == 7
            with pytest.raises(ValueError):
                await q.call(raises)
        logged = [e["log_format"].format(**e) for e in events]
        assert len(logged) == 2, logged
        assert logged[0].endswith("-> 7"), logged
        assert "raises" in logged[1] and "failed" in logged[1], logged
    finally:
        await q.shutdown()


async def test_threadQueueQuiet() -> None:
    """
    C{warn=False, spew=False, returnFailure=True}: deprecated, nothing
    logged, and a failed call still fails its Deferred.
    """
    q, messages = made(ThreadQueue, 2, warn=False, spew=False, returnFailure=True)
    try:
        assert [m.split(" is deprecated")[0] for m in messages] == [
            "ThreadQueue(returnFailure=...)",
            "ThreadQueue(warn=...)",
            "ThreadQueue(spew=...)",
        ]
        with capturedLogs() as events, pytest.raises(ValueError):
            await q.call(raises)
        assert list(events) == []
    finally:
        await q.shutdown()


async def test_processQueueWarn() -> None:
    """
    C{ProcessQueue(n, warn=True)} logs each failed call, naming it, and only
    those; calls still run in the worker process.
    """
    q, messages = made(ProcessQueue, 1, warn=True)
    try:
        assert len(messages) == 1
        assert "ProcessQueue(warn=...) is deprecated" in messages[0]
        with capturedLogs() as events:
            assert await q.call(pt.add, 1, y=2) == 3
            with pytest.raises(pt.CustomError):
                await q.call(pt.raiseCustom, "remote trouble")
        logged = [e["log_format"].format(**e) for e in events]
        assert len(logged) == 1, logged
        assert "raiseCustom" in logged[0] and "failed" in logged[0], logged
    finally:
        await q.shutdown()


def test_notABool() -> None:
    """
    Anything but a bool is a TypeError naming the class and the keyword.
    """
    with pytest.raises(TypeError, match=r"ThreadQueue\(spew='yes'\)"):
        ThreadQueue(1, spew="yes")  # type: ignore[arg-type]
