"""
Job runners for L{ThreadWorker<asynqueue.workers.ThreadWorker>}: a
L{JobThread} runs jobs in one thread of its own, in order; a
L{MemoryJobRunner} keeps them until a test runs them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from .errors import WorkerError

_STOP = object()


class JobThread:
    """
    One thread that runs jobs (no-argument callables) in the order given. It
    is started with the first job. Jobs must not raise.

    L{do} and L{quit} are called from one thread (the reactor's).
    """

    def __init__(self, name: str = "asynqueue-worker") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.quitted = False
        # What the thread calls last, set before _STOP is queued.
        self._then: Callable[[], object] | None = None

    def do(self, job: Callable[[], object]) -> None:
        """
        Run C{job} in the thread, after the jobs given before it.

        @raise WorkerError: L{quit} was called: the job would never run.
        """
        if self.quitted:
            raise WorkerError(f"the thread {self.name} has quit")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=self.name, daemon=True
            )
            self._thread.start()
            # From now on do() is the queue's put itself, until quit()
            # (a call less per job).
            self.do = self._jobs.put  # type: ignore[method-assign,assignment]
        self._jobs.put(job)

    def quit(self, then: Callable[[], object] | None = None) -> None:
        """
        End the thread after the jobs already given, calling C{then} last,
        in the thread (only the first call's C{then}: the thread ends there).
        """
        quitted, self.quitted = self.quitted, True
        # do() refuses jobs again.
        self.__dict__.pop("do", None)
        if self._thread is None:
            if then is not None:
                then()
            return
        if not quitted:
            # (The queue makes the thread see _then once it gets _STOP.)
            self._then = then
            self._jobs.put(_STOP)

    def _loop(self) -> None:
        get = self._jobs.get
        while (job := get()) is not _STOP:
            job()
        if self._then is not None:
            self._then()

    @property
    def thread(self) -> threading.Thread | None:
        """
        The thread, once started.
        """
        return self._thread


class MemoryJobRunner:
    """
    A stand-in for L{JobThread} in unit tests: jobs wait in a list until the
    test runs them with L{perform} or L{performAll}, in the test's thread.
    """

    def __init__(self) -> None:
        self.jobs: list[Callable[[], object]] = []
        self.quitted = False

    def do(self, job: Callable[[], object]) -> None:
        """
        Keep C{job} for later.

        @raise WorkerError: L{quit} was called: the job would never run.
        """
        if self.quitted:
            raise WorkerError("the MemoryJobRunner has quit")
        self.jobs.append(job)

    def quit(self, then: Callable[[], object] | None = None) -> None:
        """
        Refuse new jobs; call C{then} after the jobs already given.
        """
        self.quitted = True
        if then is not None:
            self.jobs.append(then)

    def perform(self) -> bool:
        """
        Run the oldest job. @return: whether there was one.
        """
        if not self.jobs:
            return False
        self.jobs.pop(0)()
        return True

    def performAll(self) -> int:
        """
        Run jobs until none is left (including ones they add). @return: how many.
        """
        n = 0
        while self.perform():
            n += 1
        return n


__all__ = ["JobThread", "MemoryJobRunner"]
