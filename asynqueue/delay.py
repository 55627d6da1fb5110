"""
L{Delay}: wait a while, or until something becomes true, without blocking
the reactor.

Reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from ._util import checkNumber, reactorClock


class Delay:
    """
    Polls a check at growing intervals until it is true or time runs out::

        ready = yield Delay(interval=0.05, backoff=1.2, timeout=10).untilEvent(
            lambda: os.path.exists(path))

    The first check is made at once; then after C{interval} seconds, then
    after C{interval * backoff}, and so on, each wait C{backoff} times the
    one before (so a long wait costs few checks).
    """

    def __init__(
        self,
        interval: float = 0.01,
        backoff: float = 1.04,
        timeout: float | None = None,
        *,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param interval: Seconds before the second check.
        @param backoff: How much longer each wait is than the one before:
            1.0 (always C{interval}) up to 2.0.
        @param timeout: Give up after this many seconds (C{None}: never).
        @param clock: The reactor by default (tests pass a C{Clock}).
        @raise ValueError: a parameter is out of range.
        """
        checkNumber(interval, "interval", positive=True)
        checkNumber(backoff, "backoff", low=1.0, high=2.0)
        checkNumber(timeout, "timeout", positive=True, noneOk=True)
        self.interval = interval
        self.backoff = backoff
        self.timeout = timeout
        self._clock = clock

    @property
    def clock(self) -> IReactorTime:
        """
        The clock, resolved lazily.
        """
        if self._clock is None:
            self._clock = reactorClock()
        return self._clock

    def __call__(self, seconds: float | None = None) -> Deferred[None]:
        """
        A Deferred that fires (with C{None}) after C{seconds}, or
        C{interval} by default. Cancelling it cancels the wait.
        """
        delay = self.interval if seconds is None else seconds
        call: list[IDelayedCall] = []
        d: Deferred[None] = Deferred(lambda _: call[0].cancel())
        call.append(self.clock.callLater(delay, d.callback, None))
        return d

    def untilEvent(self, check: Callable[[], Any]) -> Deferred[bool]:
        """
        Call C{check()} until it gives a true value.

        @param check: Returns a value, or a Deferred (or coroutine) of one;
            it is called again only after that has fired.
        @return: A Deferred firing with C{True} once C{check} gave a true
            value, or C{False} when the timeout ran out first. It fails if
            C{check} raises. Cancelling it stops the polling.
        @raise TypeError: C{check} is not callable.
        """
        if not callable(check):
            raise TypeError(f"check must be callable, not {check!r}")
        return _Polling(
            check, self.clock, self.interval, self.backoff, self.timeout
        ).result


class _Polling:
    """
    One L{Delay.untilEvent}: calls C{check} until it is true, the timeout
    runs out, or C{result} is cancelled.
    """

    def __init__(
        self,
        check: Callable[[], Any],
        clock: IReactorTime,
        interval: float,
        backoff: float,
        timeout: float | None,
    ) -> None:
        self.check = check
        self.clock = clock
        self.interval = interval
        self.backoff = backoff
        self.deadline = None if timeout is None else clock.seconds() + timeout
        self.call: IDelayedCall | None = None
        self.result: Deferred[bool] = Deferred(self._cancel)
        self._poll()

    def _cancel(self, _: Deferred[bool]) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()

    def _poll(self) -> None:
        self.call = None
        if self.result.called:
            return
        maybeDeferred(self.check).addCallbacks(self._checked, self._failed)

    def _checked(self, value: object) -> None:
        if self.result.called:
            return
        if value:
            self.result.callback(True)
            return
        now = self.clock.seconds()
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            self.result.callback(False)
            return
        wait = self.interval
        self.interval = wait * self.backoff
        if deadline is not None:
            # The last check falls on the deadline, not after it.
            wait = min(wait, deadline - now)
        self.call = self.clock.callLater(wait, self._poll)

    def _failed(self, failure: Failure) -> None:
        if not self.result.called:
            self.result.errback(failure)


__all__ = ["Delay"]
