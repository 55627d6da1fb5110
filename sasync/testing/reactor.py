"""
The global Twisted reactor, running in a daemon thread for a test session.

A test runner such as pytest runs tests in its main thread; everything
Twisted runs in the reactor thread. L{runInReactor} is the one bridge
between them: it calls a function in the reactor thread, waits for its
result (a plain value, a L{Deferred<twisted.internet.defer.Deferred>} or a
coroutine) and returns it, or raises its exception with the real traceback.

The reactor starts on first use and cannot be restarted once stopped
(the pytest plugin, L{sasync.testing.plugin}, calls L{stopReactor} at the
end of the session). Don't use it together with trial's asynchronous
C{TestCase}, which runs the same global reactor in the main thread.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

#: Seconds L{runInReactor} waits by default.
DEFAULT_TIMEOUT = 60.0

# Only touched from pytest's main thread.
_thread: threading.Thread | None = None


class ReactorTimeoutError(TimeoutError):
    """
    A function run by L{runInReactor} did not finish in time (it was
    cancelled).
    """


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def inReactorThread() -> bool:
    """
    @return: whether the caller runs in the reactor thread.
    """
    return _thread is not None and threading.current_thread() is _thread


def startReactor() -> Any:
    """
    Start the global reactor in a daemon thread, unless it already runs.

    Also reaps child processes every 0.1 s: without signal handlers (only the
    main thread may install them) Twisted would never notice a child's end.

    @return: the running reactor.
    """
    global _thread
    reactor = _reactor()
    if _thread is not None:
        if not _thread.is_alive():
            raise RuntimeError("the test reactor has stopped; it cannot restart")
        return reactor
    running = threading.Event()

    def started() -> None:
        from twisted.internet import process

        LoopingCall(process.reapAllProcesses).start(0.1)
        running.set()

    cast(IReactorCore, reactor).callWhenRunning(started)
    _thread = threading.Thread(
        target=reactor.run,
        kwargs={"installSignalHandlers": False},
        name="twisted-reactor",
        daemon=True,
    )
    _thread.start()
    if not running.wait(30):
        raise RuntimeError("the Twisted reactor did not start within 30 s")
    return reactor


def stopReactor(timeout: float = 30.0) -> None:
    """
    Stop the reactor thread (running the reactor's shutdown triggers) and
    wait for it, if it was ever started.
    """
    if _thread is None or not _thread.is_alive():
        return
    reactor = _reactor()
    cast(IReactorThreads, reactor).callFromThread(reactor.stop)
    _thread.join(timeout)


def _describe(f: Callable[..., object]) -> str:
    name = getattr(f, "__qualname__", None)
    return name if isinstance(name, str) else repr(f)


def runInReactor(
    f: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT, **kw: Any
) -> Any:
    """
    Call C{f(*args, **kw)} in the reactor thread and wait for its result.

    C{f} may return a plain value, a L{Deferred<twisted.internet.defer.Deferred>} or
    a coroutine (run with
    L{Deferred.fromCoroutine<twisted.internet.defer.Deferred.fromCoroutine>}).
    Call this from a test's thread, never from the reactor thread (that
    would deadlock; it raises C{RuntimeError} instead).

    @param timeout: seconds to wait; then the
        L{Deferred<twisted.internet.defer.Deferred>} is cancelled and
        L{ReactorTimeoutError} raised.
    @return: the result.
    @raise BaseException: whatever C{f} raised or its
        L{Deferred<twisted.internet.defer.Deferred>} failed with, with its
        original traceback.
    """
    __tracebackhide__ = True
    if inReactorThread():
        raise RuntimeError("runInReactor called from the reactor thread")
    reactor = startReactor()
    done = threading.Event()
    outcome: list[tuple[bool, Any]] = []  # (succeeded, result or exception)
    started: list[Deferred[Any]] = []

    # Runs in the reactor thread: the Deferred is made and chained there.
    def start() -> None:
        try:
            result = f(*args, **kw)
            if inspect.iscoroutine(result):
                result = Deferred.fromCoroutine(result)
        except BaseException as e:
            outcome.append((False, e))
            done.set()
            return
        if not isinstance(result, Deferred):
            outcome.append((True, result))
            done.set()
            return
        started.append(result)

        def finish(value: object) -> None:
            if isinstance(value, Failure):
                outcome.append((False, value.value))
            else:
                outcome.append((True, value))
            done.set()

        result.addBoth(finish)

    def cancel() -> None:
        for d in started:
            d.cancel()

    threads = cast(IReactorThreads, reactor)
    threads.callFromThread(start)
    if not done.wait(timeout):
        threads.callFromThread(cancel)
        done.wait(5)
        raise ReactorTimeoutError(
            f"{_describe(f)} did not finish within {timeout:g} s"
            " in the reactor thread; it was cancelled"
        )
    succeeded, result = outcome[0]
    if not succeeded:
        raise result
    return result
