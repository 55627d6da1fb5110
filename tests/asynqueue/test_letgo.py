"""
Unit tests for L{ThreadWorker.letGo}: an iteration that holds its worker
reads the rest of its items into memory in the worker's thread, ends its
source there, frees the worker, and goes on from memory, in order.
Single-stepped: the thread is a L{MemoryJobRunner}.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from asynqueue import Deferator, TaskQueue, ThreadWorker
from asynqueue.workers import MemoryJobRunner


class HoldingWorker(ThreadWorker):
    """
    Records what L{ThreadWorker.holdChanged} tells it.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.holds: list[bool] = []

    def holdChanged(self, held: bool) -> None:
        self.holds.append(held)


class Source:
    """
    An iterator over C{range(n)} that records what was read and whether it
    ended (its C{finally} ran), and may fail after C{failAt} items.
    """

    def __init__(self, n: int, failAt: int | None = None) -> None:
        self.read: list[int] = []
        self.ended = False
        self.iterator = self._items(n, failAt)

    def _items(self, n: int, failAt: int | None) -> Iterator[int]:
        try:
            for i in range(n):
                if i == failAt:
                    raise ValueError(f"failed at {i}")
                self.read.append(i)
                yield i
        finally:
            self.ended = True


class LetGoTests(SynchronousTestCase):
    """
    L{ThreadWorker.letGo} with C{holdIterations}.
    """

    def setUp(self) -> None:
        self.runner = MemoryJobRunner()
        self.worker = HoldingWorker(
            runner=self.runner,
            callFromThread=lambda f, *a: f(*a),
            batchSize=2,
            holdIterations=True,
        )
        self.queue = TaskQueue()
        self.queue.attachWorker(self.worker)

    def iteration(self, source: Source) -> Deferator[int]:
        d = self.queue.call(lambda: source.iterator)
        self.runner.performAll()
        dr: Deferator[int] = self.successResultOf(d)
        return dr

    def drain(self, dr: Deferator[int]) -> list[Any]:
        # The rest of the items, with no job for the thread.
        got: list[Any] = []
        for itemD in dr:
            itemD.addCallbacks(got.append, lambda f: got.append(f.value))
        return got

    def test_restFromMemory(self) -> None:
        """
        Letting go with fetches on their way: the thread reads every item
        left and ends the source, the worker is freed and takes another
        task, and the iteration goes on from memory, every item in order.
        """
        source = Source(20)
        dr = self.iteration(source)
        first = [self.successResultOf(next(dr)) for _ in range(2)]
        self.assertTrue(self.worker.letGo())
        self.assertTrue(self.worker.lettingGo)
        self.assertEqual(self.worker.holds, [True])
        self.runner.performAll()
        self.assertTrue(source.ended)
        self.assertEqual(source.read, list(range(20)))
        self.assertEqual(self.worker.holds, [True, False])
        self.assertFalse(self.worker.lettingGo)
        other = self.queue.call(lambda: "other")
        self.runner.performAll()
        self.assertEqual(self.successResultOf(other), "other")
        self.assertEqual(first + self.drain(dr), list(range(20)))
        self.assertEqual(self.runner.performAll(), 0)

    def test_onlyWhileHeld(self) -> None:
        """
        C{False} when no iteration holds the worker, or it already lets go.
        """
        self.assertFalse(self.worker.letGo())
        dr = self.iteration(Source(20))
        self.assertTrue(self.worker.letGo())
        self.assertFalse(self.worker.letGo())
        self.runner.performAll()
        self.assertFalse(self.worker.letGo())
        self.assertEqual(self.drain(dr), list(range(20)))

    def test_fetchBeforeLanded(self) -> None:
        """
        An item asked for while the rest is being read comes once it has
        landed, after the items fetched before.
        """
        dr = self.iteration(Source(30))
        got = []
        self.worker.letGo()
        for _ in range(10):
            next(dr).addCallback(got.append)
        # Only what was fetched before: the rest waits.
        self.assertLess(len(got), 10)
        self.assertEqual(got, list(range(len(got))))
        self.runner.performAll()
        self.assertEqual(got + self.drain(dr), list(range(30)))

    def test_stopWhileLettingGo(self) -> None:
        """
        An iteration stopped before the thread read the rest is not read:
        its source is closed, and the worker is free.
        """
        source = Source(100)
        dr = self.iteration(source)
        self.worker.letGo()
        dr.stop()
        self.runner.performAll()
        self.assertTrue(source.ended)
        self.assertLess(len(source.read), 10)
        self.assertEqual(self.worker.holds, [True, False])
        self.assertIsNone(self.worker.task)

    def test_stopAfterLettingGo(self) -> None:
        """
        An iteration stopped once it has let go drops what it held.
        """
        dr = self.iteration(Source(100))
        self.worker.letGo()
        self.runner.performAll()
        dr.stop()
        self.assertEqual(self.drain(dr), [])
        self.assertTrue(dr.done)

    def test_errorAfterItems(self) -> None:
        """
        A source that fails while the rest is read: its items before the
        failure are handed out, then the error.
        """
        dr = self.iteration(Source(20, failAt=7))
        self.worker.letGo()
        self.runner.performAll()
        self.assertEqual(self.worker.holds, [True, False])
        got = self.drain(dr)
        self.assertEqual(got[:-1], list(range(7)))
        self.assertIsInstance(got[-1], ValueError)

    def test_pausedLetsGo(self) -> None:
        """
        A paused iteration fetches nothing more by itself; letting go reads
        the rest all the same, and resuming hands it out.
        """
        source = Source(50)
        dr = self.iteration(source)
        dr.pause()
        self.runner.performAll()
        readWhilePaused = len(source.read)
        self.runner.performAll()
        self.assertEqual(len(source.read), readWhilePaused)
        self.worker.letGo()
        self.runner.performAll()
        self.assertEqual(len(source.read), 50)
        dr.resume()
        self.assertEqual(self.drain(dr), list(range(50)))


class InMemory:
    """
    An iterator that says its items are in memory already.
    """

    inMemory = True

    def __init__(self, n: int) -> None:
        self._items = iter(range(n))

    def __iter__(self) -> InMemory:
        return self

    def __next__(self) -> int:
        return next(self._items)


class InMemoryTests(SynchronousTestCase):
    """
    An iterator with L{IN_MEMORY<asynqueue.deferator.IN_MEMORY>} true does
    not hold its worker, even with C{holdIterations}.
    """

    def test_notHeld(self) -> None:
        """
        The worker is free at once, and the items come without a job for
        the thread.
        """
        runner = MemoryJobRunner()
        worker = HoldingWorker(
            runner=runner,
            callFromThread=lambda f, *a: f(*a),
            batchSize=2,
            holdIterations=True,
        )
        queue = TaskQueue()
        queue.attachWorker(worker)
        d = queue.call(lambda: InMemory(20))
        runner.performAll()
        dr: Deferator[int] = self.successResultOf(d)
        self.assertEqual(worker.holds, [])
        self.assertIsNone(worker.task)
        self.assertFalse(worker.letGo())
        got = [self.successResultOf(itemD) for itemD in dr]
        self.assertEqual(got, list(range(20)))
        self.assertEqual(runner.performAll(), 0)
