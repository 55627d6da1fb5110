"""
Unit tests for L{asynqueue.producer}: L{IterationProducer} honours pause,
resume and stop; L{ListConsumer}; L{iteratorToProducer}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from asynqueue import (
    Deferator,
    IterationProducer,
    ListConsumer,
    TaskQueue,
    iteratorToProducer,
)

from .helpers import memoryWorker
from .test_deferator import Source


@implementer(IConsumer)
class PausingConsumer:
    """
    A consumer that pauses its producer after every C{every} items.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.items: list[Any] = []
        self.producer: Any = None
        self.unregistered = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: Any) -> None:
        self.items.append(data)
        if len(self.items) % self.every == 0:
            self.producer.pauseProducing()


@implementer(IConsumer)
class CallingConsumer:
    """
    A consumer that, writing item C{i}, calls its producer as C{calls[i]}
    says, in order: C{"pause"}, C{"resume"}, C{"stop"}; C{"raise"} raises.
    """

    def __init__(self, calls: dict[int, list[str]]) -> None:
        self.calls = calls
        self.items: list[Any] = []
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: Any) -> None:
        self.items.append(data)
        for call in self.calls.get(data, []):
            if call == "raise":
                raise OSError("disk full")
            getattr(self.producer, f"{call}Producing")()


@implementer(IConsumer)
class BrokenConsumer(ListConsumer):
    """
    A consumer whose write fails on the third item.
    """

    def write(self, data: Any) -> None:
        if len(self.items) == 2:
            raise OSError("disk full")
        super().write(data)


class IterationProducerTests(SynchronousTestCase):
    """
    A push producer that really stops pulling from the worker while paused.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.q = TaskQueue(clock=self.clock)
        self.worker, self.runner = memoryWorker(batchSize=10, holdIterations=True)
        self.q.attachWorker(self.worker)

    def deferator(self, n: int) -> tuple[Source, Deferator[int]]:
        source = Source(n)
        d = self.q.call(lambda: source)
        self.runner.performAll()
        return source, self.successResultOf(d)

    def test_interfaces(self) -> None:
        """
        The producer provides IPushProducer, ListConsumer IConsumer.
        """
        _, dr = self.deferator(5)
        verifyObject(IPushProducer, IterationProducer(dr, ListConsumer()))
        verifyObject(IConsumer, ListConsumer())

    def test_writesAll(self) -> None:
        """
        Every item is written, the producer unregistered, and the Deferred
        fires with the consumer.
        """
        _, dr = self.deferator(95)
        consumer = ListConsumer()
        d = IterationProducer(dr, consumer, clock=self.clock).run()
        self.runner.performAll()
        self.assertIs(self.successResultOf(d), consumer)
        self.assertEqual(consumer.items, list(range(95)))
        self.assertIsNone(consumer.producer)

    def test_pauseStopsFetching(self) -> None:
        """
        While paused, no fetch job reaches the worker and nothing more is
        pulled from the source; resuming carries on to the end.
        """
        source, dr = self.deferator(1000)
        consumer = PausingConsumer(every=25)
        producer = IterationProducer(dr, consumer, clock=self.clock)
        d = producer.run()
        self.runner.performAll()
        self.assertTrue(producer.paused)
        self.assertEqual(len(consumer.items), 25)
        pulled = source.pulled
        # Nothing to do for the worker while paused, however long we wait.
        self.assertEqual(self.runner.performAll(), 0)
        self.assertEqual(source.pulled, pulled)
        # At most three batches held or on their way (and a look-ahead item).
        self.assertLessEqual(pulled, 25 + 3 * 10 + 1)
        rounds = jobs = 0
        while not d.called:
            producer.resumeProducing()
            self.clock.advance(0)
            jobs += self.runner.performAll()
            # Paused again: the worker has nothing left to do.
            self.assertEqual(self.runner.performAll(), 0)
            self.assertLessEqual(source.pulled, len(consumer.items) + 3 * 10 + 1)
            rounds += 1
        self.assertEqual(rounds, 40)
        # One fetch per batch (and one on its way when the last landed),
        # never one per item.
        self.assertLessEqual(jobs, 1000 // 10 + 1)
        self.assertEqual(consumer.items, list(range(1000)))
        self.assertTrue(consumer.unregistered)

    def test_resumeWhenNotPaused(self) -> None:
        """
        Resuming a producer that isn't paused is harmless.
        """
        _, dr = self.deferator(30)
        consumer = ListConsumer()
        producer = IterationProducer(dr, consumer, clock=self.clock)
        d = producer.run()
        producer.resumeProducing()
        self.runner.performAll()
        producer.resumeProducing()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(d)
        self.assertEqual(consumer.items, list(range(30)))

    def test_stopReleasesWorker(self) -> None:
        """
        C{stopProducing} ends the iteration, closes the source in the
        worker, frees the worker and fires the Deferred with the consumer.
        """
        source, dr = self.deferator(1000)
        consumer = PausingConsumer(every=15)
        producer = IterationProducer(dr, consumer, clock=self.clock)
        d = producer.run()
        self.runner.performAll()
        other = self.q.call(lambda: "other")
        self.runner.performAll()
        self.assertNoResult(other)
        producer.stopProducing()
        self.assertIs(self.successResultOf(d), consumer)
        self.runner.performAll()
        self.assertTrue(source.closed)
        self.assertEqual(self.successResultOf(other), "other")
        producer.resumeProducing()
        producer.stopProducing()
        self.assertEqual(len(consumer.items), 15)

    def test_brokenConsumer(self) -> None:
        """
        A consumer whose write raises ends the production with its error
        and releases the worker.
        """
        source, dr = self.deferator(100)
        consumer = BrokenConsumer()
        d = IterationProducer(dr, consumer, clock=self.clock).run()
        self.failureResultOf(d, OSError)
        self.runner.performAll()
        self.assertTrue(source.closed)
        self.assertEqual(consumer.items, [0, 1])

    def test_pauseAtBatchEnds(self) -> None:
        """
        A consumer pausing on the last item of every batch gets every item
        once, in order.
        """
        _, dr = self.deferator(100)
        consumer = PausingConsumer(every=10)
        producer = IterationProducer(dr, consumer, clock=self.clock)
        d = producer.run()
        while not d.called:
            self.runner.performAll()
            producer.resumeProducing()
            self.clock.advance(0)
        self.assertEqual(consumer.items, list(range(100)))

    def test_pauseAndResumeInOneWrite(self) -> None:
        """
        A consumer that pauses and resumes the producer within one write
        still gets every item once, in order.
        """
        _, dr = self.deferator(95)
        consumer = CallingConsumer(
            {3: ["pause", "resume"], 17: ["pause", "resume", "pause"]}
        )
        producer = IterationProducer(dr, consumer, clock=self.clock)
        d = producer.run()
        self.runner.performAll()
        self.clock.advance(0)
        self.assertEqual(consumer.items, list(range(18)))
        producer.resumeProducing()
        while not d.called:
            self.clock.advance(0)
            self.runner.performAll()
        self.assertEqual(consumer.items, list(range(95)))

    def test_stopInsideWrite(self) -> None:
        """
        A consumer that stops the producer in a write gets nothing after
        that write; the source is closed and the worker freed.
        """
        source, dr = self.deferator(100)
        consumer = CallingConsumer({12: ["stop"]})
        d = IterationProducer(dr, consumer, clock=self.clock).run()
        self.assertIs(self.successResultOf(d), consumer)
        self.runner.performAll()
        self.clock.advance(0)
        self.assertTrue(source.closed)
        self.assertEqual(consumer.items, list(range(13)))

    def test_writeRaisesAfterPause(self) -> None:
        """
        A write that pauses the producer, then raises, fails the Deferred
        with its error and releases the worker.
        """
        source, dr = self.deferator(100)
        consumer = CallingConsumer({4: ["pause", "raise"]})
        d = IterationProducer(dr, consumer, clock=self.clock).run()
        self.failureResultOf(d, OSError)
        self.runner.performAll()
        self.assertTrue(source.closed)
        self.assertEqual(consumer.items, list(range(5)))

    def test_runOnce(self) -> None:
        """
        A producer runs only once.
        """
        _, dr = self.deferator(3)
        producer = IterationProducer(dr, ListConsumer())
        producer.run()
        self.assertRaises(RuntimeError, producer.run)

    def test_notAConsumer(self) -> None:
        """
        The consumer must provide IConsumer.
        """
        self.assertRaises(TypeError, IterationProducer, Deferator([]), object())


class ListConsumerTests(SynchronousTestCase):
    """
    The list consumer keeps what it gets.
    """

    def test_oneProducer(self) -> None:
        """
        It takes one producer at a time.
        """
        consumer = ListConsumer()
        consumer.registerProducer(object(), True)
        self.assertRaises(RuntimeError, consumer.registerProducer, object(), True)
        consumer.unregisterProducer()
        consumer.registerProducer(object(), True)


class IteratorToProducerTests(SynchronousTestCase):
    """
    L{iteratorToProducer} produces a local iterable to a consumer.
    """

    def test_all(self) -> None:
        """
        Every item arrives, in order, and the Deferred fires with the
        consumer.
        """
        consumer = ListConsumer()
        d = iteratorToProducer(range(1234), consumer, batchSize=100)
        self.assertIs(self.successResultOf(d), consumer)
        self.assertEqual(consumer.items, list(range(1234)))

    def test_pauseStopsPulling(self) -> None:
        """
        A paused producer pulls no more from the iterable.
        """
        source = Source(100)
        consumer = PausingConsumer(every=10)
        clock = Clock()
        d: Deferred[Any] = iteratorToProducer(
            source, consumer, batchSize=5, clock=clock
        )
        self.assertNoResult(d)
        self.assertEqual(len(consumer.items), 10)
        self.assertLessEqual(source.pulled, 10 + 2 * 5 + 1)
        while not d.called:
            consumer.producer.resumeProducing()
            clock.advance(0)
        self.assertEqual(consumer.items, list(range(100)))

    def test_empty(self) -> None:
        """
        An empty iterable fires at once with the consumer.
        """
        consumer = ListConsumer()
        self.assertIs(self.successResultOf(iteratorToProducer([], consumer)), consumer)
        self.assertEqual(consumer.items, [])


class BoundedBufferTests(SynchronousTestCase):
    """
    A consumer that pauses often does not make the Deferator hold more and
    more items (a regression: every resume used to fetch another batch while
    the unwritten rest of the last one was put back).
    """

    def test_pauseResumeCyclesStayBounded(self) -> None:
        """
        Through 200 pause/resume cycles of a consumer that takes 200 items
        each time, never more than about two batches are buffered.
        """
        batch = 1000
        source = Source(10**6)
        consumer = PausingConsumer(every=200)
        clock = Clock()
        d: Deferred[Any] = iteratorToProducer(
            source, consumer, batchSize=batch, clock=clock
        )
        most = 0
        for _ in range(200):
            consumer.producer.resumeProducing()
            clock.advance(0)
            most = max(most, source.pulled - len(consumer.items))
        self.assertNoResult(d)
        self.assertEqual(len(consumer.items), 201 * 200)
        self.assertLessEqual(most, 3 * batch + 1)
