"""
A broker's life, unit-tested with a L{Clock} reactor and fake workers
(C{createWorker=}): start-up, L{first}, waiting until running, shutdown and
its drain timer. No database, no threads, no sleeps.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from sasync import AccessBroker, transact
from sasync._lifecycle import SHUTDOWN_GRACE, Phase
from sasync.connection import openHandles
from sasync.errors import BrokerStopped, StartupError
from tests.sasync.fakes import FakeReactor, Workers


class Broker(AccessBroker):
    """
    A broker whose start-up waits for C{gate}, if the test sets one.
    """

    gate: Deferred[None] | None = None

    def startup(self) -> Any:
        return self.gate

    @transact
    def work(self, x: int) -> int:
        raise AssertionError("fake workers never run transactions")


class FirstBroker(Broker):
    """
    A broker with a L{first} transaction.
    """

    @transact
    def first(self) -> None:
        raise AssertionError("fake workers never run transactions")


def methodOf(task: Any) -> str:
    """
    The name of the broker method a transaction's task runs.
    """
    return str(task.f.f.__name__)


class LifecycleTests(SynchronousTestCase):
    """
    Start-up and shutdown of a broker on fake workers.
    """

    def makeBroker(
        self, cls: type[Broker] = Broker, **kw: Any
    ) -> tuple[Broker, FakeReactor, Workers]:
        reactor = FakeReactor()
        workers = Workers()
        broker = cls("sqlite://", reactor=reactor, createWorker=workers, **kw)
        self.addCleanup(self.shutDown, broker, workers)
        return broker, reactor, workers

    def shutDown(self, broker: Broker, workers: Workers) -> None:
        d = broker.shutdown()
        for worker in workers.made:
            while worker.current is not None:
                worker.succeed(None)
        self.successResultOf(d)
        self.assertNotIn(broker._handle, openHandles())

    def test_startsOnNextTurn(self) -> None:
        """
        The start-up runs on the next reactor turn (so a subclass's
        C{__init__} finishes first); until its Deferred fires the broker
        is starting, then running, and C{waitUntilRunning} fires.
        """
        gate: Deferred[None] = Deferred()
        broker, reactor, _ = self.makeBroker()
        broker.gate = gate
        waiting = broker.waitUntilRunning()
        self.assertIs(broker._life.phase, Phase.NEW)
        reactor.advance(0)
        self.assertIs(broker._life.phase, Phase.STARTING)
        self.assertFalse(broker.running)
        self.assertNoResult(waiting)
        gate.callback(None)
        self.assertTrue(broker.running)
        self.successResultOf(waiting)
        self.successResultOf(broker.waitUntilRunning())

    def test_callsWaitForStartup(self) -> None:
        """
        A transaction called before the start-up is done reaches no worker
        until it is; then it runs and its Deferred fires with its result.
        """
        gate: Deferred[None] = Deferred()
        broker, reactor, workers = self.makeBroker()
        broker.gate = gate
        d = broker.work(1)
        reactor.advance(0)
        self.assertEqual(workers.only.received, [])
        self.assertEqual(broker.stats().queued, 1)
        gate.callback(None)
        self.assertEqual([methodOf(t) for t in workers.only.received], ["work"])
        self.assertNoResult(d)
        workers.only.succeed(5)
        self.assertEqual(self.successResultOf(d), 5)

    def test_firstRunsFirst(self) -> None:
        """
        L{first} runs as the first transaction, before calls made earlier,
        and the broker runs only once it is done.
        """
        broker, reactor, workers = self.makeBroker(FirstBroker)
        d = broker.work(1)
        reactor.advance(0)
        worker = workers.only
        self.assertEqual([methodOf(t) for t in worker.received], ["first"])
        self.assertFalse(broker.running)
        worker.succeed(None)
        self.assertTrue(broker.running)
        self.assertEqual([methodOf(t) for t in worker.received], ["first", "work"])
        worker.succeed(2)
        self.assertEqual(self.successResultOf(d), 2)

    def test_startupFails(self) -> None:
        """
        A failed start-up fails the calls that waited for it, the waiters
        of C{waitUntilRunning}, and every later call, with L{StartupError}
        naming the broker; no call reaches a worker.
        """
        gate: Deferred[None] = Deferred()
        broker, reactor, workers = self.makeBroker()
        broker.gate = gate
        d = broker.work(1)
        waiting = broker.waitUntilRunning()
        reactor.advance(0)
        gate.errback(RuntimeError("no tables"))
        for failed in (d, waiting, broker.waitUntilRunning(), broker.work(2)):
            failure = self.failureResultOf(failed, StartupError)
            self.assertIn("Broker", str(failure.value))
            self.assertIsInstance(failure.value.__cause__, RuntimeError)
        self.assertIs(broker._life.phase, Phase.FAILED)
        self.assertEqual(workers.only.received, [])
        self.flushLoggedErrors(RuntimeError)

    def test_shutdownBeforeStartup(self) -> None:
        """
        Shutting down a broker whose start-up never ran finishes at once;
        then it is not running and refuses work with L{BrokerStopped}.
        """
        broker, reactor, _ = self.makeBroker()
        self.successResultOf(broker.shutdown())
        self.assertFalse(broker.running)
        self.failureResultOf(broker.waitUntilRunning(), BrokerStopped)
        failure = self.failureResultOf(broker.work(3), BrokerStopped)
        self.assertIn(
            "Broker.work(3) was called after Broker.shutdown()", str(failure.value)
        )
        self.assertEqual(reactor.triggers, {})

    def test_shutdownRunsCallsAcceptedBeforeStartup(self) -> None:
        """
        Calls accepted before the start-up ran still run when shutdown
        comes first: it starts the broker for them, then waits for them.
        """
        broker, _, workers = self.makeBroker()
        d = broker.work(4)
        stopped = broker.shutdown()
        self.assertEqual([methodOf(t) for t in workers.only.received], ["work"])
        self.assertNoResult(stopped)
        workers.only.succeed(4)
        self.assertEqual(self.successResultOf(d), 4)
        self.successResultOf(stopped)

    def test_shutdownWaitsForRunningCalls(self) -> None:
        """
        Shutdown waits for a running transaction, and for a Deferred
        tracked by C{@wait}; meanwhile new calls are refused. Each call of
        C{shutdown} gets a Deferred of its own.
        """
        broker, reactor, workers = self.makeBroker()
        reactor.advance(0)
        d = broker.work(5)
        tracked: Deferred[None] = Deferred()
        broker._calls.track(tracked)
        first, second = broker.shutdown(), broker.shutdown()
        self.assertIsNot(first, second)
        self.failureResultOf(broker.work(6), BrokerStopped)
        workers.only.succeed(5)
        self.assertEqual(self.successResultOf(d), 5)
        self.assertNoResult(first)
        tracked.callback(None)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertIs(broker._life.phase, Phase.STOPPED)

    def test_drainTimerCancelsWhatIsLeft(self) -> None:
        """
        C{shutdown(timeout=)}: once the timeout runs out, the calls left
        fail with C{CancelledError}; then the workers get
        L{SHUTDOWN_GRACE} more seconds before a busy one is abandoned and
        the shutdown ends.
        """
        broker, reactor, workers = self.makeBroker()
        reactor.advance(0)
        running = broker.work(1)
        queued = broker.work(2)
        stopped = broker.shutdown(timeout=5)
        reactor.advance(4.9)
        self.assertNoResult(running)
        self.assertNoResult(queued)
        reactor.advance(0.1)
        self.failureResultOf(running, CancelledError)
        self.failureResultOf(queued, CancelledError)
        # The fake worker never lets go of the task it runs.
        self.assertNoResult(stopped)
        reactor.advance(SHUTDOWN_GRACE - 0.01)
        self.assertNoResult(stopped)
        reactor.advance(0.01)
        self.successResultOf(stopped)
        self.assertEqual(len(workers.only.received), 1)

    def test_drainTimerStuckWorkerOnly(self) -> None:
        """
        C{shutdown(timeout=)} with no call left but a worker still busy
        (with a call that timed out, in code that never returns) waits
        only the timeout and L{SHUTDOWN_GRACE} for it.
        """
        broker, reactor, workers = self.makeBroker()
        reactor.advance(0)
        d = broker.work(1, timeout=1)
        reactor.advance(1)
        self.failureResultOf(d)
        stopped = broker.shutdown(timeout=2)
        reactor.advance(2 + SHUTDOWN_GRACE - 0.01)
        self.assertNoResult(stopped)
        reactor.advance(0.01)
        self.successResultOf(stopped)
        self.assertIsNotNone(workers.only.current)

    def test_laterShorterTimeoutWins(self) -> None:
        """
        A later C{shutdown} with a shorter timeout shortens the wait of an
        earlier one; a longer one does not lengthen it.
        """
        broker, reactor, _ = self.makeBroker()
        reactor.advance(0)
        d = broker.work(1)
        broker.shutdown(timeout=10)
        broker.shutdown(timeout=2)
        broker.shutdown(timeout=30)
        reactor.advance(1.9)
        self.assertNoResult(d)
        reactor.advance(0.1)
        self.failureResultOf(d, CancelledError)

    def test_shutdownTimeoutChecked(self) -> None:
        """
        A timeout that is not a number >= 0 is refused, naming it.
        """
        broker, _, _ = self.makeBroker()
        for bad in (-1, True, "5"):
            with self.assertRaises(ValueError) as caught:
                broker.shutdown(timeout=bad)  # type: ignore[arg-type]
            self.assertEqual(
                str(caught.exception),
                f"shutdown()'s timeout must be a number >= 0 or None, not {bad!r}",
            )

    def test_shutdownTriggerRemoved(self) -> None:
        """
        The broker registers its shutdown to run before the reactor's, and
        takes that back when it shuts down by itself.
        """
        broker, reactor, _ = self.makeBroker()
        [(phase, event, f)] = reactor.triggers.values()
        self.assertEqual((phase, event), ("before", "shutdown"))
        self.assertEqual(f, broker.shutdown)
        self.successResultOf(broker.shutdown())
        self.assertEqual(reactor.triggers, {})

    def test_callWhenRunning(self) -> None:
        """
        C{callWhenRunning} calls once the broker runs, with the result of
        a coroutine function awaited.
        """
        broker, reactor, _ = self.makeBroker()

        async def f(x: int) -> int:
            return x * 2

        d = broker.callWhenRunning(f, 21)
        self.assertNoResult(d)
        reactor.advance(0)
        self.assertEqual(self.successResultOf(d), 42)
