"""
Property tests (Hypothesis): random calls, priorities, cancellations,
timeouts and workers coming and going never lose or duplicate a task, a
worker always gets the best task it may run, and C{whenIdle} never fires
while a call waits or runs. Deterministic: fake workers and a L{Clock}.

The oracles are the machine's own records of what it asked for, checked
against the documented rules; never the queue's internals (its heap, or
L{Task.sortKey}).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from asynqueue import (
    IWorker,
    OutcomeUnknown,
    Task,
    TaskQueue,
    TaskTimeout,
    UnknownSeries,
)

#: The documented order of the bands: doNext calls first, doLast calls last.
BAND_ORDER = {"next": 0, "normal": 1, "last": 2}

#: The documented aging rule (docs/concepts/queue.md): within its band, a
#: call of niceness n sorts as if made n * 16 calls later.
NICENESS_STEP = 16


def documentedRank(band: str, niceness: int, made: int) -> tuple[int, int, int]:
    """
    Where the documented rule puts the C{made}-th call: band, then its
    place in line pushed back by its niceness, then first in, first out.
    """
    return (BAND_ORDER[band], made + NICENESS_STEP * niceness, made)


class Interrupted(Exception):
    """
    What an interrupted fake call raises.
    """


@implementer(IWorker)
class SteppedWorker:
    """
    A worker that runs its task only when the test machine says so, and
    checks, whenever it is given a task, that no better one was waiting.
    """

    def __init__(self, machine: QueueMachine, n: int) -> None:
        self.machine = machine
        self.n = n
        self.iQualified: list[str] = ["s"] if n % 2 else []
        self.current: Task[Any] | None = None
        self.freed: Deferred[None] | None = None
        self.interrupted = False
        self.stopped = False

    def __repr__(self) -> str:
        return f"<SteppedWorker {self.n}>"

    def run(self, task: Task[Any]) -> Deferred[None]:
        assert not self.stopped, "a stopped worker got a task"
        assert self.current is None, "a busy worker got a task"
        self.machine.checkBest(self, task)
        label = task.args[0]
        assert label not in self.machine.started, f"task {label} handed out twice"
        self.machine.started.add(label)
        self.current, self.freed = task, Deferred()
        self.interrupted = False
        if self.machine.honest[label]:
            task.onInterrupt(self._interrupt)
        return self.freed

    def _interrupt(self, reason: BaseException) -> None:
        self.interrupted = True

    def finish(self) -> None:
        """
        The task's call runs now and its outcome is delivered.
        """
        task, freed = self.current, self.freed
        assert task is not None and freed is not None
        self.current = self.freed = None
        # Freed first, then the outcome (as ThreadWorker does): in between,
        # this task is being delivered.
        self.machine.delivering = task.args[0]
        freed.callback(None)
        self.machine.delivering = None
        if self.interrupted:
            task.fail(Failure(Interrupted()))
            return
        task.finish(task.f(*task.args))

    def stop(self) -> Deferred[None]:
        assert self.current is None, "stopped while busy"
        self.stopped = True
        return Deferred.fromCoroutine(_none())

    def crash(self) -> list[Task[Any]]:
        raise AssertionError("the queue never crashes workers")


async def _none() -> None:
    return None


class QueueMachine(RuleBasedStateMachine):
    """
    Drives a L{TaskQueue} with random operations and checks the outcome.
    """

    @initialize()
    def setUpQueue(self) -> None:
        self.clock = Clock()
        self.q = TaskQueue(clock=self.clock)
        self.workers: list[SteppedWorker] = []
        self.detached: list[SteppedWorker] = []
        self.calls: list[Deferred[Any]] = []
        self.outcomes: dict[int, list[Any]] = {}
        self.executed: dict[int, int] = {}
        self.honest: dict[int, bool] = {}
        self.series: dict[int, str | None] = {}
        self.rank: dict[int, tuple[int, int, int]] = {}
        self.started: set[int] = set()
        self.delivering: int | None = None
        self.idleChecks: list[str | None] = []
        self.workerCount = 0
        self.attach()

    # The call being made.
    def job(self, label: int) -> int:
        self.executed[label] += 1
        return label

    def checkBest(self, worker: SteppedWorker, task: Task[Any]) -> None:
        # The documented rule (see documentedRank; labels count up as calls
        # are made, and no other call is made meanwhile). Waiting: made,
        # not handed out, not failed (cancelled, timed out or refused).
        label = task.args[0]
        for other in self.outcomes:
            if other == label or other in self.started or self.outcomes[other]:
                continue
            series = self.series[other]
            if series is not None and series not in worker.iQualified:
                continue
            assert not self.rank[other] < self.rank[label], (
                f"{worker} got {label} {self.rank[label]} while {other}"
                f" {self.rank[other]} waited"
            )

    @rule(
        niceness=st.integers(-20, 20),
        band=st.sampled_from(["next", "normal", "last"]),
        honest=st.booleans(),
        series=st.sampled_from([None, None, None, "s"]),
        timeout=st.sampled_from([None, None, 1.0, 2.5]),
    )
    def call(
        self,
        niceness: int,
        band: str,
        honest: bool,
        series: str | None,
        timeout: float | None,
    ) -> None:
        label = len(self.calls)
        self.executed[label] = 0
        self.honest[label] = honest
        self.series[label] = series
        self.rank[label] = documentedRank(band, niceness, label)
        self.outcomes[label] = []
        d = self.q.call(
            self.job,
            label,
            niceness=niceness,
            doNext=band == "next",
            doLast=band == "last",
            series=series,
            timeout=timeout,
        )
        d.addBoth(self.outcomes[label].append)
        self.calls.append(d)
        if series is not None and not any(series in w.iQualified for w in self.workers):
            # Documented: a series no attached worker runs fails at once.
            [outcome] = self.outcomes[label]
            assert isinstance(outcome, Failure) and outcome.check(UnknownSeries)

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.calls) - 1))
        self.calls[i].cancel()

    @precondition(lambda self: any(w.current for w in self.workers + self.detached))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        busy = [w for w in self.workers + self.detached if w.current is not None]
        data.draw(st.sampled_from(busy)).finish()

    @precondition(lambda self: len(self.workers) < 4)
    @rule()
    def attach(self) -> None:
        worker = SteppedWorker(self, self.workerCount)
        self.workerCount += 1
        self.workers.append(worker)
        self.q.attachWorker(worker)

    @precondition(lambda self: len(self.workers) > 0)
    @rule(data=st.data())
    def detach(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(self.workers))
        self.workers.remove(worker)
        self.detached.append(worker)
        self.q.detachWorker(worker)

    @rule()
    def whenIdle(self) -> None:
        self.q.whenIdle().addCallback(self.checkIdle)

    def checkIdle(self, _: None) -> None:
        # When it fires, every call made has its outcome (or is the one
        # being delivered right now) and no worker runs one.
        unanswered = [
            label
            for label, outcomes in self.outcomes.items()
            if not outcomes and label != self.delivering
        ]
        busy = [w for w in self.workers + self.detached if w.current is not None]
        problem = None
        if unanswered or busy:
            problem = f"whenIdle fired with {unanswered} unanswered, {busy} busy"
        self.idleChecks.append(problem)

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def idleOnlyWhenIdle(self) -> None:
        problems = [p for p in self.idleChecks if p is not None]
        assert not problems, problems[0]

    @invariant()
    def nothingTwice(self) -> None:
        for label, outcomes in self.outcomes.items():
            assert len(outcomes) <= 1, f"task {label} delivered twice"
            assert self.executed[label] <= 1, f"task {label} ran twice"

    def teardown(self) -> None:
        if not hasattr(self, "q"):
            return
        # Drain: a worker of each kind, then finish everything.
        self.attach()
        self.attach()
        while True:
            busy = [w for w in self.workers + self.detached if w.current is not None]
            if not busy:
                break
            for worker in busy:
                worker.finish()
        self.clock.advance(10)
        assert self.q.pending() == 0
        assert self.q.running() == 0
        for label, outcomes in self.outcomes.items():
            assert len(outcomes) == 1, f"task {label} was lost"
            outcome = outcomes[0]
            if isinstance(outcome, Failure):
                assert outcome.check(
                    CancelledError, TaskTimeout, UnknownSeries, OutcomeUnknown
                ), outcome
                if outcome.check(OutcomeUnknown):
                    # Only a running call's caller can stop waiting for it.
                    assert label in self.started, label
                if label not in self.started:
                    assert self.executed[label] == 0
            else:
                assert outcome == label
                assert self.executed[label] == 1
        for worker in self.detached:
            assert worker.stopped, f"detached {worker} was never stopped"
        stopped = self.q.shutdown()
        assert stopped.called
        assert all(worker.stopped for worker in self.workers)
        self.idleOnlyWhenIdle()


QueueMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueProperties = QueueMachine.TestCase
