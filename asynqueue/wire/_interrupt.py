"""
Interrupting a call that runs in another thread, where Python allows it:
an exception raised in that thread at its next Python instruction
(C{PyThreadState_SetAsyncExc}). Code blocked in C (a C{sleep}, a read, a
long C loop) is interrupted only when it comes back to Python.

Used by the server of asynqueue.wire, whose tasks run in a thread per
connection: a cancelled task stops there, not just its caller.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class TaskInterrupted(BaseException):
    """
    Raised inside a running task that was cancelled or timed out. A
    C{BaseException}, like C{KeyboardInterrupt}, so that an C{except
    Exception} in the task does not swallow it.
    """


def _setAsyncExc(threadID: int, exc: type[BaseException] | None) -> int:
    # Returns how many thread states were changed (0: no such thread).
    setter: Any = ctypes.pythonapi.PyThreadState_SetAsyncExc
    target = ctypes.py_object(exc) if exc is not None else None
    return int(setter(ctypes.c_ulong(threadID), target))


class Interruptible:
    """
    Runs calls in the current thread (L{run}) so that another thread can
    interrupt them (L{interrupt}) with L{TaskInterrupted}, never after
    they returned: an interruption that comes too late is dropped, and
    never hits the code around the call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The token of the call running now, and its thread's ID.
        self._running: object | None = None
        self._threadID = 0

    def run(self, token: object, f: Callable[[], T]) -> T:
        """
        Call C{f()} in this thread, interruptible under C{token}.

        @raise TaskInterrupted: it was interrupted.
        """
        try:
            # Armed inside the try: an interruption may land as soon as
            # the lock is released.
            with self._lock:
                self._running = token
                self._threadID = threading.get_ident()
            return f()
        finally:
            self._disarm()

    def _disarm(self) -> None:
        # An interruption may land anywhere until the lock is held with
        # _running cleared: so try again until that is done, then drop any
        # interruption still pending.
        while True:
            try:
                with self._lock:
                    if self._running is not None:
                        self._running = None
                        _setAsyncExc(self._threadID, None)
                return
            except TaskInterrupted:
                continue

    def interrupt(self, token: object) -> bool:
        """
        Any thread: interrupt the call running under C{token}, if it still
        runs.

        @return: whether it was running (and is interrupted).
        """
        with self._lock:
            if self._running is None or self._running is not token:
                return False
            return _setAsyncExc(self._threadID, TaskInterrupted) == 1
