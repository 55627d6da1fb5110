"""
A broker's life, apart from what it runs: its L{Phase}, the start-up (and
the calls that wait for it), L{Lifecycle.waitUntilRunning}, the Deferreds
its shutdown waits for (an asynqueue L{DeferredTracker}), and the shutdown
itself with its drain timer.

L{Lifecycle} knows nothing of its broker: it is handed the start-up's body,
where waiting tasks go, and the shutdown's steps, as callables. Reactor
thread only.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from asynqueue import DeferredTracker, Task, Waiters
from asynqueue.task import TaskState

from . import startup
from .errors import BrokerStopped

log = Logger()

#: Seconds C{shutdown(timeout=...)} waits for the workers to close once
#: every caller has heard, before it leaves the ones still busy to finish
#: by themselves.
SHUTDOWN_GRACE = 1.0

#: The lifecycle whose start-up is running in this context (its calls are
#: queued at once instead of waiting for the start-up to finish).
_starting: contextvars.ContextVar[Lifecycle | None] = contextvars.ContextVar(
    "sasyncStarting", default=None
)
#: The same, for a caller that asks per call (L{Lifecycle.inStartupContext}
#: without the call: C{starting.get() is lifecycle}).
starting = _starting


class Phase(Enum):
    """
    Where a broker is in its life.
    """

    #: Made; its start-up runs on the next reactor turn.
    NEW = "new"
    #: The broker's C{startup()} (and C{first()}) are running.
    STARTING = "starting"
    #: Started; takes work until shutdown.
    RUNNING = "running"
    #: The start-up failed: every call fails with its error.
    FAILED = "failed"
    #: Shut down.
    STOPPED = "stopped"


class Lifecycle:
    """
    The phases of one broker, the calls waiting for its start-up and the
    Deferreds its shutdown waits for.

    @ivar phase: The current L{Phase}.
    @ivar accepting: False once shutdown began.
    @ivar startupWait: The start-up's wait for its database, once it began.
    """

    def __init__(
        self,
        *,
        name: str,
        url: str,
        startupTimeout: float,
        describe: Callable[[], str],
        getReactor: Callable[[], Any],
        runStartup: Callable[[], Awaitable[None]],
        submit: Callable[[Task[Any], float | None], Deferred[Any]],
    ) -> None:
        """
        @param name: The broker's class name, for errors.
        @param url: Its URL, password hidden, for errors.
        @param startupTimeout: Seconds the start-up waits for the database.
        @param describe: Names the broker in log events.
        @param getReactor: The reactor, resolved lazily.
        @param runStartup: The start-up's body (C{startup()}, C{first()}).
        @param submit: Where the tasks that waited for the start-up go.
        """
        self._name = name
        self._url = url
        self._startupTimeout = startupTimeout
        self._describe = describe
        self._getReactor = getReactor
        self._runStartup = runStartup
        self._submitTask = submit
        self.phase = Phase.NEW
        self.accepting = True
        self.startupWait: startup.StartupWait | None = None
        self._startupFailure: Failure | None = None
        self._startupDone: Deferred[None] | None = None
        self._waitingTasks: list[tuple[Task[Any], float | None]] = []
        self._runningWaiters = Waiters()
        self._tracker = tracker = DeferredTracker()
        #: Make shutdown wait until a Deferred fired (as L{track}), where
        #: the caller has a callback of its own on it that calls
        #: L{release} (see L{DeferredTracker.hold}: a callback less).
        self.hold: Callable[[Deferred[Any]], None] = tracker.hold
        #: A Deferred held with L{hold} fired.
        self.release: Callable[[Deferred[Any]], None] = tracker.release
        self._drainTimer: Any = None
        # When shutdown's timeout runs out (reactor.seconds()), if given.
        self._drainDeadline: float | None = None
        self._shutdownDone: Deferred[None] | None = None

    # Starting -----------------------------------------------------------------

    def start(self) -> None:
        """
        Run the start-up (once; later calls do nothing).
        """
        if self.phase is not Phase.NEW:
            return
        self.phase = Phase.STARTING
        self.startupWait = startup.StartupWait(
            self._startupTimeout, self._getReactor(), self._describe()
        )
        if not self.accepting:
            # Started by shutdown() for the calls waiting: don't wait long.
            self.startupWait.stop()
        token = _starting.set(self)
        try:
            self._startupDone = Deferred.fromCoroutine(self._startup())
        finally:
            _starting.reset(token)

    async def _startup(self) -> None:
        try:
            await self._runStartup()
        except BaseException:
            failure = Failure()  # type: ignore[no-untyped-call]
            if self.startupWait is not None:
                self.startupWait.end()
            self.phase = Phase.FAILED
            self._startupFailure = failure
            log.failure("{broker} failed to start", failure, broker=self._describe())
            waiting, self._waitingTasks = self._waitingTasks, []
            for task, _ in waiting:
                if not task.d.called:
                    # (Through the task: its onEnded hears of it.)
                    task.fail(self.startupError())
            self._fireRunningWaiters()
            return
        if self.phase is Phase.STARTING:
            self.phase = Phase.RUNNING
        waiting, self._waitingTasks = self._waitingTasks, []
        for task, timeout in waiting:
            if task.state is TaskState.QUEUED:  # (not cancelled meanwhile)
                self._submitTask(task, timeout)
        self._fireRunningWaiters()

    def startupError(self) -> Failure:
        """
        The error every call gets after a failed start-up.
        """
        assert self._startupFailure is not None
        return startup.startupError(
            self._name, self._url, self._startupFailure, self.startupWait
        )

    def inStartupContext(self) -> bool:
        """
        Whether the caller runs inside this start-up (its calls go at once).
        """
        return _starting.get() is self

    def inStartup(self) -> bool:
        """
        Whether this is work of the start-up itself (it waits for a
        missing database).
        """
        return self.phase is Phase.STARTING and _starting.get() is self

    def refusing(self) -> bool:
        """
        Whether new work is refused: after shutdown() only the start-up may
        still add some.
        """
        return not self.accepting and _starting.get() is not self

    def _fireRunningWaiters(self) -> None:
        if self.phase is Phase.FAILED:
            self._runningWaiters.fail(self.startupError())
        else:
            self._runningWaiters.fire()

    @property
    def running(self) -> bool:
        """
        Started and not shutting down.
        """
        return self.phase is Phase.RUNNING and self.accepting

    @property
    def waiting(self) -> int:
        """
        How many tasks wait for the start-up.
        """
        return len(self._waitingTasks)

    def waitUntilRunning(self) -> Deferred[None]:
        """
        Fires once started (at once if so); fails with the start-up's error,
        or with L{BrokerStopped} after shutdown.
        """
        if self.phase is Phase.RUNNING:
            return succeed(None)
        if self.phase is Phase.STOPPED:
            return fail(BrokerStopped(f"{self._name} is shut down"))
        if self.phase is Phase.FAILED:
            return fail(self.startupError())
        return self._runningWaiters.wait()

    def submit(self, task: Task[Any], timeout: float | None, now: bool) -> bool:
        """
        Decide what becomes of C{task}: C{True} if it may go to its queue
        now; otherwise it failed (the start-up failed, or the broker is
        shut down) or it waits for the start-up, and C{False}.

        @param now: Made by the start-up itself (or one of its retries).
        """
        if now or self.phase is Phase.RUNNING or _starting.get() is self:
            return True
        # (Failed through the task: its onEnded hears of it.)
        if self.phase is Phase.FAILED:
            task.fail(self.startupError())
        elif self.phase is Phase.STOPPED:
            stopped = BrokerStopped(f"{task.info} was refused: the broker is shut down")
            task.fail(Failure(stopped))  # type: ignore[no-untyped-call]
        else:
            self._waitingTasks.append((task, timeout))
        return False

    # Tracking -----------------------------------------------------------------

    def track(self, d: Deferred[Any]) -> None:
        """
        Make shutdown wait until C{d} fired (and, given a timeout, cancel it
        if it has not by then).
        """
        self._tracker.put(d)

    @property
    def tracked(self) -> int:
        """
        How many tracked Deferreds have not fired yet.
        """
        return len(self._tracker)

    # Shutting down ------------------------------------------------------------

    def stop(
        self,
        timeout: float | None,
        *,
        before: Callable[[], Awaitable[None]],
        close: Callable[[], Deferred[None]],
        abandon: Callable[[], None],
    ) -> Deferred[None]:
        """
        Refuse new work; run C{before}; wait for the start-up and every
        tracked Deferred; then C{close}. Idempotent (the first call's steps
        are the ones run).

        @param timeout: See C{AccessBroker.shutdown}.
        @param abandon: Called if C{close} did not finish within the grace
            after the timeout.
        @return: A Deferred of its own for each call.
        """
        if self._shutdownDone is None:
            self.accepting = False
            if self.startupWait is not None:
                self.startupWait.stop()
            if timeout is not None:
                # Armed first: with nothing left to wait for, the closing
                # starts at once and needs the deadline.
                self._armDrainTimer(timeout)
            self._shutdownDone = Deferred.fromCoroutine(
                self._stop(before, close, abandon)
            )
        elif timeout is not None and not self._shutdownDone.called:
            self._armDrainTimer(timeout)
        d: Deferred[None] = Deferred()

        def passOn(result: object) -> object:
            if isinstance(result, Failure):
                d.errback(result)
                return None
            d.callback(None)
            return result

        self._shutdownDone.addBoth(passOn)
        return d

    def _armDrainTimer(self, timeout: float) -> None:
        reactor = self._getReactor()
        deadline = reactor.seconds() + timeout
        if self._drainDeadline is None or deadline < self._drainDeadline:
            self._drainDeadline = deadline
        timer = self._drainTimer
        if timer is not None and timer.active():
            if timer.getTime() <= reactor.seconds() + timeout:
                return
            timer.cancel()
        self._drainTimer = reactor.callLater(timeout, self._cancelLeft)

    def _cancelLeft(self) -> None:
        # The drain timeout ran out. A Deferred already called here waits
        # for an honest stop: leave it be (cancelling it again would stop
        # waiting for the worker).
        self._drainTimer = None
        left = self._tracker.pending()
        if left:
            log.info(
                "{broker}: shutdown's timeout ran out; cancelling {n} calls",
                broker=self._describe(),
                n=len(left),
            )
        for d in left:
            if not d.called:
                d.cancel()

    async def _stop(
        self,
        before: Callable[[], Awaitable[None]],
        close: Callable[[], Deferred[None]],
        abandon: Callable[[], None],
    ) -> None:
        try:
            await self._drainAndClose(before, close, abandon)
        finally:
            # A timer armed by a later stop(timeout) call, after the drain:
            # nothing is left for it, and no call may outlive the broker.
            timer, self._drainTimer = self._drainTimer, None
            if timer is not None and timer.active():
                timer.cancel()

    async def _drainAndClose(
        self,
        before: Callable[[], Awaitable[None]],
        close: Callable[[], Deferred[None]],
        abandon: Callable[[], None],
    ) -> None:
        await before()
        if self.phase is Phase.NEW and self._waitingTasks:
            # Calls accepted before the start-up ran: start, so that they run.
            self.start()
        if self.phase is Phase.STARTING and self._startupDone is not None:
            await self._startupDone
        await self._tracker.deferToAll()
        timer, self._drainTimer = self._drainTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self.phase is not Phase.FAILED:
            self.phase = Phase.STOPPED
        closing = close()
        if self._drainDeadline is None:
            await closing
            return
        # With a timeout: every caller has heard by now; wait a little for
        # the workers to finish and close, but not for ones stuck (in code
        # that never returns to the database, or on a server that does not
        # answer: those are cut, see sasync.connection._cancel).
        reactor = self._getReactor()
        wait = max(self._drainDeadline - reactor.seconds(), 0.0) + SHUTDOWN_GRACE
        try:
            await closing.addTimeout(wait, reactor)
        except defer.TimeoutError:
            abandon()


__all__ = ["SHUTDOWN_GRACE", "Lifecycle", "Phase", "starting"]
