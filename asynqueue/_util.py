"""
Small helpers that asynqueue (and sAsync) would otherwise write again and
again: the lazily imported reactor, a Deferred that follows another, a list
of waiting Deferreds, and the check of a numeric argument.

Deferreds here are made, fired and chained in the reactor thread only.
"""

from __future__ import annotations

import numbers
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

N = TypeVar("N")

# The reactor -----------------------------------------------------------------


def globalReactor() -> Any:
    """
    The global reactor, imported only when asked for: code that takes a
    C{reactor=}, C{clock=} or C{callFromThread=} keyword calls this on first
    use, so that making the object installs no reactor.
    """
    from twisted.internet import reactor

    return reactor


def reactorClock() -> IReactorTime:
    """
    L{globalReactor}, as a clock (tests pass a
    C{twisted.internet.task.Clock} instead).
    """
    clock: IReactorTime = globalReactor()
    return clock


class LazyReactor:
    """
    A base for objects given a C{reactor=} that may be C{None}: their
    C{reactor} is the one given, else the global one, looked up on first
    use (so that making the object installs no reactor).
    """

    _reactor: Any = None

    @property
    def reactor(self) -> Any:
        """
        The reactor, resolved lazily.
        """
        if self._reactor is None:
            self._reactor = globalReactor()
        return self._reactor


# Deferreds -------------------------------------------------------------------


def follow(d: Deferred[Any]) -> Deferred[None]:
    """
    A new Deferred that fires with C{None} when C{d} fires, leaving C{d}'s
    own result alone: so that many callers can wait for one Deferred, and
    none of them can change what the others get.
    """
    out: Deferred[None] = Deferred()

    def passOn(result: object) -> object:
        out.callback(None)
        return result

    d.addBoth(passOn)
    return out


class Waiters:
    """
    Deferreds handed out by L{wait} and fired all together by L{fire} (or
    failed by L{fail}). A cancelled one just stops waiting.
    """

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        #: The Deferreds waiting (read it, don't change it): a plain list,
        #: whose truth callers on hot paths test without calling L{__len__}.
        self.waiting: list[Deferred[None]] = []

    def __len__(self) -> int:
        """
        How many are waiting.
        """
        return len(self.waiting)

    def wait(self) -> Deferred[None]:
        """
        @return: a Deferred that fires (with C{None}) at the next L{fire}.
        """
        d: Deferred[None] = Deferred(self._forget)
        self.waiting.append(d)
        return d

    def fire(self) -> None:
        """
        Fire every waiting Deferred (those that start waiting meanwhile wait
        for the next call).
        """
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    def fail(self, failure: Failure) -> None:
        """
        Fail every waiting Deferred with C{failure}.
        """
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.errback(failure)

    def _forget(self, d: Deferred[None]) -> None:
        if d in self.waiting:
            self.waiting.remove(d)


# Arguments -------------------------------------------------------------------


def checkNumber(
    value: N,
    name: str,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    positive: bool = False,
    noneOk: bool = False,
    typeError: type[Exception] = TypeError,
) -> N:
    """
    Check a numeric argument, and give it back.

    @param name: How the message names it (e.g. C{"niceness"}).
    @param integer: It must be an C{int} (a C{bool} never passes).
    @param low: The least it may be.
    @param high: The most it may be.
    @param positive: It must be more than zero.
    @param noneOk: C{None} passes too.
    @param typeError: What a value of the wrong type raises (an API whose
        contract says C{ValueError} for any bad value passes that).
    @raise TypeError: (or C{typeError}) C{value} is no number, or no C{int}
        with C{integer}.
    @raise ValueError: C{value} is out of range (NaN always is).
    """
    if value is None and noneOk:
        return value
    error: type[Exception]
    number: Any = value
    if isinstance(value, bool) or not (
        isinstance(value, int)
        if integer
        else isinstance(value, (int, float, numbers.Real))
    ):
        error = typeError
    elif (
        (positive and not number > 0)
        or (low is not None and not number >= low)
        or (high is not None and not number <= high)
    ):
        error = ValueError
    else:
        return value
    wanted = _wanted(integer, low, high, positive, noneOk)
    raise error(f"{name} must be {wanted}, not {value!r}")


def _wanted(
    integer: bool, low: float | None, high: float | None, positive: bool, noneOk: bool
) -> str:
    # What checkNumber asks for, in words: "an int from -20 to 20".
    kind = "int" if integer else "number"
    if positive:
        text = f"a positive {kind}"
    elif low is not None and high is not None:
        text = f"{'an' if integer else 'a'} {kind} from {low!r} to {high!r}"
    elif low is not None:
        text = f"{'an' if integer else 'a'} {kind} >= {low!r}"
    elif high is not None:
        text = f"{'an' if integer else 'a'} {kind} <= {high!r}"
    else:
        text = f"{'an' if integer else 'a'} {kind}"
    return f"{text} or None" if noneOk else text


__all__ = [
    "LazyReactor",
    "Waiters",
    "checkNumber",
    "follow",
    "globalReactor",
    "reactorClock",
]
