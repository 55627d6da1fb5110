"""
Calls from other threads to the reactor thread, many per wake-up.

Twisted's C{callFromThread} wakes the reactor for every call: a write to
its waker pipe, for which the calling thread lets the GIL go and takes it
back. When several worker threads hand results back at once, the reactor is
mostly already due to wake for an earlier one. A L{Mailbox} queues the
calls and asks the reactor to run them (one C{callFromThread}, one
wake-up) only when no earlier request is still waiting; the reactor then
runs every call that has arrived, in the order they came.

A worker thread that already has its next task may also give way to a
reactor kept from its results or from a timer that is due
(L{Mailbox.giveWay}): several threads running Python beside the reactor pass
the GIL among themselves, and the reactor, one contender among them, waits
its turn behind each.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from twisted.logger import Logger

_log = Logger()

#: Seconds a run asked of the reactor may wait before a worker thread
#: between two tasks gives way (L{Mailbox.giveWay}): a reactor that is free
#: starts one within about 0.1 ms.
GIVE_WAY_AFTER = 0.0003
#: Seconds a timer of the reactor's may be late before a worker thread
#: gives way to it. Less is normal: a reactor asleep in its poll overruns a
#: timer by up to a millisecond (the timeout is rounded up), and one that
#: waits for the GIL behind a single thread gets it at that thread's next
#: statement; giving way costs the thread the reactor's whole turn. More
#: means the reactor has lost the GIL to thread after thread.
TIMER_LATE_AFTER = 0.004
#: The longest a worker thread gives way for, once (seconds): a reactor
#: kept busy by other work (or stopped) holds it up no longer than that.
GIVE_WAY_MOST = 0.02


class Mailbox:
    """
    Calls from any thread, run in the reactor thread in the order they were
    posted, with one C{callFromThread} for all the calls that arrive while
    the reactor has not yet run the last one asked for.

    L{post} takes the place of C{reactor.callFromThread} for a group of
    threads (every worker of a queue, say): calls that must keep their
    order must all go through the same mailbox.
    """

    def __init__(
        self,
        callFromThread: Callable[..., object],
        now: Callable[[], float] = monotonic,
        timers: Any = None,
    ) -> None:
        """
        @param callFromThread: The reactor's C{callFromThread} (or a test's
            stand-in).
        @param now: A monotonic clock, in seconds (tests pass their own).
        @param timers: The reactor whose timed calls threads giving way
            look at too, if it is one of Twisted's own loops (epoll, poll,
            select, kqueue: a C{twisted.internet.base.ReactorBase}); for any
            other (a C{Clock}; the asyncio reactor, whose timers are
            asyncio's) or C{None}, threads give way for runs asked only.
        """
        self._callFromThread = callFromThread
        self._now = now
        # Read from any thread, as a hint only: the heap is Twisted's own
        # (private), and one being changed meanwhile may show another call
        # first.
        self._loop = (
            timers
            if isinstance(getattr(timers, "_pendingTimedCalls", None), list)
            else None
        )
        # Any thread appends; the reactor thread pops from the left: both
        # atomic.
        self._calls: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        # True from the moment a run is asked of the reactor until it starts.
        self._asked = False
        # When the run now asked for was asked (meaningful while _asked).
        self._askedAt = 0.0
        # What threads giving way wait on: made by the first of them, set
        # and dropped at the end of the next run.
        self._ran: threading.Event | None = None
        self._ranLock = threading.Lock()
        # Bound once: this is asked for once per wake-up.
        self._runAllJob = self._runAll

    def post(self, f: Callable[..., object], *args: Any) -> None:
        """
        Have the reactor thread call C{f(*args)}; safe from any thread.
        """
        self._calls.append((f, args))
        # Appended before the flag is read: a run that has cleared the flag
        # will see this call, and one that has not is still to come.
        if not self._asked:
            # The time first: a thread that sees the flag sees this ask's.
            self._askedAt = self._now()
            self._asked = True
            self._callFromThread(self._runAllJob)

    def giveWay(
        self,
        after: float = GIVE_WAY_AFTER,
        most: float = GIVE_WAY_MOST,
        timerAfter: float = TIMER_LATE_AFTER,
    ) -> bool:
        """
        Any thread but the reactor's, between two pieces of work: if the
        reactor has not started a run asked of it more than C{after}
        seconds ago, or (with none asked) one of its timed calls is more
        than C{timerAfter} seconds late, wait, without the GIL, until the
        reactor's next run of this mailbox has ended (at most C{most}
        seconds), so that one thread fewer competes with the reactor for
        the GIL meanwhile.

        A late timer means the reactor is waiting for the GIL (the thread
        asking holds it): the thread asks a run of its own, which the
        reactor makes in the same turn as the timer's (before it).

        @return: whether the reactor was found behind (and the thread
            waited).
        """
        if self._asked:
            if self._now() - self._askedAt <= after:
                return False
        else:
            # (Inline, not a method of its own: this runs per statement. A
            # reactor stopped or not yet started runs no timer soon.)
            loop = self._loop
            if loop is None or not loop.running:
                return False
            try:
                # (Read each time: the reactor replaces the list when it
                # drops cancelled calls.)
                due = loop._pendingTimedCalls[0].time
            except IndexError:
                return False
            if loop.seconds() - due <= timerAfter:
                return False
        with self._ranLock:
            # (Two threads must not each make one: the run would set only
            # the second.)
            ran = self._ran
            if ran is None:
                ran = self._ran = threading.Event()
        if not self._asked:
            # A run of its own to wait for. (Two threads may both ask: the
            # second run finds nothing.)
            self.post(_nothing)
        # Looked at again after the event is in place: a run that has
        # already cleared the flag may have missed the event, one that has
        # not will set it.
        if self._asked:
            ran.wait(most)
        return True

    def _runAll(self) -> None:
        # Reactor thread. Cleared before the first call is taken, so that a
        # call posted meanwhile either runs here or asks for another run.
        self._asked = False
        calls = self._calls
        try:
            while calls:
                f, args = calls.popleft()
                try:
                    f(*args)
                except Exception:
                    # As callFromThread does: logged, and the rest still run.
                    _log.failure("Error in a call from a thread: {f!r}", f=f)
        finally:
            # At the end, not the start: threads that gave way come back
            # once the results are handed out and their next tasks given.
            ran = self._ran
            if ran is not None:
                self._ran = None
                ran.set()


def _nothing() -> None:
    pass


_mailboxes: weakref.WeakKeyDictionary[Any, Mailbox] = weakref.WeakKeyDictionary()
# A worker may look its mailbox up first from its own thread (a
# ThreadWorker resolves it on first use): one mailbox per reactor all the
# same.
_mailboxesLock = threading.Lock()


def mailboxFor(reactor: Any) -> Mailbox:
    """
    The one L{Mailbox} for C{reactor}'s C{callFromThread}, made on first
    use: every worker handing results to that reactor shares it, so that
    their results share wake-ups. Safe from any thread (each worker asks
    once).
    """
    with _mailboxesLock:
        mailbox = _mailboxes.get(reactor)
        if mailbox is None:
            mailbox = _mailboxes[reactor] = Mailbox(
                reactor.callFromThread, timers=reactor
            )
        return mailbox
