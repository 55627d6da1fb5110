"""
Calls from other threads to the reactor thread, many per wake-up.

Twisted's C{callFromThread} wakes the reactor for every call: a write to
its waker pipe, for which the calling thread lets the GIL go and takes it
back. When several worker threads hand results back at once, the reactor is
mostly already due to wake for an earlier one. A L{Mailbox} queues the
calls and asks the reactor to run them (one C{callFromThread}, one
wake-up) only when no earlier request is still waiting; the reactor then
runs every call that has arrived, in the order they came.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

_log = Logger()


class Mailbox:
    """
    Calls from any thread, run in the reactor thread in the order they were
    posted, with one C{callFromThread} for all the calls that arrive while
    the reactor has not yet run the last one asked for.

    L{post} takes the place of C{reactor.callFromThread} for a group of
    threads (every worker of a queue, say): calls that must keep their
    order must all go through the same mailbox.
    """

    def __init__(self, callFromThread: Callable[..., object]) -> None:
        """
        @param callFromThread: The reactor's C{callFromThread} (or a test's
            stand-in).
        """
        self._callFromThread = callFromThread
        # Any thread appends; the reactor thread pops from the left: both
        # atomic.
        self._calls: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        # True from the moment a run is asked of the reactor until it starts.
        self._asked = False
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
            self._asked = True
            self._callFromThread(self._runAllJob)

    def _runAll(self) -> None:
        # Reactor thread. Cleared before the first call is taken, so that a
        # call posted meanwhile either runs here or asks for another run.
        self._asked = False
        calls = self._calls
        while calls:
            f, args = calls.popleft()
            try:
                f(*args)
            except Exception:
                # As callFromThread does: logged, and the rest still run.
                _log.failure("Error in a call from a thread: {f!r}", f=f)


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
            mailbox = _mailboxes[reactor] = Mailbox(reactor.callFromThread)
        return mailbox
