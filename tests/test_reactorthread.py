"""
The test plumbing: async tests and L{runInReactor} run in the reactor thread.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from tests.reactorthread import ReactorTimeoutError, inReactorThread, runInReactor


class _Marker(Exception):
    pass


async def test_asyncTestRunsInReactor() -> None:
    """
    An C{async def} test runs in the reactor thread and may await Deferreds.
    """
    from twisted.internet import reactor

    assert inReactorThread()
    value = await task.deferLater(reactor, 0.01, lambda: 42)
    assert value == 42


def test_runInReactorValues() -> None:
    """
    L{runInReactor} returns plain values, Deferred results and coroutine
    results, and calls in the reactor thread.
    """
    assert runInReactor(inReactorThread) is True
    assert not inReactorThread()
    assert runInReactor(defer.succeed, 7) == 7

    async def coroutine(x: int) -> int:
        return x + 1

    assert runInReactor(coroutine, 1) == 2


def test_runInReactorErrors() -> None:
    """
    An exception raised, or a failed Deferred, reaches the caller with its
    type and the traceback of where it was raised.
    """

    def fails() -> None:
        raise _Marker("boom")

    with pytest.raises(_Marker) as info:
        runInReactor(fails)
    assert info.traceback[-1].name == "fails"

    async def failsLater() -> None:
        await defer.succeed(None)
        raise _Marker("later")

    with pytest.raises(_Marker, match="later"):
        runInReactor(failsLater)


def test_runInReactorTimeout() -> None:
    """
    A Deferred that never fires is cancelled after the timeout.
    """
    cancelled: list[bool] = []
    never: defer.Deferred[None] = defer.Deferred(lambda d: cancelled.append(True))
    with pytest.raises(ReactorTimeoutError):
        runInReactor(lambda: never, timeout=0.1)
    assert cancelled == [True]


@pytest.mark.reactorTimeout(5)
async def test_reactorTimeoutMarker() -> None:
    """
    The C{reactorTimeout} marker is accepted (strict markers are on).
    """
    await defer.succeed(None)
