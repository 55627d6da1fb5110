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
        clock = self.clock
        deadline = None if self.timeout is None else clock.seconds() + self.timeout
        state: dict[str, Any] = {"interval": self.interval, "call": None}

        def cancel(_: Deferred[bool]) -> None:
            call = state["call"]
            if call is not None and call.active():
                call.cancel()

        result: Deferred[bool] = Deferred(cancel)

        def poll() -> None:
            state["call"] = None
            if result.called:
                return
            maybeDeferred(check).addCallbacks(checked, failed)

        def checked(value: object) -> None:
            if result.called:
                return
            if value:
                result.callback(True)
                return
            now = clock.seconds()
            if deadline is not None and now >= deadline:
                result.callback(False)
                return
            wait = state["interval"]
            state["interval"] = wait * self.backoff
            if deadline is not None:
                # The last check falls on the deadline, not after it.
                wait = min(wait, deadline - now)
            state["call"] = clock.callLater(wait, poll)

        def failed(failure: Failure) -> None:
            if not result.called:
                result.errback(failure)

        poll()
        return result


__all__ = ["Delay"]
