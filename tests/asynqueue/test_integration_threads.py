"""
Integration tests: L{ThreadQueue} with real threads, in the running reactor.
Each C{async def} test runs in the reactor thread (see C{tests/conftest.py}).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from asynqueue import (
    Deferator,
    ListConsumer,
    QueueStopped,
    TaskTimeout,
    ThreadQueue,
    currentTask,
)

from .test_consumers import Boom, FaultyConsumer


class Interrupted(Exception):
    """
    Raised by a task that was told to stop.
    """


def blockUntilInterrupted(
    finished: list[str], started: Deferred[None] | None = None
) -> str:
    """
    Worker thread: wait until the task is interrupted, then raise. Fires
    C{started} (in the reactor thread) once it can be interrupted.
    """
    task = currentTask()
    assert task is not None
    wake = threading.Event()
    task.onInterrupt(lambda reason: wake.set())
    if started is not None:
        from twisted.internet import reactor

        reactor.callFromThread(started.callback, None)  # type: ignore[attr-defined]
    if not wake.wait(30):
        return "never interrupted"
    finished.append(threading.current_thread().name)
    raise Interrupted()


async def test_resultsAndThreadAffinity() -> None:
    """
    Calls run in the queue's threads (never the reactor's); one worker
    always uses the same thread.
    """
    q = ThreadQueue(1, name="affinity")
    try:
        names = [
            await q.call(lambda: threading.current_thread().name) for _ in range(5)
        ]
        assert set(names) == {"affinity-0"}
        assert await q.deferToThread(lambda x, y: x * y, 6, y=7) == 42
        with pytest.raises(ZeroDivisionError):
            await q.call(lambda: 1 / 0)
    finally:
        await q.shutdown()


async def test_parallelThreads() -> None:
    """
    With n threads, n calls really run at once.
    """
    q = ThreadQueue(3)
    barrier = threading.Barrier(3, timeout=10)
    try:
        results = [q.call(barrier.wait) for _ in range(3)]
        assert sorted([await d for d in results]) == [0, 1, 2]
    finally:
        await q.shutdown()


async def test_deferatorAcrossThreads() -> None:
    """
    An iterator in a worker thread is iterated with C{async for}, fetched in
    that same thread.
    """
    q = ThreadQueue(2, batchSize=7, holdIterations=True)
    seen: set[str] = set()

    def gen() -> Any:
        for i in range(100):
            seen.add(threading.current_thread().name)
            yield i

    try:
        dr = await q.call(gen)
        assert isinstance(dr, Deferator)
        assert [x async for x in dr] == list(range(100))
        assert len(seen) == 1
    finally:
        await q.shutdown()


async def test_consumer() -> None:
    """
    Ten thousand items reach a consumer, in order.
    """
    q = ThreadQueue(1)
    try:
        consumer = ListConsumer()
        result = await q.call(lambda: iter(range(10_000)), consumer=consumer)
        assert result is consumer
        assert consumer.items == list(range(10_000))
    finally:
        await q.shutdown()


async def test_consumerErrors() -> None:
    """
    A consumer that raises, from any of its methods, fails the call with
    its exception; the one thread, held by the iteration, is free again for
    the next call.
    """
    q = ThreadQueue(1, batchSize=10, holdIterations=True)
    try:
        for where in ("register", "write", "unregister"):
            consumer = FaultyConsumer(where, failAt=25)
            with pytest.raises(Boom, match=where):
                await q.call(lambda: iter(range(100)), consumer=consumer)
            assert await q.call(lambda: "next") == "next"
    finally:
        await q.shutdown()


async def test_honestCancel() -> None:
    """
    Cancelling a running call with an interrupter: the caller hears
    L{CancelledError} only after the thread has finished with it.
    """
    q = ThreadQueue(1)
    finished: list[str] = []
    try:
        started: Deferred[None] = Deferred()
        d = q.call(blockUntilInterrupted, finished, started)
        # Cancel once the call runs in its thread (not while it waits).
        await started
        d.cancel()
        with pytest.raises(CancelledError):
            await d
        assert finished, "the caller heard before the thread finished"
        assert await q.call(lambda: "next") == "next"
    finally:
        await q.shutdown()


async def test_timeoutInterrupts() -> None:
    """
    A running call that times out is interrupted and fails with
    L{TaskTimeout} after its thread finished.
    """
    # The timeout runs on a Clock: it fires when the test says, once the
    # call runs in its thread, not after some wall-clock time.
    clock = Clock()
    q = ThreadQueue(1, clock=clock)
    finished: list[str] = []
    try:
        started: Deferred[None] = Deferred()
        d = q.call(blockUntilInterrupted, finished, started, timeout=5)
        await started
        clock.advance(4.9)
        assert not d.called
        clock.advance(0.1)
        with pytest.raises(TaskTimeout):
            await d
        assert finished
    finally:
        await q.shutdown()


async def test_shutdownEndsThreads() -> None:
    """
    Shutdown runs queued calls, ends the threads, and refuses new calls.
    """
    q = ThreadQueue(2, name="ending")
    ds = [q.call(lambda i=i: i) for i in range(20)]
    threads: list[threading.Thread] = []
    for w in q.workers:
        thread = w.runner.thread
        if thread is not None:
            threads.append(thread)
    await q.shutdown()
    assert [await d for d in ds] == list(range(20))
    assert threads
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    with pytest.raises(QueueStopped):
        await q.call(lambda: None)
