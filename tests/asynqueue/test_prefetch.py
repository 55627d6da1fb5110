"""
Unit tests for L{asynqueue.prefetch.Prefetcherator}.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import Deferator, IterationStopped, Prefetcherator


class SlowSource:
    """
    A callable returning a Deferred per call, fired by the test; it checks
    that it is never called while an earlier call is still pending.
    """

    def __init__(self, n: int, failAt: int | None = None) -> None:
        self.n = n
        self.failAt = failAt
        self.pending: list[Deferred[int]] = []
        self.calls = 0
        self.args: list[Any] = []

    def __call__(self, *args: Any) -> Deferred[int]:
        assert not [d for d in self.pending if not d.called], "fetched two at once"
        self.args.append(args)
        if self.calls >= self.n:
            raise StopIteration
        d: Deferred[int] = Deferred()
        self.pending.append(d)
        self.calls += 1
        return d

    def fireAll(self) -> None:
        """
        Fire pending calls until none is left (each firing may start one).
        """
        while [d for d in self.pending if not d.called]:
            i = next(i for i, d in enumerate(self.pending) if not d.called)
            if i == self.failAt:
                self.pending[i].errback(ValueError(f"failed at {i}"))
            else:
                self.pending[i].callback(i * 10)


class PrefetcheratorTests(SynchronousTestCase):
    """
    One value ahead, in order, one fetch at a time.
    """

    def test_isDeferator(self) -> None:
        """
        A Prefetcherator is a Deferator.
        """
        self.assertIsInstance(Prefetcherator(iter([])), Deferator)

    def test_iteratorOfValues(self) -> None:
        """
        Plain values and fired Deferreds iterate at once.
        """
        pf = Prefetcherator(iter([1, succeed(2), 3]))
        self.assertEqual([self.successResultOf(d) for d in pf], [1, 2, 3])

    def test_emptyIterator(self) -> None:
        """
        An empty source ends at once.
        """
        self.assertEqual(list(Prefetcherator(iter([]))), [])

    def test_callableWithArgs(self) -> None:
        """
        A callable is called with the given arguments for every value; the
        values come in order, and the loop ends truthfully.
        """
        source = SlowSource(5)
        pf: Prefetcherator[int] = Prefetcherator(source, "a", 1)

        @inlineCallbacks
        def collect() -> Any:
            items = []
            for d in pf:
                items.append((yield d))
            return items

        ready = pf.fetchMore()
        source.fireAll()
        self.successResultOf(ready)
        result = collect()
        source.fireAll()
        self.assertEqual(self.successResultOf(result), [0, 10, 20, 30, 40])
        self.assertEqual(set(source.args), {("a", 1)})

    def test_prefetchesAhead(self) -> None:
        """
        While the reader holds a value, the next ones are already fetched,
        but never the whole source.
        """
        fetched: list[int] = []

        def gen() -> Iterator[int]:
            for i in range(100):
                fetched.append(i)
                yield i

        pf = Prefetcherator(gen())
        self.assertEqual(self.successResultOf(next(pf)), 0)
        self.assertLessEqual(len(fetched), 3)
        self.assertEqual(self.successResultOf(next(pf)), 1)
        self.assertLessEqual(len(fetched), 4)

    def test_asyncFor(self) -> None:
        """
        C{async for} reads everything, waiting for pending Deferreds.
        """
        source = SlowSource(4)
        pf: Prefetcherator[int] = Prefetcherator(source)

        async def collect() -> list[int]:
            return [x async for x in pf]

        result = Deferred.fromCoroutine(collect())
        source.fireAll()
        self.assertEqual(self.successResultOf(result), [0, 10, 20, 30])

    def test_asyncForEmpty(self) -> None:
        """
        C{async for} over a source that turns out empty later just ends.
        """
        gate: Deferred[int] = Deferred()
        items = iter([gate])

        def source() -> Deferred[int]:
            return next(items)

        pf: Prefetcherator[int] = Prefetcherator(source)
        result = Deferred.fromCoroutine(_collect(pf))
        gate.errback(StopIteration())
        self.assertEqual(self.successResultOf(result), [])

    def test_failure(self) -> None:
        """
        A failure comes after the values before it, then the iteration ends.
        """
        source = SlowSource(10, failAt=3)
        pf: Prefetcherator[int] = Prefetcherator(source)
        result = Deferred.fromCoroutine(_collect(pf))
        source.fireAll()
        self.failureResultOf(result, ValueError)
        got: list[Any] = []

        @inlineCallbacks
        def collect() -> Any:
            for d in pf:
                got.append((yield d))

        self.successResultOf(collect())
        self.assertEqual(got, [])

    def test_failureOrder(self) -> None:
        """
        With C{for d in pf}, the values before a failure arrive first.
        """
        source = SlowSource(10, failAt=2)
        pf: Prefetcherator[int] = Prefetcherator(source)
        got: list[Any] = []

        @inlineCallbacks
        def collect() -> Any:
            for d in pf:
                try:
                    got.append((yield d))
                except ValueError as e:
                    got.append(str(e))

        result = collect()
        source.fireAll()
        self.successResultOf(result)
        self.assertEqual(got, [0, 10, "failed at 2"])

    def test_firstDeferredOfEmptySlowSource(self) -> None:
        """
        Without waiting for C{fetchMore}, a slow source that turns out empty
        fails the first Deferred with L{IterationStopped}.
        """
        source = SlowSource(0)
        self.assertRaises(StopIteration, next, Prefetcherator(source))
        gate: Deferred[int] = Deferred()
        pf: Prefetcherator[int] = Prefetcherator(iter([gate]))
        d = next(pf)
        gate.errback(StopIteration())
        self.failureResultOf(d, IterationStopped)

    def test_stopClosesIterator(self) -> None:
        """
        Stopping closes a generator source.
        """
        closed: list[bool] = []

        def gen() -> Iterator[int]:
            try:
                yield from range(100)
            finally:
                closed.append(True)

        pf = Prefetcherator(gen())
        self.successResultOf(next(pf))
        pf.stop()
        self.assertEqual(closed, [True])
        self.assertRaises(StopIteration, next, pf)

    def test_coroutines(self) -> None:
        """
        A callable may be a coroutine function.
        """
        values = iter(range(3))

        async def source() -> int:
            try:
                return next(values)
            except StopIteration:
                raise LookupError("done") from None

        pf: Prefetcherator[int] = Prefetcherator(source)
        got = []
        for d in pf:
            d.addCallbacks(got.append, lambda f: got.append(f.value))
        self.assertEqual(got[:3], [0, 1, 2])
        self.assertIsInstance(got[3], LookupError)

    def test_badSource(self) -> None:
        """
        A source that is neither iterator nor callable, or an iterator with
        arguments, is a TypeError.
        """
        self.assertRaises(TypeError, Prefetcherator, 42)
        self.assertRaises(TypeError, Prefetcherator, iter([]), 1)


async def _collect(pf: Prefetcherator[int]) -> list[int]:
    return [x async for x in pf]
