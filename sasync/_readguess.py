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
    ONLY; a method not seen yet is not. The call passes the gate by, and
    is checked again as it starts, as below: once one call of a burst
    made together has written, the rest go back through the gate rather
    than run read-write beside the writers it let in.
  - A method that writes where sAsync does not see it (through the raw
    DB-API cursor: only statements that go through SQLAlchemy are looked
    at; or in a SELECT, with nextval()) seems to only read, until a
    guess of one of its calls is refused a write that sAsync did not see
    coming: from then on it is never guessed (L{MethodMix.hidesWrites}),
    rather than pay a failed attempt on the calls that its unseen writes
    keep making look like reads.
  - A method seen writing is guessed READ ONLY, call by call, while at
    least L{GUESS_SHARE} of its recent calls only read (L{MethodMix}), once
    its writes were counted: one method that reads or writes depending on
    its arguments would otherwise hold its readers at the gate behind its
    writers, and run them as serializable readers that take part in the
    writers' conflicts. The guess is made with the call (it passes the
    gate by) and checked again as it starts: withdrawn by calls that ended
    meanwhile, the call goes back through the gate before anything is sent
    (L{retry.GUESS_WITHDRAWN}); a retry decides again.

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
GUESS_SHARE = 2 / 3
#: About how many of a method's last calls its share counts: once this
#: many were counted, the counts are halved.
WINDOW = 128


class MethodMix:
    """
    Per method: the share of its recent calls that only read, learned from
    the calls' outcomes. Counts halved now and then, rather than an average
    weighted by recency: calls made at once end in no telling order (the
    readers of a burst first, often), which would sway such an average.
    """

    def __init__(self) -> None:
        # f -> [calls that only read, calls] (halved at WINDOW calls).
        self._counts: dict[Callable[..., Any], list[float]] = {}
        # The methods never guessed again (see hidesWrites).
        self._hidden: set[Callable[..., Any]] = set()

    def share(self, f: Callable[..., Any]) -> float | None:
        """
        The share of C{f}'s recent calls that only read, or C{None} if none
        of its calls ended yet.
        """
        counts = self._counts.get(f)
        return None if counts is None else counts[0] / counts[1]

    def guess(self, f: Callable[..., Any], wrote: bool | None) -> bool:
        """
        Whether a call of C{f} runs READ ONLY by guess.

        @param wrote: Whether C{f} was ever seen writing (C{None}: it never
            ended yet).
        """
        if wrote is None or f in self._hidden:
            return False
        if wrote is False:
            return True
        share = self.share(f)
        # (A share of 1: its writes were not counted yet, only seen by the
        # worker thread that ran one.)
        return share is not None and GUESS_SHARE <= share < 1

    def ended(self, f: Callable[..., Any], wrote: bool) -> None:
        """
        A call of C{f} ended: it wrote (or tried to, guessed READ ONLY) or
        only read.
        """
        counts = self._counts.get(f)
        if counts is None:
            counts = self._counts[f] = [0.0, 0.0]
        if not wrote:
            counts[0] += 1
        counts[1] += 1
        if counts[1] >= WINDOW:
            counts[0] /= 2
            counts[1] /= 2

    def hidesWrites(self, f: Callable[..., Any]) -> None:
        """
        A call of C{f} guessed READ ONLY was refused a write that sAsync did
        not see (one sent through the raw DB-API cursor): what its calls
        do cannot be learned, so none is guessed from now on.
        """
        self._hidden.add(f)

    def forget(self, f: Callable[..., Any]) -> None:
        """
        Forget what calls of C{f} did (for tests).
        """
        self._counts.pop(f, None)
        self._hidden.discard(f)

    def learned(self, f: Callable[..., Any], share: float, calls: int = 16) -> None:
        """
        Set C{f}'s share as if C{calls} calls had ended (for tests).
        """
        self._counts[f] = [share * calls, float(calls)]


class CallGuess:
    """
    One call's guess, across its attempts: they run READ ONLY by guess
    until one of them tries to write.

    @ivar readOnly: Whether the next attempt runs READ ONLY by guess.
    """

    __slots__ = ("counted", "readOnly")

    def __init__(self, readOnly: bool) -> None:
        self.readOnly = readOnly
        #: Whether what the call did was counted already (at once, by a
        #: wrong guess: its later attempts are not counted again).
        self.counted = False

    def ended(self, result: object, mix: MethodMix, call: Any) -> object:
        """
        Chained to each attempt's Deferred: learn what it did (C{call} is
        its L{sasync.transact.TransactionCall}).
        """
        if result.__class__ is not Failure:
            # (Every call: the common case first.)
            wrote = call.wroteNow
            if wrote is not None and not self.counted:
                self.counted = True
                mix.ended(call.f, wrote)
            return result
        error = result.value
        reason = None if error is None else retry.retryReason(error)
        if reason == retry.WROTE_READ_ONLY:
            self.readOnly = False
            if not call.wroteNow:
                # (The worker thread saw no write before the refusal.)
                mix.hidesWrites(call.f)
            if not self.counted:
                self.counted = True
                mix.ended(call.f, True)
        elif reason == retry.GUESS_WITHDRAWN:
            self.readOnly = False
        return result


#: Shared by every broker, as what a method did is (see L{sasync._admission}).
methodMix = MethodMix()

__all__ = ["GUESS_SHARE", "CallGuess", "MethodMix", "methodMix"]
