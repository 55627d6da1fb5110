"""
Fakes for deterministic broker unit tests: a reactor that is a
L{Clock}, and connection workers that never connect (a broker's
C{createWorker=}), each of which the test ends task by task.

Not tests themselves; imported by the broker's unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock

from asynqueue import Task
from tests.asynqueue.helpers import FakeWorker


class FakeReactor(Clock):
    """
    A L{Clock} with the few other reactor methods a broker calls: system
    event triggers (recorded, never fired) and C{callFromThread} (at once:
    there are no threads).
    """

    def __init__(self) -> None:
        super().__init__()
        self.triggers: dict[int, tuple[str, str, Callable[..., Any]]] = {}
        self._nextID = 0

    def addSystemEventTrigger(
        self, phase: str, eventType: str, f: Callable[..., Any], *a: Any, **kw: Any
    ) -> int:
        self._nextID += 1
        self.triggers[self._nextID] = (phase, eventType, f)
        return self._nextID

    def removeSystemEventTrigger(self, triggerID: int) -> None:
        del self.triggers[triggerID]

    def callFromThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)


class FakeConnectionWorker(FakeWorker):
    """
    A L{FakeWorker} standing in for a C{ConnectionWorker}: never held by
    an iteration, never an overflow worker.
    """

    held = False
    lettingGo = False
    replaced = 0

    def __init__(self, name: str, overflow: bool) -> None:
        super().__init__(name=name)
        self.overflow = overflow

    @property
    def task(self) -> Task[Any] | None:
        """
        The task it runs now, as a C{ThreadWorker} says.
        """
        return self.current


class Workers:
    """
    A C{createWorker=} for a broker: keeps every worker it makes.
    """

    def __init__(self) -> None:
        self.made: list[FakeConnectionWorker] = []

    def __call__(
        self, engine: Any, *, name: str, overflow: bool = False, **kw: Any
    ) -> FakeConnectionWorker:
        worker = FakeConnectionWorker(name, overflow)
        self.made.append(worker)
        return worker

    @property
    def only(self) -> FakeConnectionWorker:
        """
        The one worker (SQLite has one connection).
        """
        assert len(self.made) == 1, self.made
        return self.made[0]
