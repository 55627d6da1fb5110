"""
Test helpers for AsynQueue: fake workers and single-stepped thread workers.

Not tests themselves; imported by the tests of this package.
"""

from __future__ import annotations

import contextlib
import gc
import types
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from asynqueue import IWorker, Task, ThreadWorker
from asynqueue.workers import MemoryJobRunner

#: The packages whose objects L{ours} counts.
_OWN = ("asynqueue", "sasync")


@contextlib.contextmanager
def cyclicGarbage() -> Iterator[list[object]]:
    """
    Collect, then run the block with the garbage collector off and
    C{DEBUG_SAVEALL} on; the list given fills, after the block, with what
    a collection then found unreachable (cyclic garbage, and what only it
    held). The collector's state is restored whatever happens.
    """
    enabled = gc.isenabled()
    debug = gc.get_debug()
    found: list[object] = []
    gc.collect()
    gc.disable()
    gc.set_debug(debug | gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(debug)
        gc.garbage.clear()
        if enabled:
            gc.enable()


def ours(
    garbage: list[object], of: Callable[[object], bool] | None = None
) -> Counter[str]:
    """
    What of C{garbage} is AsynQueue's or sAsync's: their objects, Failures
    (they make them), and frames of their code; by kind.

    @param of: Says which objects are the test's own: then only what is
        linked to one of them (by references between objects of
        C{garbage}, either way) counts. (What earlier tests left may become
        garbage meanwhile: a thread of theirs that ends.)
    """
    if of is not None:
        garbage = _linked(garbage, of)
    kinds: Counter[str] = Counter()
    for o in garbage:
        if isinstance(o, types.FrameType):
            module = str(o.f_globals.get("__name__", ""))
            if module.split(".")[0] in _OWN:
                kinds[f"frame of {o.f_code.co_qualname}"] += 1
        elif type(o).__module__.split(".")[0] in _OWN or isinstance(o, Failure):
            kinds[type(o).__qualname__] += 1
    return kinds


def _linked(garbage: list[object], of: Callable[[object], bool]) -> list[object]:
    # The objects of garbage linked to one that of() picks: the union of
    # their connected components, references taken both ways.
    byID = {id(o): o for o in garbage}
    links: dict[int, list[int]] = {key: [] for key in byID}
    for o in garbage:
        for r in gc.get_referents(o):
            if id(r) in byID:
                links[id(o)].append(id(r))
                links[id(r)].append(id(o))
    seen = {id(o) for o in garbage if of(o)}
    pending = list(seen)
    while pending:
        for key in links[pending.pop()]:
            if key not in seen:
                seen.add(key)
                pending.append(key)
    return [byID[key] for key in seen]


def syncCall(f: Callable[..., object], *args: object) -> None:
    """
    A C{callFromThread} for single-stepped workers: call at once.
    """
    f(*args)


def memoryWorker(
    series: Sequence[str] = (), **kw: Any
) -> tuple[ThreadWorker, MemoryJobRunner]:
    """
    A L{ThreadWorker} whose "thread" is a L{MemoryJobRunner} the test steps.
    """
    runner = MemoryJobRunner()
    worker = ThreadWorker(series, runner=runner, callFromThread=syncCall, **kw)
    return worker, runner


@implementer(IWorker)
class FakeWorker:
    """
    A worker that only records the tasks it is given; the test decides when
    and how each one ends with L{succeed}, L{fail} or L{release}.
    """

    def __init__(self, series: Sequence[str] = (), name: str = "fake") -> None:
        self.iQualified = list(series)
        self.name = name
        self.received: list[Task[Any]] = []
        self.current: Task[Any] | None = None
        self._freed: Deferred[None] | None = None
        self.stopped = False
        self.runNow = False

    def __repr__(self) -> str:
        return f"<FakeWorker {self.name}>"

    def run(self, task: Task[Any]) -> Deferred[None]:
        """
        Take C{task}; with C{runNow}, call it at once, synchronously.
        """
        assert self.current is None, "given a task while busy"
        assert not self.stopped, "given a task after stop"
        self.received.append(task)
        self.current = task
        self._freed = Deferred()
        freed = self._freed
        if self.runNow:
            try:
                result = task.f(*task.args, **task.kw)
            except Exception:
                self.fail(Failure())
            else:
                self.succeed(result)
        return freed

    def succeed(self, result: Any = None) -> Task[Any]:
        """
        The current task returns C{result}; the worker is free.
        """
        task = self.release()
        task.finish(result)
        return task

    def fail(self, failure: Failure) -> Task[Any]:
        """
        The current task raises; the worker is free.
        """
        task = self.release()
        task.fail(failure)
        return task

    def release(self) -> Task[Any]:
        """
        Free the worker without delivering anything (the caller does).
        """
        task, freed = self.current, self._freed
        assert task is not None and freed is not None, "no task running"
        self.current, self._freed = None, None
        freed.callback(None)
        return task

    def stop(self) -> Deferred[None]:
        """
        Stop (at once: the tests only stop idle fakes).
        """
        self.stopped = True
        return succeed(None)

    def crash(self) -> list[Task[Any]]:
        """
        Stop; hand back the current task.
        """
        self.stopped = True
        task, self.current = self.current, None
        return [task] if task is not None else []


class Recorder:
    """
    A callable that records its calls (by label) and returns its argument.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, label: Any) -> Any:
        self.calls.append(label)
        return label
