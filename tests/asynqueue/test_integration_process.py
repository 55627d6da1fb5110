"""
Integration tests: L{ProcessQueue} with real worker processes, in the
running reactor. Each C{async def} test runs in the reactor thread (see
C{tests/conftest.py}).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from asynqueue import (
    Deferator,
    ListConsumer,
    ProcessQueue,
    RemoteTaskError,
    TaskTimeout,
    WorkerError,
)

from . import processtasks as pt
from .test_consumers import Boom, FaultyConsumer


def pause(seconds: float) -> Deferred[None]:
    """
    Reactor thread: a Deferred that fires after C{seconds}.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    """
    Whether process C{pid} exists (and isn't a zombie we should have reaped).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def waitGone(pid: int, seconds: float = 10) -> bool:
    """
    Wait until process C{pid} is gone.
    """
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        await pause(0.05)
    return not alive(pid)


async def test_callsRunInOtherProcesses() -> None:
    """
    Calls run in worker processes, spread over them, and results and
    exceptions (with their type and remote traceback) come back.
    """
    q = ProcessQueue(2)
    try:
        assert await q.call(pt.add, 2, y=3) == 5
        pids = {await d for d in [q.call(pt.pid) for _ in range(6)]}
        assert os.getpid() not in pids
        assert len(pids) == 2
        with pytest.raises(pt.CustomError) as info:
            await q.call(pt.raiseCustom, "remote trouble")
        assert "raiseCustom" in info.value.remoteTraceback  # type: ignore[attr-defined]
        with pytest.raises(RemoteTaskError) as info2:
            await q.call(pt.raiseUnpicklable)
        assert info2.value.remoteType.endswith("Unpicklable")
    finally:
        await q.shutdown()


async def test_badCallAtCallTime() -> None:
    """
    An unpicklable callable is refused at call time with a TypeError naming
    it; the queue keeps working.
    """
    q = ProcessQueue(1)
    try:
        with pytest.raises(TypeError, match="lambda"):
            q.call(lambda: 1)
        assert await q.call(pt.add, 1) == 1
    finally:
        await q.shutdown()


async def test_iteratorStreams() -> None:
    """
    An iterator streams back in batches, as a Deferator or to a consumer.
    """
    q = ProcessQueue(1, batchSize=100)
    try:
        dr = await q.call(pt.count, 1050)
        assert isinstance(dr, Deferator)
        assert [x async for x in dr] == list(range(1050))
        consumer = ListConsumer()
        assert await q.call(pt.count, 5000, consumer=consumer) is consumer
        assert consumer.items == list(range(5000))
        with pytest.raises(pt.CustomError):
            await q.call(pt.count, 500, failAt=250, consumer=ListConsumer())
        # A consumer that raises fails the call; the process is free again.
        for where in ("register", "write", "unregister"):
            with pytest.raises(Boom, match=where):
                await q.call(pt.count, 500, consumer=FaultyConsumer(where))
            assert await q.call(pt.add, 1, y=1) == 2
    finally:
        await q.shutdown()


async def test_stdoutNoise() -> None:
    """
    A task that prints doesn't corrupt the wire.
    """
    q = ProcessQueue(1)
    try:
        assert await q.call(pt.printAndReturn, "x" * 1000) == "x" * 1000
    finally:
        await q.shutdown()


async def test_cancelKillsAndRecovers() -> None:
    """
    Cancelling a running call kills its process: the caller hears
    L{CancelledError} after the process ended; the next call gets a new
    process.
    """
    q = ProcessQueue(1)
    try:
        first = await q.call(pt.pid)
        # Running as soon as it is handed to the idle process: the
        # cancellation kills the process whether or not the child has
        # read the call yet.
        d = q.call(pt.sleepFor, 60)
        d.cancel()
        with pytest.raises(CancelledError):
            await d
        assert await waitGone(first)
        second = await q.call(pt.pid)
        assert second != first
    finally:
        await q.shutdown()


async def test_timeout() -> None:
    """
    A call running past its timeout fails with L{TaskTimeout}.
    """
    # The queue's timeouts run on a Clock (the process on the reactor): the
    # call times out when the test says, not after some wall-clock time.
    clock = Clock()
    q = ProcessQueue(1, clock=clock)
    try:
        await q.call(pt.pid)
        d = q.call(pt.sleepFor, 60, timeout=5)
        clock.advance(4.9)
        assert not d.called
        clock.advance(0.1)
        with pytest.raises(TaskTimeout):
            await d
        assert await q.call(pt.add, 1, y=1) == 2
    finally:
        await q.shutdown()


async def test_processDeath() -> None:
    """
    A process that exits under a call fails it with L{WorkerError}.
    """
    q = ProcessQueue(1)
    try:
        with pytest.raises(WorkerError):
            await q.call(pt.hardExit)
        assert await q.call(pt.add, 3) == 3
    finally:
        await q.shutdown()


async def test_shutdownLeavesNothing() -> None:
    """
    After shutdown, no worker process is left, not even a zombie.
    """
    q = ProcessQueue(2)
    pids: list[Any] = []
    pids.extend([await q.call(pt.pid), await q.call(pt.pid)])
    await q.shutdown()
    for pid in set(pids):
        assert await waitGone(pid), f"worker process {pid} is still there"


async def test_childRunsThisAsynqueue(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The worker process runs the asynqueue the parent runs, even when the
    current directory holds another one.
    """
    other = tmp_path / "asynqueue"
    other.mkdir()
    (other / "__init__.py").write_text("raise ImportError('another asynqueue')\n")
    monkeypatch.chdir(tmp_path)
    q = ProcessQueue(1)
    try:
        assert await q.call(pt.add, 2, 3) == 5
    finally:
        await q.shutdown()
