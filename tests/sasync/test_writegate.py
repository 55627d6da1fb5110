"""
The writer gate (L{sasync._writegate}): its adaptive limit on its own,
then on a broker with fake workers (C{createWorker=}, a L{Clock} reactor):
which calls pass it, cancelling and timing out at it, priorities, stats,
C{maxPending} and shutdown. No database, no threads, no sleeps.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import Task
from sasync import AccessBroker, retry, transact
from sasync._admission import _wrote
from sasync._lifecycle import SHUTDOWN_GRACE
from sasync._readguess import GUESS_SHARE, WINDOW, MethodMix, methodMix
from sasync._writegate import WriterGate
from sasync.errors import Overloaded, TransactionTimeout
from sasync.retry import Backoff
from tests.sasync.fakes import FakeReactor, Workers
from tests.sasync.test_admission import SERVER, failing

#: Waits of 1, 2, 4, ... seconds (no jitter).
STEADY = Backoff(first=1.0, factor=2.0, maximum=10.0, random=lambda: 1.0)


def _noop() -> None:
    raise AssertionError("never run")


class GateTests(SynchronousTestCase):
    """
    A L{WriterGate} on its own, with tasks that a list "runs".
    """

    def setUp(self) -> None:
        self.submitted: list[Task[Any]] = []

    def submit(self, task: Task[Any]) -> Deferred[Any]:
        self.submitted.append(task)
        return task.d

    def tasks(self, gate: WriterGate, n: int, **kw: Any) -> list[Task[Any]]:
        made = [Task(_noop, **kw) for _ in range(n)]
        for task in made:
            gate.submit(task, self.submit)
        return made

    def test_conflictHalvesOncePerRound(self) -> None:
        """
        A conflict halves the limit; another conflict of a task let in
        before that halving does not halve it again; one let in after it
        does.
        """
        gate = WriterGate(start=4, maximum=8)
        tasks = self.tasks(gate, 6)
        self.assertEqual(self.submitted, tasks[:4])
        self.assertEqual((gate.running, gate.waiting), (4, 2))
        tasks[0].fail(failing(retry.SERIALIZATION))
        self.assertEqual(gate.limit, 2)
        tasks[1].fail(failing(retry.DEADLOCK))
        self.assertEqual(gate.limit, 2)
        self.assertEqual((gate.running, gate.waiting), (2, 2))
        tasks[2].finish(None)
        tasks[3].finish(None)
        self.assertEqual(self.submitted, tasks)
        tasks[4].fail(failing(retry.LOCK_TIMEOUT))
        self.assertEqual(gate.places, 1)
        for task in (tasks[0], tasks[1], tasks[4]):
            self.failureResultOf(task.d)

    def test_otherFailuresLeaveIt(self) -> None:
        """
        A failure that is no conflict (nor a wrong read-only guess) leaves
        the limit as it is.
        """
        gate = WriterGate(start=4, maximum=8)
        tasks = self.tasks(gate, 2)
        tasks[0].fail(failing(None))
        tasks[1].fail(failing(retry.WROTE_READ_ONLY))
        self.assertEqual(gate.limit, 4)
        self.failureResultOf(tasks[0].d)
        self.failureResultOf(tasks[1].d)

    def test_additiveIncrease(self) -> None:
        """
        Each commit adds C{1 / limit}, up to the maximum.
        """
        gate = WriterGate(start=2, maximum=3)
        tasks = self.tasks(gate, 1)
        tasks[0].fail(failing(retry.SERIALIZATION))
        self.failureResultOf(tasks[0].d)
        self.assertEqual(gate.limit, 1)
        for expected in (2.0, 2.5, 2.9, 3.0):
            (task,) = self.tasks(gate, 1)
            task.finish(None)
            self.assertAlmostEqual(gate.limit, expected)
        self.assertEqual(gate.places, 3)

    def test_fixed(self) -> None:
        """
        A fixed limit never changes.
        """
        gate = WriterGate(start=2, maximum=2, fixed=True)
        tasks = self.tasks(gate, 3)
        self.assertEqual(len(self.submitted), 2)
        tasks[0].fail(failing(retry.SERIALIZATION))
        tasks[1].finish(None)
        self.assertEqual(gate.limit, 2)
        self.assertEqual(self.submitted, tasks)
        self.failureResultOf(tasks[0].d)

    def test_priorityOrder(self) -> None:
        """
        Waiters are let in by their tasks' order: C{doNext} first, then by
        niceness.
        """
        gate = WriterGate(start=1, maximum=1, fixed=True)
        (first,) = self.tasks(gate, 1)
        (nice,) = self.tasks(gate, 1, niceness=10)
        (plain,) = self.tasks(gate, 1)
        (urgent,) = self.tasks(gate, 1, doNext=True)
        for task in (first, urgent, plain):
            task.finish(None)
        self.assertEqual(self.submitted, [first, urgent, plain, nice])

    def test_cancelWhileWaiting(self) -> None:
        """
        A waiter whose Deferred is cancelled leaves at once, never runs and
        takes no place.
        """
        gate = WriterGate(start=1, maximum=1, fixed=True)
        running, waiting, last = self.tasks(gate, 3)
        waiting.d.cancel()
        self.failureResultOf(waiting.d, CancelledError)
        self.assertEqual((gate.running, gate.waiting), (1, 1))
        running.finish(None)
        self.assertEqual(self.submitted, [running, last])
        self.assertEqual((gate.running, gate.waiting), (1, 0))

    def test_releasedOnce(self) -> None:
        """
        A task's place is given back once, however its Deferred fires
        (here: cancelled while it runs, then its result dropped).
        """
        gate = WriterGate(start=1, maximum=1, fixed=True)
        running, waiting = self.tasks(gate, 2)
        running.state = running.state.RUNNING
        running.d.cancel()
        self.failureResultOf(running.d, CancelledError)
        self.assertEqual(self.submitted, [running, waiting])
        running.finish(None)
        self.assertEqual((gate.running, gate.waiting), (1, 0))

    def test_refusedSubmission(self) -> None:
        """
        A task let in whose submission is refused (another Deferred, failed)
        fails its own Deferred with that error, and gives its place back.
        """
        gate = WriterGate(start=1, maximum=1, fixed=True)
        task: Task[Any] = Task(_noop)
        gate.submit(task, lambda t: fail(RuntimeError("queue stopped")))
        self.failureResultOf(task.d, RuntimeError)
        self.assertEqual(gate.running, 0)


class _Broker(AccessBroker):
    @transact
    def work(self, x: int) -> int:
        raise AssertionError("fake workers never run transactions")

    @transact(readOnly=True)
    def read(self, x: int) -> int:
        raise AssertionError("fake workers never run transactions")

    @transact
    def learned(self, x: int) -> int:
        raise AssertionError("fake workers never run transactions")


class BrokerGateTests(SynchronousTestCase):
    """
    The gate of a broker on a server database, on fake workers.
    """

    def makeBroker(
        self, url: str = SERVER, **kw: Any
    ) -> tuple[_Broker, FakeReactor, Workers]:
        reactor = FakeReactor()
        workers = Workers()
        broker = _Broker(url, reactor=reactor, createWorker=workers, **kw)
        reactor.advance(0)
        self.assertTrue(broker.running)
        self.addCleanup(self.shutDown, broker, reactor)
        return broker, reactor, workers

    def shutDown(self, broker: _Broker, reactor: FakeReactor) -> None:
        d = broker.shutdown(timeout=0)
        reactor.advance(0)
        reactor.advance(SHUTDOWN_GRACE)
        self.successResultOf(d)

    def running(self, workers: Workers) -> list[Any]:
        """
        The first argument of each call a worker runs now.
        """
        return sorted(w.current.args[0] for w in workers.made if w.current is not None)

    def end(self, workers: Workers, x: int, failure: Failure | None = None) -> None:
        """
        The worker running the call with argument C{x} ends it.
        """
        for w in workers.made:
            if w.current is not None and w.current.args[0] == x:
                if failure is None:
                    w.succeed(x)
                else:
                    w.fail(failure)
                return
        raise AssertionError(f"no worker runs {x}")

    def test_when(self) -> None:
        """
        A server database at SERIALIZABLE gets an adaptive gate starting at
        its connections; C{writers=N} a fixed one; C{writers=0}/C{False},
        SQLite, a broker's C{retries=} or another isolation level none.
        """
        broker, _, _ = self.makeBroker(connections=3)
        gate = broker._calls.gate
        assert gate is not None
        self.assertEqual((gate.limit, gate.places), (3, 3))
        self.assertEqual(broker.stats().writers, 3)
        broker, _, _ = self.makeBroker(connections=3, writers=2)
        gate = broker._calls.gate
        assert gate is not None
        self.assertEqual(gate.places, 2)
        for kw in (
            {"writers": 0},
            {"writers": False},
            {"retries": 3},
            {"isolation_level": "READ COMMITTED"},
        ):
            broker, _, _ = self.makeBroker(**kw)
            self.assertIsNone(broker._calls.gate, kw)
            self.assertIsNone(broker.stats().writers, kw)
        broker, _, _ = self.makeBroker("sqlite://")
        self.assertIsNone(broker._calls.gate)

    def test_writersChecked(self) -> None:
        """
        A bad C{writers=} is refused with a C{ValueError} naming it.
        """
        for bad in (True, -1, 1.5, "2"):
            with self.assertRaises(ValueError) as caught:
                _Broker(SERVER, reactor=FakeReactor(), writers=bad)
            self.assertIn("writers", str(caught.exception))

    def test_conflictHalvesAndRetryWaits(self) -> None:
        """
        Two calls run on two connections; one conflicts: the limit halves
        to 1, and its retry waits at the gate until the other one ended.
        """
        broker, reactor, workers = self.makeBroker(connections=2, backoff=STEADY)
        a, b = broker.work(1), broker.work(2)
        self.assertEqual(self.running(workers), [1, 2])
        self.end(workers, 1, failing(retry.SERIALIZATION))
        gate = broker._calls.gate
        assert gate is not None
        self.assertEqual(gate.places, 1)
        self.assertEqual(broker.stats().writers, 1)
        reactor.advance(1)
        self.assertEqual(self.running(workers), [2])
        self.assertEqual(broker.stats().queued, 1)
        self.end(workers, 2)
        self.assertEqual(self.running(workers), [1])
        self.end(workers, 1)
        self.assertEqual([self.successResultOf(d) for d in (a, b)], [1, 2])
        self.assertEqual(dict(broker.stats().retried), {retry.SERIALIZATION: 1})

    def test_readersBypass(self) -> None:
        """
        Calls of a C{readOnly} method, calls with C{readOnly=True}, and
        calls of a method known to only read don't wait at the gate.
        """
        broker, _, workers = self.makeBroker(connections=4, writers=1)
        learned = _Broker.learned.__sasyncTransaction__  # type: ignore[attr-defined]
        _wrote[learned] = False
        self.addCleanup(_wrote.pop, learned, None)
        calls = [broker.work(1), broker.work(2)]
        self.assertEqual(self.running(workers), [1])
        calls += [broker.read(3), broker.work(4, readOnly=True), broker.learned(5)]
        self.assertEqual(self.running(workers), [1, 3, 4, 5])
        for x in (1, 2, 3, 4, 5):
            self.end(workers, x)
        self.assertEqual([self.successResultOf(d) for d in calls], [1, 2, 3, 4, 5])

    def learnedAs(self, share: float) -> None:
        """
        Make C{_Broker.learned} a method seen writing, C{share} of whose
        recent calls only read.
        """
        learned = _Broker.learned.__sasyncTransaction__  # type: ignore[attr-defined]
        _wrote[learned] = True
        methodMix.learned(learned, share)
        self.addCleanup(_wrote.pop, learned, None)
        self.addCleanup(methodMix.forget, learned)

    def guessed(self, workers: Workers) -> dict[int, bool | None]:
        """
        Per call running now (by its argument): whether it runs READ ONLY by
        guess.
        """
        return {
            w.current.args[0]: w.current.f.guess
            for w in workers.made
            if w.current is not None
        }

    def test_mixedMethodGuessedCallByCall(self) -> None:
        """
        Calls of a method seen writing, but mostly only reading lately, run
        READ ONLY by guess and pass the gate by; one that writes after all
        runs again at once, read-write and through the gate, and is not
        guessed again.
        """
        self.learnedAs(0.9)
        broker, reactor, workers = self.makeBroker(connections=4, writers=1)
        calls = [broker.work(1), broker.learned(2), broker.learned(3)]
        self.assertEqual(self.guessed(workers), {1: False, 2: True, 3: True})
        wrote = failing(retry.WROTE_READ_ONLY)
        self.endHaving(workers, 2, wrote=True, failure=wrote)
        reactor.advance(0)
        # Its retry waits at the gate behind the writer already in.
        self.assertEqual(self.guessed(workers), {1: False, 3: True})
        self.end(workers, 1)
        self.assertEqual(self.guessed(workers), {2: False, 3: True})
        # One more guessed call, while the retry holds the gate's place.
        calls.append(broker.learned(4))
        self.assertEqual(self.guessed(workers), {2: False, 3: True, 4: True})
        for x in (2, 3, 4):
            self.end(workers, x)
        self.assertEqual([self.successResultOf(d) for d in calls], [1, 2, 3, 4])
        self.assertEqual(dict(broker.stats().retried), {retry.WROTE_READ_ONLY: 1})

    def test_guessRecheckedAtStart(self) -> None:
        """
        A call guessed when made asks again as it starts (worker thread):
        calls that ended meanwhile may have shown its method writing.
        """
        self.learnedAs(0.9)
        broker, _, workers = self.makeBroker(connections=2, writers=1)
        broker.learned(1).addErrback(lambda f: None)
        (call,) = [w.current.f for w in workers.made if w.current is not None]
        self.assertTrue(call.guess)
        self.assertTrue(call.stillGuessed())
        learned = _Broker.learned.__sasyncTransaction__  # type: ignore[attr-defined]
        methodMix.learned(learned, GUESS_SHARE / 2)
        self.assertFalse(call.stillGuessed())

    def test_withdrawnGuessBackToGate(self) -> None:
        """
        A call whose guess was withdrawn as it started (it passed the gate
        by) runs again at once, read-write and through the gate.
        """
        self.learnedAs(0.9)
        broker, reactor, workers = self.makeBroker(connections=4, writers=1)
        calls = [broker.work(1), broker.learned(2)]
        self.assertEqual(self.guessed(workers), {1: False, 2: True})
        self.end(workers, 2, failing(retry.GUESS_WITHDRAWN))
        reactor.advance(0)
        self.assertEqual(self.guessed(workers), {1: False})
        self.end(workers, 1)
        self.assertEqual(self.guessed(workers), {2: False})
        self.end(workers, 2)
        self.assertEqual([self.successResultOf(d) for d in calls], [1, 2])
        self.assertEqual(dict(broker.stats().retried), {retry.GUESS_WITHDRAWN: 1})

    def test_writingMethodNotGuessed(self) -> None:
        """
        Calls of a method that mostly wrote lately run read-write and wait
        at the gate.
        """
        self.learnedAs(GUESS_SHARE / 2)
        broker, _, workers = self.makeBroker(connections=4, writers=1)
        calls = [broker.learned(1), broker.learned(2)]
        self.assertEqual(self.guessed(workers), {1: False})
        self.end(workers, 1)
        self.end(workers, 2)
        self.assertEqual([self.successResultOf(d) for d in calls], [1, 2])

    def test_outcomesLearned(self) -> None:
        """
        What calls did moves their method's share: reads up, writes and
        wrong guesses down, until its calls are guessed no more.
        """
        self.learnedAs(GUESS_SHARE + 0.01)
        learned = _Broker.learned.__sasyncTransaction__  # type: ignore[attr-defined]
        broker, reactor, workers = self.makeBroker(connections=2, writers=0)
        d = broker.learned(1)
        self.assertEqual(self.guessed(workers), {1: True})
        # (The refused write went through SQLAlchemy: seen.)
        self.endHaving(workers, 1, wrote=True, failure=failing(retry.WROTE_READ_ONLY))
        reactor.advance(0)
        self.assertEqual(self.guessed(workers), {1: False})
        self.endHaving(workers, 1, wrote=True)
        self.successResultOf(d)
        share = methodMix.share(learned)
        assert share is not None
        self.assertLess(share, GUESS_SHARE)
        d = broker.learned(2)
        self.assertEqual(self.guessed(workers), {2: False})
        self.endHaving(workers, 2, wrote=False)
        self.successResultOf(d)
        after = methodMix.share(learned)
        assert after is not None
        self.assertGreater(after, share)

    def endHaving(
        self, workers: Workers, x: int, wrote: bool, failure: Failure | None = None
    ) -> None:
        """
        The call with argument C{x} ends (with C{failure}, if given), having
        written or only read, as far as SQLAlchemy saw.
        """
        for w in workers.made:
            if w.current is not None and w.current.args[0] == x:
                w.current.f.wroteNow = wrote
        self.end(workers, x, failure)

    def test_unseenWriteStopsGuesses(self) -> None:
        """
        A guessed call refused a write that SQLAlchemy did not see (the raw
        DB-API cursor's) runs again read-write, and its method is guessed
        no more, whatever its share; a refused write that was seen leaves
        the guesses to the share.
        """
        self.learnedAs(0.9)
        broker, reactor, workers = self.makeBroker(connections=2, writers=0)
        d = broker.learned(1)
        self.assertEqual(self.guessed(workers), {1: True})
        self.endHaving(workers, 1, wrote=True, failure=failing(retry.WROTE_READ_ONLY))
        reactor.advance(0)
        self.endHaving(workers, 1, wrote=True)
        self.successResultOf(d)
        d = broker.learned(2)
        self.assertEqual(self.guessed(workers), {2: True})
        self.endHaving(workers, 2, wrote=False, failure=failing(retry.WROTE_READ_ONLY))
        reactor.advance(0)
        self.assertEqual(self.guessed(workers), {2: False})
        self.endHaving(workers, 2, wrote=False)
        self.successResultOf(d)
        for x in (3, 4):
            d = broker.learned(x)
            self.assertEqual(self.guessed(workers), {x: False})
            self.endHaving(workers, x, wrote=False)
            self.successResultOf(d)

    def test_consumersBypass(self) -> None:
        """
        A call with a C{consumer} (whose Deferred fires only once every row
        was written, maybe never if the consumer stays paused) doesn't hold
        a place at the gate.
        """
        broker, _, workers = self.makeBroker(connections=2, writers=1)
        streamed = broker.work(1, consumer=StringTransport())
        plain = broker.work(2)
        self.assertEqual(self.running(workers), [1, 2])
        self.end(workers, 2)
        self.successResultOf(plain)
        streamed.cancel()
        self.failureResultOf(streamed, CancelledError)

    def test_learnedReadersOnlyWherePostgreSQL(self) -> None:
        """
        On MySQL/MariaDB (where nothing runs READ ONLY by guess) a method
        learned to only read elsewhere still passes the gate.
        """
        mysql = "mysql+pymysql://nobody@127.0.0.1:1/never"
        broker, _, workers = self.makeBroker(mysql, connections=2, writers=1)
        learned = _Broker.learned.__sasyncTransaction__  # type: ignore[attr-defined]
        _wrote[learned] = False
        self.addCleanup(_wrote.pop, learned, None)
        calls = [broker.learned(1), broker.learned(2)]
        self.assertEqual(self.running(workers), [1])
        self.end(workers, 1)
        self.end(workers, 2)
        self.assertEqual([self.successResultOf(d) for d in calls], [1, 2])

    def test_cancelWhileWaiting(self) -> None:
        """
        A call cancelled while it waits at the gate fails at once with
        C{CancelledError}, never runs, and takes no place.
        """
        broker, _, workers = self.makeBroker(connections=2, writers=1)
        first, second, third = broker.work(1), broker.work(2), broker.work(3)
        second.cancel()
        self.failureResultOf(second, CancelledError)
        self.assertEqual(broker.stats().queued, 1)
        self.end(workers, 1)
        self.assertEqual(self.running(workers), [3])
        self.end(workers, 3)
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(self.successResultOf(third), 3)
        received = [t.args[0] for w in workers.made for t in w.received]
        self.assertNotIn(2, received)

    def test_timeoutWhileWaiting(self) -> None:
        """
        A call's timeout runs while it waits at the gate: it fails with
        L{TransactionTimeout} and never runs.
        """
        broker, reactor, workers = self.makeBroker(connections=2, writers=1)
        first = broker.work(1)
        late = broker.work(2, timeout=5)
        reactor.advance(5)
        failure = self.failureResultOf(late, TransactionTimeout)
        self.assertIn("_Broker.work(2)", str(failure.value))
        gate = broker._calls.gate
        assert gate is not None
        self.assertEqual(gate.waiting, 0)
        self.end(workers, 1)
        self.successResultOf(first)
        self.assertEqual(self.running(workers), [])

    def test_timeoutThenRuns(self) -> None:
        """
        A call with a timeout (driven by retry.Attempts) passes the gate
        too, and its result arrives once it was let in and ran.
        """
        broker, _, workers = self.makeBroker(connections=2, writers=1)
        first, second = broker.work(1), broker.work(2, timeout=60)
        self.assertEqual(self.running(workers), [1])
        self.end(workers, 1)
        self.end(workers, 2)
        self.assertEqual(self.successResultOf(second), 2)
        self.successResultOf(first)

    def test_niceness(self) -> None:
        """
        Calls waiting at the gate are let in by niceness.
        """
        broker, _, workers = self.makeBroker(connections=2, writers=1)
        calls = [broker.work(1), broker.work(2, niceness=10), broker.work(3)]
        self.end(workers, 1)
        self.assertEqual(self.running(workers), [3])
        self.end(workers, 3)
        self.end(workers, 2)
        self.assertEqual([self.successResultOf(d) for d in calls], [1, 2, 3])

    def test_maxPendingCountsWaiters(self) -> None:
        """
        Calls waiting at the gate count toward C{maxPending}.
        """
        broker, _, workers = self.makeBroker(connections=2, writers=1, maxPending=1)
        first, second = broker.work(1), broker.work(2)
        self.failureResultOf(broker.work(3), Overloaded)
        self.end(workers, 1)
        self.end(workers, 2)
        self.successResultOf(first)
        self.successResultOf(second)

    def test_shutdownDrains(self) -> None:
        """
        shutdown() without a timeout waits for the calls at the gate, which
        still run.
        """
        broker, _, workers = self.makeBroker(connections=2, writers=1)
        first, second = broker.work(1), broker.work(2)
        done = broker.shutdown()
        self.assertNoResult(done)
        self.end(workers, 1)
        self.assertNoResult(done)
        self.end(workers, 2)
        self.assertEqual(self.successResultOf(second), 2)
        self.successResultOf(first)
        self.successResultOf(done)

    def test_shutdownTimeoutCancels(self) -> None:
        """
        shutdown(timeout=) cancels the calls still waiting at the gate when
        the timeout runs out.
        """
        broker, reactor, _ = self.makeBroker(connections=2, writers=1)
        first, second = broker.work(1), broker.work(2)
        broker.shutdown(timeout=3)
        reactor.advance(3)
        self.failureResultOf(second, CancelledError)
        gate = broker._calls.gate
        assert gate is not None
        self.assertEqual(gate.waiting, 0)
        self.failureResultOf(first, CancelledError)


class MethodMixTests(SynchronousTestCase):
    """
    L{MethodMix} on its own.
    """

    def test_guess(self) -> None:
        """
        A method not seen yet is not guessed; one seen only reading is; one
        seen writing is while at least L{GUESS_SHARE} of its recent calls
        only read, once its writes were counted.
        """
        mix = MethodMix()
        self.assertFalse(mix.guess(_noop, None))
        self.assertTrue(mix.guess(_noop, False))
        self.assertFalse(mix.guess(_noop, True))
        mix.ended(_noop, False)
        self.assertEqual(mix.share(_noop), 1.0)
        # Seen writing, but no write counted yet: the count is behind.
        self.assertFalse(mix.guess(_noop, True))
        mix.ended(_noop, False)
        mix.ended(_noop, True)
        self.assertEqual(mix.share(_noop), GUESS_SHARE)
        self.assertTrue(mix.guess(_noop, True))
        mix.ended(_noop, True)
        self.assertFalse(mix.guess(_noop, True))

    def test_hidesWrites(self) -> None:
        """
        A method that hides its writes is never guessed, whether seen
        writing or not and whatever its share, until forgotten.
        """
        mix = MethodMix()
        mix.ended(_noop, False)
        self.assertTrue(mix.guess(_noop, False))
        mix.hidesWrites(_noop)
        self.assertFalse(mix.guess(_noop, False))
        self.assertFalse(mix.guess(_noop, True))
        mix.forget(_noop)
        self.assertTrue(mix.guess(_noop, False))

    def test_window(self) -> None:
        """
        The counts are halved once they reach L{WINDOW} calls: what the
        method does now soon outweighs what it did long ago.
        """
        mix = MethodMix()
        for _ in range(WINDOW - 1):
            mix.ended(_noop, False)
        mix.ended(_noop, True)
        self.assertEqual(mix.share(_noop), (WINDOW - 1) / WINDOW)
        for _ in range(WINDOW):
            mix.ended(_noop, True)
        share = mix.share(_noop)
        assert share is not None
        self.assertLess(share, GUESS_SHARE)
