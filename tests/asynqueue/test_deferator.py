"""
Unit tests for L{asynqueue.deferator}: L{BatchTaker} and L{Deferator}, fed by
single-stepped thread workers.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import Deferator, IterationStopped, TaskQueue
from asynqueue.deferator import BatchTaker

from .helpers import memoryWorker


class Source:
    """
    A generator-like iterator that counts the items pulled from it and
    notes when it is closed.
    """

    def __init__(self, n: int, failAt: int | None = None) -> None:
        self.n = n
        self.failAt = failAt
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self.closed or self.pulled >= self.n:
            raise StopIteration
        if self.pulled == self.failAt:
            raise ValueError(f"failed at {self.pulled}")
        self.pulled += 1
        return self.pulled - 1

    def close(self) -> None:
        self.closed = True


def heldFetches() -> tuple[list[Deferred[Any]], Callable[[], Deferred[Any]]]:
    """
    A Deferator's fetch function whose batches the test delivers: each
    fetch's Deferred waits in the list until the test fires it.
    """
    batches: list[Deferred[Any]] = []

    def fetch() -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        batches.append(d)
        return d

    return batches, fetch


class BatchTakerTests(SynchronousTestCase):
    """
    The worker's side takes batches and knows when the source is done.
    """

    def test_batches(self) -> None:
        """
        Batches are of the given size and the last says it is the last.
        """
        taker = BatchTaker(iter(range(7)), 3)
        self.assertEqual(taker.take(), ([0, 1, 2], False))
        self.assertEqual(taker.take(), ([3, 4, 5], False))
        self.assertEqual(taker.take(), ([6], True))
        self.assertEqual(taker.take(), ([], True))

    def test_exactMultiple(self) -> None:
        """
        Looking ahead, a source whose length is a multiple of the batch size
        is known to be exhausted with its last full batch.
        """
        taker = BatchTaker(iter(range(6)), 3)
        self.assertEqual(taker.take(), ([0, 1, 2], False))
        self.assertEqual(taker.take(), ([3, 4, 5], True))

    def test_errorAfterItems(self) -> None:
        """
        Items before an error are handed out; the next take raises it.
        """
        taker = BatchTaker(Source(10, failAt=4), 3)
        self.assertEqual(taker.take(), ([0, 1, 2], False))
        self.assertEqual(taker.take(), ([3], False))
        self.assertRaises(ValueError, taker.take)
        self.assertEqual(taker.take(), ([], True))

    def test_closeClosesSource(self) -> None:
        """
        Closing the taker closes the source.
        """
        source = Source(10)
        taker = BatchTaker(source, 3)
        taker.take()
        taker.close()
        self.assertTrue(source.closed)
        self.assertEqual(taker.take(), ([], True))


class DeferatorTests(SynchronousTestCase):
    """
    A Deferator hands out items in Deferreds, fetching batches ahead.
    """

    def iterate(
        self, n: int, batchSize: int = 3, failAt: int | None = None, **kw: Any
    ) -> Any:
        q = TaskQueue()
        worker, runner = memoryWorker(batchSize=batchSize, **kw)
        q.attachWorker(worker)
        source = Source(n, failAt)
        d = q.call(lambda: source)
        runner.performAll()
        return q, runner, source, self.successResultOf(d)

    def test_itemsAtHand(self) -> None:
        """
        A Deferator over items at hand iterates them and is done.
        """
        dr = Deferator([1, 2])
        self.assertEqual([self.successResultOf(d) for d in dr], [1, 2])
        self.assertTrue(dr.done)
        self.successResultOf(dr.whenDone())

    def test_inlineCallbacks(self) -> None:
        """
        The C{for d in dr: x = yield d} loop gets every item in order.
        """
        _q, runner, source, dr = self.iterate(10)

        @inlineCallbacks
        def collect() -> Any:
            items = []
            for d in dr:
                items.append((yield d))
            return items

        result = collect()
        runner.performAll()
        self.assertEqual(self.successResultOf(result), list(range(10)))
        self.assertTrue(source.closed or source.pulled == 10)

    def test_asyncFor(self) -> None:
        """
        C{async for} gets every item in order.
        """
        _q, runner, _source, dr = self.iterate(10)

        async def collect() -> list[int]:
            return [x async for x in dr]

        result = Deferred.fromCoroutine(collect())
        runner.performAll()
        self.assertEqual(self.successResultOf(result), list(range(10)))

    def test_asyncForBufferedItemsAtOnce(self) -> None:
        """
        Buffered items reach an C{async for} at once: the loop over items
        at hand finishes in one step of its coroutine, without waiting for
        anything (an item not yet fetched still waits for its batch).
        """
        dr = Deferator([1, 2, 3])

        async def collect() -> list[int]:
            return [x async for x in dr]

        coro = collect()
        with self.assertRaises(StopIteration) as caught:
            coro.send(None)
        self.assertEqual(caught.exception.value, [1, 2, 3])

        batches, fetch = heldFetches()
        waiting: Deferator[int] = Deferator([0], fetch)

        async def collectWaiting() -> list[int]:
            return [x async for x in waiting]

        result = Deferred.fromCoroutine(collectWaiting())
        self.assertNoResult(result)
        while batches:
            batches.pop(0).callback(([1], True))
        self.assertEqual(self.successResultOf(result), [0, 1])

    def test_asyncForLeftEarly(self) -> None:
        """
        An C{async for} left early takes no item it did not hand out: the
        next loop goes on from there, each item finished once.
        """
        finished: list[int] = []

        def finish(x: int) -> int:
            finished.append(x)
            return x * 10

        dr = Deferator(list(range(10)), finish=finish)

        async def collect(until: int | None) -> list[int]:
            got = []
            async for x in dr:
                got.append(x)
                if x == until:
                    break
            return got

        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(collect(30))), [0, 10, 20, 30]
        )
        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(collect(None))),
            [40, 50, 60, 70, 80, 90],
        )
        self.assertEqual(finished, list(range(10)))

    def test_asyncForBodyChangesBuffer(self) -> None:
        """
        What the body of an C{async for} does to the Deferator counts from
        the next item on: items taken and put back finished are not
        finished again, and a stop ends the loop.
        """
        finished: list[int] = []

        def finish(x: int) -> int:
            finished.append(x)
            return x * 10

        _batches, fetch = heldFetches()
        dr = Deferator(list(range(10)), fetch, finish=finish)

        async def collect() -> list[int]:
            got = []
            async for x in dr:
                got.append(x)
                if x == 20:
                    dr.putBack(dr.takeBuffered())
                elif x == 50:
                    dr.stop()
            return got

        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(collect())),
            [0, 10, 20, 30, 40, 50],
        )
        self.assertEqual(finished, list(range(10)))
        self.assertTrue(dr.done)

    def test_asyncForBodyTakesItems(self) -> None:
        """
        Items the body of an C{async for} takes itself, with C{__anext__},
        C{next} or a loop of its own, are not taken again, nor skipped.
        """

        def collect(body: Callable[[Deferator[int], int], Any]) -> list[int]:
            finished: list[int] = []

            def finish(x: int) -> int:
                finished.append(x)
                return x * 10

            dr = Deferator(list(range(20)), finish=finish)

            async def loop() -> list[int]:
                got = []
                async for x in dr:
                    got.append(x)
                    got.extend(await body(dr, x))
                return got

            got = self.successResultOf(Deferred.fromCoroutine(loop()))
            self.assertEqual(finished, list(range(20)))
            return got

        async def anextTakes(dr: Deferator[int], x: int) -> list[int]:
            if x in (0, 100):
                return [await dr.__anext__() for _ in range(3)]
            return []

        async def othersTake(dr: Deferator[int], x: int) -> list[int]:
            taken = []
            if x == 10:
                taken.append(self.successResultOf(next(dr)))
            elif x == 30:
                async for y in dr:
                    taken.append(y)
                    if y == 60:
                        break
            return taken

        everything = [x * 10 for x in range(20)]
        self.assertEqual(collect(anextTakes), everything)
        self.assertEqual(collect(othersTake), everything)

    def test_emptyBatchWhileAwaiting(self) -> None:
        """
        A fetch that brings no items but says more follow (a source that
        answers two requests at once may) does not end the iteration: the
        awaited item comes from the next fetch.
        """
        batches, fetch = heldFetches()
        dr: Deferator[int] = Deferator([0], fetch)

        async def collect() -> list[int]:
            return [x async for x in dr]

        result = Deferred.fromCoroutine(collect())
        batches.pop(0).callback(([], False))
        batches.pop(0).callback(([1, 2], False))
        while batches:
            batches.pop(0).callback(([], True))
        self.assertEqual(self.successResultOf(result), [0, 1, 2])

    def test_batchesNotPerItem(self) -> None:
        """
        Items are fetched in batches: 100 items in batches of 25 need four
        thread hops (five with the fetch already on its way when the last
        batch lands), not a hundred.
        """
        q = TaskQueue()
        worker, runner = memoryWorker(batchSize=25)
        q.attachWorker(worker)
        d = q.call(lambda: iter(range(100)))
        hops = runner.performAll()
        dr = self.successResultOf(d)
        for itemD in dr:
            hops += runner.performAll()
            self.successResultOf(itemD)
        self.assertIn(hops, (4, 5))

    def test_prefetchBounded(self) -> None:
        """
        Without consumption, two batches are fetched ahead (both at once, so
        that the worker always has the next one to read), and no more.
        """
        _q, runner, source, _dr = self.iterate(100, batchSize=10)
        self.assertEqual(runner.performAll(), 0)
        # First batch + its look-ahead item, then two prefetched batches.
        self.assertEqual(source.pulled, 31)

    def test_fetchOnceABatchIsUsed(self) -> None:
        """
        The next fetch starts as soon as a batch's worth has been used and
        the bound allows it (not only once the buffer is nearly empty), so
        the worker reads it while the rest is used; still no more than
        three batches held or on their way.
        """
        _q, runner, source, dr = self.iterate(100, batchSize=10)
        self.assertEqual(source.pulled, 31)
        for _ in range(9):
            self.successResultOf(next(dr))
        runner.performAll()
        self.assertEqual(source.pulled, 31)
        self.successResultOf(next(dr))
        runner.performAll()
        self.assertEqual(source.pulled, 41)
        for _ in range(9):
            self.successResultOf(next(dr))
        runner.performAll()
        self.assertEqual(source.pulled, 41)

    def test_fetchOnceABatchIsUsedAsyncFor(self) -> None:
        """
        The same with C{async for}, whose items come at once while plenty
        is buffered.
        """
        _q, runner, source, dr = self.iterate(100, batchSize=10)
        got: list[int] = []

        async def take(n: int) -> None:
            for _ in range(n):
                got.append(await dr.__anext__())

        self.successResultOf(Deferred.fromCoroutine(take(9)))
        runner.performAll()
        self.assertEqual(source.pulled, 31)
        self.successResultOf(Deferred.fromCoroutine(take(1)))
        runner.performAll()
        self.assertEqual(source.pulled, 41)
        self.assertEqual(got, list(range(10)))

    def test_failureMidIteration(self) -> None:
        """
        The items before a failure come first, then the failure once, then
        the iteration ends.
        """
        _q, runner, _source, dr = self.iterate(10, failAt=5)

        @inlineCallbacks
        def collect() -> Any:
            items: list[Any] = []
            for d in dr:
                try:
                    items.append((yield d))
                except ValueError as e:
                    items.append(str(e))
            return items

        result = collect()
        runner.performAll()
        self.assertEqual(self.successResultOf(result), [0, 1, 2, 3, 4, "failed at 5"])

    def test_failureAsyncFor(self) -> None:
        """
        C{async for} raises the source's exception after the items before it.
        """
        _q, runner, _source, dr = self.iterate(10, failAt=4, batchSize=2)
        got: list[int] = []

        async def collect() -> None:
            async for x in dr:
                got.append(x)

        result = Deferred.fromCoroutine(collect())
        runner.performAll()
        self.failureResultOf(result, ValueError)
        self.assertEqual(got, [0, 1, 2, 3])

    def test_stopReleasesHoldingWorker(self) -> None:
        """
        A worker holding an iteration takes no other call until the
        Deferator is stopped; stopping closes the source in the worker.
        """
        q, runner, source, dr = self.iterate(100, holdIterations=True)
        other = q.call(lambda: "other")
        runner.performAll()
        self.assertNoResult(other)
        self.successResultOf(next(dr))
        dr.stop()
        self.assertTrue(dr.done)
        runner.performAll()
        self.assertTrue(source.closed)
        self.assertEqual(self.successResultOf(other), "other")
        self.assertRaises(StopIteration, next, dr)

    def test_exhaustionFreesHoldingWorker(self) -> None:
        """
        A held worker is free again once the iteration is exhausted.
        """
        q, runner, _source, dr = self.iterate(5, batchSize=2, holdIterations=True)
        other = q.call(lambda: "other")
        items = []
        for d in dr:
            runner.performAll()
            items.append(self.successResultOf(d))
        runner.performAll()
        self.assertEqual(items, [0, 1, 2, 3, 4])
        self.assertEqual(self.successResultOf(other), "other")

    def test_droppedDeferatorReleasesWorker(self) -> None:
        """
        A Deferator dropped unfinished releases its held worker.
        """
        q, runner, source, dr = self.iterate(100, holdIterations=True)
        other = q.call(lambda: "other")
        runner.performAll()
        self.assertNoResult(other)
        del dr
        gc.collect()
        runner.performAll()
        self.assertTrue(source.closed)
        self.assertEqual(self.successResultOf(other), "other")

    def test_interleavingWithoutHold(self) -> None:
        """
        Without holdIterations, other calls run between batches.
        """
        q, runner, _source, dr = self.iterate(100, batchSize=10)
        other = q.call(lambda: "other")
        runner.performAll()
        self.assertEqual(self.successResultOf(other), "other")
        self.assertFalse(dr.done)

    def test_stopWhileAwaiting(self) -> None:
        """
        Stopping while an item is awaited fails that item with
        L{IterationStopped}; C{async for} just ends.
        """
        _q, runner, _source, dr = self.iterate(100, batchSize=1)
        runner.performAll()
        # The first item and two fetched ahead are at hand.
        for _ in range(3):
            self.successResultOf(next(dr))
        d = next(dr)
        self.assertNoResult(d)
        dr.stop()
        runner.performAll()
        self.failureResultOf(d, IterationStopped)

    def test_pauseStopsPrefetch(self) -> None:
        """
        A paused Deferator fetches nothing more until resumed.
        """
        _q, runner, source, dr = self.iterate(100, batchSize=10)
        runner.performAll()
        pulled = source.pulled
        dr.pause()
        for _ in range(20):
            self.successResultOf(next(dr))
        self.assertEqual(runner.performAll(), 0)
        self.assertEqual(source.pulled, pulled)
        dr.resume()
        # Ten items left: two batches may be fetched (three held at most).
        self.assertEqual(runner.performAll(), 2)
        self.assertGreater(source.pulled, pulled)

    def test_whenDone(self) -> None:
        """
        L{Deferator.whenDone} fires once the source is exhausted, even while
        items are still buffered.
        """
        _q, _runner, _source, dr = self.iterate(5, batchSize=10)
        self.successResultOf(dr.whenDone())
        self.assertFalse(dr.done)
