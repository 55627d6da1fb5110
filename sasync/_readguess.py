"""
Which calls run READ ONLY by guess (PostgreSQL at SERIALIZABLE, with the
default retries), and so pass the writer gate (L{sasync._writegate}) by.

A READ ONLY transaction takes no part in the conflicts of serializable
writers (PostgreSQL drops its read locks once its snapshot is known safe),
and a write in one fails at once with SQLSTATE C{25006} before anything is
written, so a wrong guess costs the work done up to that write: the call
then runs again at once, read-write and through the gate, and is not
guessed again (L{CallGuess}).

  - A method seen only reading so far (never writing) is guessed READ
    ONLY; a method not seen yet is not.
  - A method seen writing is guessed READ ONLY, call by call, while at
    least L{GUESS_SHARE} of its recent calls only read (L{MethodMix}): one
    method that reads or writes depending on its arguments, as the seed's
    benchmark op does, would otherwise hold its readers at the gate behind
    its writers, and run them as serializable readers that take part in
    the writers' conflicts.

Reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from . import retry

#: The least share of a writing method's recent calls that only read for
#: its calls to be guessed READ ONLY. (Each wrong guess costs a writer one
#: short failed attempt; each right one lets a reader run at once, out of
#: the writers' conflicts.)
GUESS_SHARE = 0.25
#: How much each call's outcome moves a method's share (about the last 16
#: calls count).
WEIGHT = 1 / 16


class MethodMix:
    """
    Per method: the share of its recent calls that only read (an
    exponentially weighted average), learned from the calls' outcomes.
    """

    def __init__(self) -> None:
        self._reads: dict[Callable[..., Any], float] = {}

    def share(self, f: Callable[..., Any]) -> float | None:
        """
        The share of C{f}'s recent calls that only read, or C{None} if none
        of its calls ended yet.
        """
        return self._reads.get(f)

    def guess(self, f: Callable[..., Any], wrote: bool | None) -> bool:
        """
        Whether a call of C{f} runs READ ONLY by guess.

        @param wrote: Whether C{f} was ever seen writing (C{None}: it never
            ended yet).
        """
        if wrote is None:
            return False
        if wrote is False:
            return True
        share = self._reads.get(f)
        return share is not None and share >= GUESS_SHARE

    def ended(self, f: Callable[..., Any], wrote: bool) -> None:
        """
        A call of C{f} ended: it wrote (or tried to, guessed READ ONLY) or
        only read.
        """
        share = self._reads.get(f)
        sample = 0.0 if wrote else 1.0
        self._reads[f] = sample if share is None else share + WEIGHT * (sample - share)


class CallGuess:
    """
    One call's guess, across its attempts: they run READ ONLY by guess
    until one of them tries to write.

    @ivar readOnly: Whether the next attempt runs READ ONLY by guess.
    """

    __slots__ = ("readOnly",)

    def __init__(self, readOnly: bool) -> None:
        self.readOnly = readOnly

    def ended(self, result: object, mix: MethodMix, call: Any) -> object:
        """
        Chained to each attempt's Deferred: learn what it did (C{call} is
        its L{sasync.transact.TransactionCall}).
        """
        f = call.f
        if isinstance(result, Failure):
            error = result.value
            if error is not None and retry.retryReason(error) == retry.WROTE_READ_ONLY:
                self.readOnly = False
                mix.ended(f, True)
        elif call.wroteNow is not None:
            mix.ended(f, bool(call.wroteNow))
        return result


#: Shared by every broker, as what a method did is (see L{sasync._admission}).
methodMix = MethodMix()

__all__ = ["GUESS_SHARE", "CallGuess", "MethodMix", "methodMix"]
