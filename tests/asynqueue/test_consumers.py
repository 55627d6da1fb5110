"""
Unit tests for the user's consumer as AsynQueue meets it: whatever it raises
(from C{registerProducer}, C{write} or C{unregisterProducer}) fails the
call's Deferred and frees the worker; and C{resumeProducing} never writes,
nor fires the call's Deferred, inside the consumer's own call. Deterministic:
single-stepped workers and a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from asynqueue import AsyncWorker, Deferator, IterationProducer, Task, TaskQueue

from .helpers import memoryWorker
from .test_deferator import Source, heldFetches


class Boom(RuntimeError):
    """
    What a faulty consumer raises.
    """


@implementer(IConsumer)
class FaultyConsumer:
    """
    A consumer that raises L{Boom} from one of its methods: C{"register"},
    C{"write"} (at item C{failAt}) or C{"unregister"}; or from several. With
    C{"pause"}, it pauses its producer after every item.
    """

    def __init__(self, *where: str, failAt: int = 2) -> None:
        self.where = where
        self.failAt = failAt
        self.items: list[Any] = []
        self.producer: Any = None
        self.unregistered = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if "register" in self.where:
            raise Boom("boom in registerProducer")
        self.producer = producer

    def write(self, data: Any) -> None:
        if "write" in self.where and len(self.items) == self.failAt:
            raise Boom("boom in write")
        self.items.append(data)
        if "pause" in self.where:
            self.producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self.unregistered += 1
        if "unregister" in self.where:
            raise Boom("boom in unregisterProducer")


class ConsumerErrorTestsBase(SynchronousTestCase):
    """
    The tests, run with each kind of worker (see the subclasses).
    """

    __test__ = False

    #: Whether the worker holds an open iteration (as sAsync's workers on
    #: server databases do): then only stopping the iteration frees it.
    holds = True

    def setUp(self) -> None:
        self.clock = Clock()
        self.q = TaskQueue(clock=self.clock)
        self.attach()

    def attach(self) -> None:
        self.worker, runner = memoryWorker(batchSize=10, holdIterations=self.holds)
        self.q.attachWorker(self.worker)
        self.perform = runner.performAll

    def produce(self, consumer: FaultyConsumer, n: int = 100) -> tuple[
        Source, Deferred[Any]
    ]:
        source = Source(n)
        d = self.q.call(lambda: source, consumer=consumer)
        self.perform()
        return source, d

    def assertWorkerFree(self, source: Source) -> None:
        """
        The iteration was stopped (its source closed in the worker) and the
        worker takes the next call; nothing is left running.
        """
        self.perform()
        self.assertTrue(source.closed or source.pulled == source.n)
        after = self.q.call(lambda: "after")
        self.perform()
        self.assertEqual(self.successResultOf(after), "after")
        self.assertEqual(self.q.running(), 0)
        stopped = self.q.shutdown()
        self.perform()
        self.successResultOf(stopped)

    def test_registerRaises(self) -> None:
        """
        A consumer whose C{registerProducer} raises: the call fails with its
        exception, nothing is written, it is not unregistered, and the
        worker is free.
        """
        consumer = FaultyConsumer("register")
        source, d = self.produce(consumer)
        failure = self.failureResultOf(d, Boom)
        self.assertIn("registerProducer", str(failure.value))
        self.assertEqual(consumer.items, [])
        self.assertEqual(consumer.unregistered, 0)
        self.assertWorkerFree(source)

    def test_writeRaises(self) -> None:
        """
        A consumer whose C{write} raises: the call fails with its exception,
        the consumer is unregistered, the worker is free.
        """
        consumer = FaultyConsumer("write")
        source, d = self.produce(consumer)
        self.failureResultOf(d, Boom)
        self.assertEqual(consumer.items, [0, 1])
        self.assertEqual(consumer.unregistered, 1)
        self.assertWorkerFree(source)

    def test_writeRaisesAfterFetch(self) -> None:
        """
        The same when the failing write comes with a later batch, fetched
        from the worker.
        """
        consumer = FaultyConsumer("write", failAt=25)
        source, d = self.produce(consumer)
        self.failureResultOf(d, Boom)
        self.assertEqual(consumer.items, list(range(25)))
        self.assertWorkerFree(source)

    def test_unregisterRaises(self) -> None:
        """
        Every item written, then C{unregisterProducer} raises: the call
        fails with that exception (not with the consumer).
        """
        consumer = FaultyConsumer("unregister")
        source, d = self.produce(consumer, 25)
        self.failureResultOf(d, Boom)
        self.assertEqual(consumer.items, list(range(25)))
        self.assertWorkerFree(source)

    def test_writeAndUnregisterRaise(self) -> None:
        """
        When C{write} raised first, the call fails with that first error; the
        second, from C{unregisterProducer}, is logged.
        """
        consumer = FaultyConsumer("write", "unregister")
        source, d = self.produce(consumer)
        failure = self.failureResultOf(d, Boom)
        self.assertIn("write", str(failure.value))
        logged = self.flushLoggedErrors(Boom)
        self.assertEqual(
            [str(f.value) for f in logged], ["boom in unregisterProducer"]
        )
        self.assertWorkerFree(source)

    def test_cancelWhileProducingUnregisterRaises(self) -> None:
        """
        A call cancelled while its items are being written stops the
        production; an error from C{unregisterProducer} then is logged, not
        raised into the canceller, and the worker is free.
        """
        consumer = FaultyConsumer("pause", "unregister")
        source, d = self.produce(consumer)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertWorkerFree(source)


class HeldWorkerConsumerErrorTests(ConsumerErrorTestsBase):
    """
    With a worker held by the open iteration (sAsync on server databases).
    """

    __test__ = True


class FreeWorkerConsumerErrorTests(ConsumerErrorTestsBase):
    """
    With a worker that takes other calls between batches.
    """

    __test__ = True
    holds = False


class AsyncWorkerConsumerErrorTests(SynchronousTestCase):
    """
    With an L{AsyncWorker}, whose iterations are fetched in the reactor.
    """

    def test_registerRaises(self) -> None:
        """
        The call fails with the consumer's exception, the iterator is closed
        and the next call runs.
        """
        q = TaskQueue(clock=Clock())
        q.attachWorker(AsyncWorker(batchSize=10))
        source = Source(100)
        d = q.call(lambda: source, consumer=FaultyConsumer("register"))
        self.failureResultOf(d, Boom)
        self.assertTrue(source.closed)
        self.assertEqual(self.successResultOf(q.call(lambda: 2)), 2)
        self.successResultOf(q.shutdown())


class ProducerConsumerErrorTests(SynchronousTestCase):
    """
    L{IterationProducer} and L{Task.finish} on their own: a consumer's error
    comes back in a Deferred, never raised to whoever started them.
    """

    def test_runNeverRaises(self) -> None:
        """
        C{run()} with a consumer whose C{registerProducer} raises returns a
        failed Deferred, and stops the iteration (its source is released).
        """
        released: list[bool] = []
        _, fetch = heldFetches()
        dr: Deferator[int] = Deferator(
            [1, 2], fetch, stop=lambda: released.append(True)
        )
        d = IterationProducer(dr, FaultyConsumer("register"), clock=Clock()).run()
        self.failureResultOf(d, Boom)
        self.assertEqual(released, [True])

    def test_finishDeliversAProducerThatCannotStart(self) -> None:
        """
        A task whose producer can't even be made (here: its consumer is no
        C{IConsumer}, which L{TaskQueue.call} would have refused) fails with
        the error, and its iteration is stopped.
        """
        released: list[bool] = []
        _, fetch = heldFetches()
        dr: Deferator[int] = Deferator(
            [1, 2], fetch, stop=lambda: released.append(True)
        )
        task: Task[Any] = Task(lambda: None, consumer=object())  # type: ignore[arg-type]
        task.finish(dr)
        self.failureResultOf(task.d, TypeError)
        self.assertEqual(released, [True])


@implementer(IConsumer)
class BookkeepingConsumer:
    """
    A common consumer shape: C{write} takes an item on and pauses; L{resume}
    (called later, when the item has been dealt with) resumes the producer
    and then files the item in C{records}, so that C{records} is complete
    when the producer is done.
    """

    def __init__(self) -> None:
        self.producer: Any = None
        self.written: list[Any] = []
        self.current: Any = None
        self.records: list[Any] = []
        self.unregistered = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: Any) -> None:
        self.written.append(data)
        self.current = data
        self.producer.pauseProducing()

    def resume(self) -> None:
        done, self.current = self.current, None
        self.producer.resumeProducing()
        # The bookkeeping, after the resume: it must run before anything
        # else is written or the call's Deferred fires.
        self.records.append(done)


class ScheduledResumeTests(SynchronousTestCase):
    """
    C{resumeProducing} schedules the writing on the clock: nothing is
    written, and the call's Deferred does not fire, inside the consumer's
    own call.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.q = TaskQueue(clock=self.clock)
        self.worker, self.runner = memoryWorker(batchSize=10)
        self.q.attachWorker(self.worker)

    def test_nothingBeforeTheClock(self) -> None:
        """
        After the consumer's C{resumeProducing}, nothing is written and the
        Deferred has not fired until the clock moves on.
        """
        consumer = BookkeepingConsumer()
        d = self.q.call(lambda: iter(range(3)), consumer=consumer)
        self.runner.performAll()
        self.assertEqual(consumer.written, [0])
        for i in (1, 2):
            consumer.producer.resumeProducing()
            self.assertEqual(consumer.written, list(range(i)))
            self.clock.advance(0)
            self.assertEqual(consumer.written, list(range(i + 1)))
        consumer.producer.resumeProducing()
        self.assertNoResult(d)
        self.assertFalse(consumer.unregistered)
        self.clock.advance(0)
        self.assertIs(self.successResultOf(d), consumer)
        self.assertTrue(consumer.unregistered)

    def test_bookkeepingBeforeTheDeferred(self) -> None:
        """
        A consumer that files each item after resuming its producer has
        filed every item when the call's Deferred fires (a real client got
        an empty list when the Deferred fired inside C{resumeProducing}).
        """
        consumer = BookkeepingConsumer()
        d = self.q.call(lambda: iter(range(25)), consumer=consumer)
        d.addCallback(lambda c: list(c.records))
        self.runner.performAll()
        while not d.called:
            consumer.resume()
            self.clock.advance(0)
            self.runner.performAll()
        self.assertEqual(self.successResultOf(d), list(range(25)))

    def test_batchLandingDuringResume(self) -> None:
        """
        A batch that lands at once, while the Deferator resumes fetching
        inside C{resumeProducing}, is written later too.
        """
        fetches, fetch = heldFetches()
        dr: Deferator[int] = Deferator([0], fetch)
        consumer = FaultyConsumer()
        d = IterationProducer(dr, consumer, clock=self.clock).run()
        # Written what there was, and waiting for a fetch, when the consumer
        # pauses it.
        self.assertEqual(consumer.items, [0])
        consumer.producer.pauseProducing()
        resume = dr.resume

        def resumeAndLand() -> None:
            resume()
            fetches[0].callback(([1, 2], True))

        dr.resume = resumeAndLand  # type: ignore[method-assign]
        consumer.producer.resumeProducing()
        self.assertEqual(consumer.items, [0])
        self.assertNoResult(d)
        self.clock.advance(0)
        self.assertIs(self.successResultOf(d), consumer)
        self.assertEqual(consumer.items, [0, 1, 2])

    def test_pausedAgainBeforeTheClock(self) -> None:
        """
        Resumed and paused again before the clock moves: nothing is written;
        resumed once more, writing goes on, through one scheduled call.
        """
        consumer = BookkeepingConsumer()
        d = self.q.call(lambda: iter(range(3)), consumer=consumer)
        self.runner.performAll()
        producer = consumer.producer
        producer.resumeProducing()
        producer.pauseProducing()
        self.clock.advance(0)
        self.assertEqual(consumer.written, [0])
        producer.resumeProducing()
        producer.resumeProducing()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(consumer.written, [0, 1])
        self.assertNoResult(d)

    def test_stopCancelsTheScheduledCall(self) -> None:
        """
        Stopped after a resume: the scheduled writing is cancelled and
        nothing more is written.
        """
        consumer = BookkeepingConsumer()
        d = self.q.call(lambda: iter(range(3)), consumer=consumer)
        self.runner.performAll()
        consumer.producer.resumeProducing()
        consumer.producer.stopProducing()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIs(self.successResultOf(d), consumer)
        self.assertEqual(consumer.written, [0])
