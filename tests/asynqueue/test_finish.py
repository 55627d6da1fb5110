"""
Unit tests for finishing items in the reactor thread: an iterator with a
C{finishItem} (L{asynqueue.deferator.FINISH_ITEM}) sends its items across
unfinished, and the L{Deferator} (or its producer) finishes each one as it
hands it out, exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import (
    AsyncWorker,
    Deferator,
    IterationProducer,
    ListConsumer,
    TaskQueue,
)
from asynqueue.deferator import FINISH_ITEM, BatchTaker
from asynqueue.producer import iteratorToProducer

from .helpers import memoryWorker
from .test_producer import PausingConsumer


class Finished:
    """
    What finishing makes of an item.
    """

    def __init__(self, raw: int) -> None:
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Finished) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"Finished({self.raw})"


class RawSource:
    """
    An iterator of plain ints that says how to finish them, counting how
    many were finished.
    """

    def __init__(self, n: int) -> None:
        self.items = iter(range(n))
        self.finished = 0

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        return next(self.items)

    def finishItem(self, raw: int) -> Finished:
        self.finished += 1
        return Finished(raw)


def finished(*raws: int) -> list[Finished]:
    return [Finished(raw) for raw in raws]


class BatchTakerFinishTests(SynchronousTestCase):
    """
    The taker knows the iterator's finishing function.
    """

    def test_finishItem(self) -> None:
        """
        L{BatchTaker.finishItem} is the iterator's C{finishItem}, or
        C{None}; L{BatchTaker.take} leaves items as they are, and
        L{BatchTaker.takeFinished} finishes them.
        """
        self.assertEqual(FINISH_ITEM, "finishItem")
        self.assertIsNone(BatchTaker(iter([1])).finishItem)
        taker = BatchTaker(RawSource(5), 2)
        self.assertEqual(taker.take(), ([0, 1], False))
        self.assertEqual(taker.takeFinished(), (finished(2, 3), False))
        self.assertEqual(taker.takeFinished(), (finished(4), True))
        self.assertEqual(BatchTaker(iter([1, 2])).takeFinished(), ([1, 2], True))


class DeferatorFinishTests(SynchronousTestCase):
    """
    A Deferator with C{finish} finishes each item as it hands it out.
    """

    def deferator(self, n: int, batch: int = 3) -> tuple[RawSource, Deferator[Any]]:
        source = RawSource(n)
        taker = BatchTaker(source, batch)
        first, exhausted = taker.take()
        fetch = None if exhausted else (lambda: succeed(taker.take()))
        dr = Deferator(first, fetch, finish=taker.finishItem)
        return source, dr

    def test_next(self) -> None:
        """
        Each item's Deferred has it finished; nothing is finished before it
        is asked for.
        """
        source, dr = self.deferator(7)
        self.assertEqual(source.finished, 0)
        self.assertEqual(self.successResultOf(next(dr)), Finished(0))
        self.assertEqual(source.finished, 1)
        rest = [self.successResultOf(d) for d in dr]
        self.assertEqual(rest, finished(1, 2, 3, 4, 5, 6))
        self.assertEqual(source.finished, 7)

    def test_takeBufferedPutBack(self) -> None:
        """
        L{Deferator.takeBuffered} hands out finished items; those put back
        are not finished a second time.
        """
        source, dr = self.deferator(7)
        items = dr.takeBuffered()
        self.assertEqual(items[:2], finished(0, 1))
        dr.putBack(items[1:])
        again = dr.takeBuffered()
        self.assertEqual(again[: len(items) - 1], items[1:])
        self.assertIs(again[0], items[1])
        dr.putBack(again)
        self.assertEqual([self.successResultOf(d) for d in dr], finished(*range(1, 7)))
        self.assertEqual(source.finished, 7)

    def test_asyncForAfterPutBack(self) -> None:
        """
        C{async for} finishes each item once: items put back finished are
        handed out as they are, even with many buffered behind them (its
        quick path, taken while plenty is buffered, finishes every item),
        and the items behind them are finished.
        """
        source, dr = self.deferator(20, batch=10)
        items = dr.takeBuffered()
        self.assertEqual(items, finished(*range(20)))
        dr.putBack(items[:3])
        # Unfinished items behind them (as a fetch would add them).
        dr._buffer.extend(range(100, 108))

        async def readAll() -> list[Any]:
            return [item async for item in dr]

        got = self.successResultOf(Deferred.fromCoroutine(readAll()))
        self.assertEqual(got, finished(0, 1, 2, *range(100, 108)))
        self.assertIs(got[0], items[0])
        self.assertEqual(source.finished, 20 + 8)

    def test_producer(self) -> None:
        """
        A producer writes finished items; paused mid-batch, it puts the rest
        back and finishes each item once in all.
        """
        source, dr = self.deferator(50, batch=7)
        consumer = PausingConsumer(every=4)
        clock = Clock()
        d = IterationProducer(dr, consumer, clock=clock).run()
        while not d.called:
            consumer.producer.resumeProducing()
            clock.advance(0)
        self.assertEqual(consumer.items, finished(*range(50)))
        self.assertEqual(source.finished, 50)

    def test_producerAfterPutBack(self) -> None:
        """
        Items put back finished by another bulk reader are written as they
        are by a producer.
        """
        source, dr = self.deferator(10)
        items = dr.takeBuffered()
        dr.putBack(items)
        consumer = ListConsumer()
        self.successResultOf(IterationProducer(dr, consumer).run())
        self.assertEqual(consumer.items, finished(*range(10)))
        self.assertIs(consumer.items[0], items[0])
        self.assertEqual(source.finished, 10)

    def test_iteratorToProducer(self) -> None:
        """
        L{iteratorToProducer} finishes too.
        """
        consumer = ListConsumer()
        self.successResultOf(iteratorToProducer(RawSource(5), consumer, batchSize=2))
        self.assertEqual(consumer.items, finished(*range(5)))


class WorkerFinishTests(SynchronousTestCase):
    """
    Workers pass the iterator's C{finishItem} to the Deferator they deliver.
    """

    def test_threadWorker(self) -> None:
        """
        Items of a task's iterator are finished as they are handed out,
        to the caller's Deferreds or to its consumer.
        """
        q = TaskQueue()
        worker, runner = memoryWorker(batchSize=3)
        q.attachWorker(worker)
        d = q.call(lambda: RawSource(8))
        consumer = ListConsumer()
        d2 = q.call(lambda: RawSource(8), consumer=consumer)
        runner.performAll()
        dr = self.successResultOf(d)
        items = []
        for itemD in dr:
            runner.performAll()
            items.append(self.successResultOf(itemD))
        self.assertEqual(items, finished(*range(8)))
        self.assertIs(self.successResultOf(d2), consumer)
        self.assertEqual(consumer.items, finished(*range(8)))

    def test_asyncWorker(self) -> None:
        """
        The same on an L{AsyncWorker}.
        """
        q = TaskQueue()
        q.attachWorker(AsyncWorker(batchSize=3))
        dr = self.successResultOf(q.call(lambda: RawSource(5)))
        self.assertEqual([self.successResultOf(d) for d in dr], finished(*range(5)))
