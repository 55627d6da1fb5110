"""
The original AsynQueue's API, kept for code written for it (issue 20):
its module paths (C{asynqueue.iteration}, C{asynqueue.util},
C{asynqueue.info.showResult}, C{asynqueue.null.NullQueue},
C{asynqueue.base}) warn and give the real objects, names that are gone
raise an error naming the replacement; C{ListConsumer(**kw)} with
C{processItem} and a Deferred-returning call; C{registerConsumer};
C{acquireAndRelease}; C{len(queue)}. Deterministic: a L{Clock}, fake and
single-stepped workers.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

import asynqueue
from asynqueue import (
    AsyncWorker,
    Deferator,
    DeferredLock,
    IterationProducer,
    ListConsumer,
    TaskQueue,
)
from asynqueue.moved import Gone

from .helpers import FakeWorker


class MovedModuleTests(SynchronousTestCase):
    """
    The original's module paths give the real objects, with a
    C{DeprecationWarning} naming the new spelling.
    """

    def assertMoved(self, module: str, name: str, new: str) -> None:
        mod = importlib.import_module(module)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(mod, name)
        self.assertIs(value, getattr(asynqueue, name))
        [warning] = caught
        self.assertIs(warning.category, DeprecationWarning)
        self.assertIn(f"{module}.{name}", str(warning.message))
        self.assertIn(new, str(warning.message))

    def test_iteration(self) -> None:
        """
        C{asynqueue.iteration}'s classes are asynqueue's.
        """
        for name in (
            "Deferator",
            "Delay",
            "IterationProducer",
            "ListConsumer",
            "Prefetcherator",
            "iteratorToProducer",
        ):
            self.assertMoved("asynqueue.iteration", name, f"asynqueue.{name}")

    def test_util(self) -> None:
        """
        C{asynqueue.util.DeferredTracker} and C{DeferredLock}.
        """
        self.assertMoved("asynqueue.util", "DeferredLock", "asynqueue.DeferredLock")
        self.assertMoved(
            "asynqueue.util", "DeferredTracker", "asynqueue.DeferredTracker"
        )

    def test_base(self) -> None:
        """
        C{asynqueue.base.TaskQueue}.
        """
        self.assertMoved("asynqueue.base", "TaskQueue", "asynqueue.TaskQueue")

    def test_fromImportWarnsAtTheImport(self) -> None:
        """
        C{from asynqueue.util import DeferredLock} warns, pointing at the
        importing line.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from asynqueue.util import DeferredLock as Lock
        self.assertIs(Lock, DeferredLock)
        [warning] = caught
        self.assertEqual(warning.filename, __file__)

    def test_gone(self) -> None:
        """
        A name that did not come back raises L{Gone} (an ImportError),
        saying what to use; C{from ... import} shows that message.
        """
        with self.assertRaises(ImportError) as cm:
            from asynqueue.util import killProcess  # noqa: F401
        self.assertIsInstance(cm.exception, Gone)
        self.assertIn("asynqueue.util.killProcess is gone", str(cm.exception))
        self.assertIn("shutdown()", str(cm.exception))
        util = importlib.import_module("asynqueue.util")
        with self.assertRaises(Gone) as cm2:
            util.o2p  # noqa: B018
        self.assertIn("pickle.dumps", str(cm2.exception))
        for module, name in (
            ("asynqueue.iteration", "isIterator"),
            ("asynqueue.base", "Priority"),
            ("asynqueue.info", "whichThread"),
            ("asynqueue.threads", "deferToThread"),
            ("asynqueue.threads", "Consumerator"),
        ):
            with self.assertRaises(Gone):
                getattr(importlib.import_module(module), name)

    def test_unknownName(self) -> None:
        """
        Any other name is a plain AttributeError (so C{hasattr} works).
        """
        self.assertFalse(hasattr(importlib.import_module("asynqueue.util"), "nope"))


class NullQueueTests(SynchronousTestCase):
    """
    C{asynqueue.null.NullQueue}: calls run in the reactor thread, one at a
    time.
    """

    def test_runsCalls(self) -> None:
        """
        A call runs at once (no thread), a Deferred-returning one holds the
        queue until it fires, and the constructor warns.
        """
        from asynqueue.null import NullQueue

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q = NullQueue(clock=Clock())
        self.assertIn("AsyncWorker", str(caught[0].message))
        self.assertEqual(len(q), 1)
        self.assertIsInstance(q.workers[0], AsyncWorker)
        self.assertEqual(self.successResultOf(q.call(lambda: 7)), 7)
        held: Deferred[str] = Deferred()
        first = q.call(lambda: held)
        second = q.call(lambda: "second")
        self.assertNoResult(second)
        held.callback("first")
        self.assertEqual(self.successResultOf(first), "first")
        self.assertEqual(self.successResultOf(second), "second")
        self.successResultOf(q.shutdown())


class ShowResultTests(SynchronousTestCase):
    """
    C{asynqueue.info.showResult} logs each call and its result.
    """

    def test_logs(self) -> None:
        """
        A plain result is logged at once; a Deferred's when it fires, and
        passed on unchanged.
        """
        from asynqueue.info import showResult

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            class Thing:
                @showResult
                def add(self, x: int, y: int) -> int:
                    return x + y

                @showResult
                def later(self, d: Deferred[str]) -> Deferred[str]:
                    return d

        self.assertEqual(len(caught), 2)
        thing = Thing()
        d: Deferred[str] = Deferred()
        with capturedLogs() as events:
            self.assertEqual(thing.add(2, 3), 5)
            result = thing.later(d)
            self.assertEqual(len(events), 1)
            d.callback("done")
        self.assertEqual(self.successResultOf(result), "done")
        texts = [e["log_format"].format(**e) for e in events]
        self.assertIn("Thing.add(", texts[0])
        self.assertTrue(texts[0].endswith("2, 3) -> 5"), texts[0])
        self.assertTrue(texts[1].endswith("-> 'done'"), texts[1])


class LockTests(SynchronousTestCase):
    """
    L{DeferredLock.acquireAndRelease}.
    """

    def test_waitsItsTurn(self) -> None:
        """
        It fires once the holder lets go (and a VIP goes first), leaving the
        lock to the next waiter or unlocked.
        """
        lock = DeferredLock()
        self.successResultOf(lock.acquire())
        plain = lock.acquireAndRelease()
        vip = lock.acquire(vip=True)
        self.assertNoResult(plain)
        lock.release()
        self.successResultOf(vip)
        self.assertNoResult(plain)
        lock.release()
        self.assertIsNone(self.successResultOf(plain))
        self.assertFalse(lock.locked)
        self.successResultOf(lock.acquire())
        vipFirst = lock.acquireAndRelease(vip=True)
        other = lock.acquire()
        lock.release()
        self.assertIsNone(self.successResultOf(vipFirst))
        self.successResultOf(other)
        self.assertTrue(lock.locked)

    def test_unlocked(self) -> None:
        """
        On a free lock it fires at once.
        """
        lock = DeferredLock()
        self.assertIsNone(self.successResultOf(lock.acquireAndRelease()))
        self.assertFalse(lock.locked)


class OriginalKeywordTests(SynchronousTestCase):
    """
    The original C{TaskQueue}'s keywords C{warn}, C{spew} and
    C{returnFailure} are accepted, each with a C{DeprecationWarning} naming
    what to do instead: C{warn=True} logs every failed call, C{spew=True}
    every call with its result, as the original did; a failed call fails
    its Deferred either way (the original's C{returnFailure}, now always).
    """

    def queue(self, **kw: Any) -> tuple[TaskQueue, list[warnings.WarningMessage]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q = TaskQueue(clock=Clock(), **kw)
        q.attachWorker(AsyncWorker())
        return q, caught

    def outcomes(self, q: TaskQueue) -> list[str]:
        """
        Run a call that succeeds and one that fails; what was logged.
        """

        def fails() -> None:
            raise ValueError("nope")

        with capturedLogs() as events:
            self.assertEqual(self.successResultOf(q.call(lambda: 7)), 7)
            self.failureResultOf(q.call(fails), ValueError)
        self.flushLoggedErrors(ValueError)
        return [e["log_format"].format(**e) for e in events]

    def assertDeprecated(
        self, caught: list[warnings.WarningMessage], *names: str
    ) -> None:
        self.assertEqual(
            [(w.category, w.filename) for w in caught],
            [(DeprecationWarning, __file__)] * len(names),
        )
        for warning, name in zip(caught, names, strict=True):
            self.assertIn(f"TaskQueue({name}=...) is deprecated", str(warning.message))

    def test_warn(self) -> None:
        """
        C{warn=True} logs each failed call (naming it), and only those.
        """
        q, caught = self.queue(warn=True)
        self.assertDeprecated(caught, "warn")
        [logged] = self.outcomes(q)
        self.assertIn("fails", logged)
        self.assertIn("failed", logged)

    def test_spew(self) -> None:
        """
        C{spew=True} logs every call, with its result.
        """
        q, caught = self.queue(spew=True)
        self.assertDeprecated(caught, "spew")
        done, failed = self.outcomes(q)
        self.assertTrue(done.endswith("-> 7"), done)
        self.assertIn("failed", failed)

    def test_nothingLogged(self) -> None:
        """
        C{warn=False}, C{spew=False}, C{returnFailure} (either value) log
        nothing: a failed call fails its Deferred, as always.
        """
        q, caught = self.queue(warn=False, spew=False, returnFailure=True)
        self.assertDeprecated(caught, "returnFailure", "warn", "spew")
        self.assertEqual(self.outcomes(q), [])
        self.assertNotIn("submit", vars(q))

    def test_callReturnFailure(self) -> None:
        """
        C{call(..., returnFailure=...)} is the queue's keyword, never
        passed to the function.
        """
        q, _ = self.queue()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d = q.call(lambda **kw: kw, returnFailure=True, x=1)
        self.assertEqual(self.successResultOf(d), {"x": 1})
        [warning] = caught
        self.assertIs(warning.category, DeprecationWarning)
        self.assertEqual(warning.filename, __file__)
        self.assertIn("returnFailure", str(warning.message))

    def test_notABool(self) -> None:
        """
        Anything but a bool is a TypeError naming the keyword.
        """
        with self.assertRaises(TypeError) as cm:
            TaskQueue(clock=Clock(), warn="yes")  # type: ignore[arg-type]
        self.assertIn("warn='yes'", str(cm.exception))


class GoneMethodTests(SynchronousTestCase):
    """
    The original's methods that are gone raise L{Gone} naming what to use
    instead; any other missing attribute is a plain AttributeError.
    """

    def test_lock(self) -> None:
        """
        C{DeferredLock.addStopper} and C{stop}: C{lock.run}.
        """
        lock = DeferredLock()
        for name in ("addStopper", "stop"):
            with self.assertRaises(Gone) as cm:
                getattr(lock, name)
            self.assertIn(f"DeferredLock.{name}() is gone", str(cm.exception))
            self.assertIn("lock.run(f", str(cm.exception))
        self.assertFalse(hasattr(lock, "nope"))

    def test_producer(self) -> None:
        """
        C{IterationProducer.deferUntilDone}: C{run()}'s Deferred.
        """
        producer = IterationProducer(Deferator([1]), clock=Clock())
        with self.assertRaises(Gone) as cm:
            producer.deferUntilDone()  # type: ignore[attr-defined]
        self.assertIn("run() returns that Deferred", str(cm.exception))
        with self.assertRaises(AttributeError) as cm2:
            producer.nope  # type: ignore[attr-defined]  # noqa: B018
        self.assertIn("'IterationProducer' object has no attribute", str(cm2.exception))


class LengthTests(SynchronousTestCase):
    """
    C{len(queue)} is its number of workers, as in the original.
    """

    def test_len(self) -> None:
        """
        Workers attached count, detached ones stop counting; a queue with
        none is still true.
        """
        q = TaskQueue(clock=Clock())
        self.assertEqual(len(q), 0)
        self.assertTrue(q)
        a = q.attachWorker(FakeWorker())
        q.attachWorker(FakeWorker())
        self.assertEqual(len(q), 2)
        self.successResultOf(q.detachWorker(a))
        self.assertEqual(len(q), 1)


class ProducerTests(SynchronousTestCase):
    """
    L{IterationProducer.registerConsumer}: the original's two-step start.
    """

    def test_registerThenRun(self) -> None:
        """
        A producer made without a consumer takes one later, then runs.
        """
        producer = IterationProducer(Deferator([1, 2, 3]), clock=Clock())
        consumer = ListConsumer()
        producer.registerConsumer(consumer)
        self.assertIs(self.successResultOf(producer.run()), consumer)
        self.assertEqual(consumer.items, [1, 2, 3])

    def test_noConsumer(self) -> None:
        """
        Running without a consumer, or registering something that is not
        one, or registering once running, is refused with a message.
        """
        producer = IterationProducer(Deferator([1]), clock=Clock())
        with self.assertRaises(RuntimeError) as cm:
            producer.run()
        self.assertIn("registerConsumer", str(cm.exception))
        with self.assertRaises(TypeError):
            producer.registerConsumer(object())
        producer.registerConsumer(ListConsumer())
        producer.run()
        with self.assertRaises(RuntimeError):
            producer.registerConsumer(ListConsumer())


class Doubler(ListConsumer):
    """
    Processes each item later, when the test fires its Deferred.
    """

    factor: int

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.waiting: list[tuple[Any, Deferred[Any]]] = []

    def processItem(self, item: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append((item, d))
        return d.addCallback(lambda x: x * self.factor)


class ListConsumerTests(SynchronousTestCase):
    """
    The original's L{ListConsumer}: keywords become attributes, items go
    through L{ListConsumer.processItem}, and calling it gives a Deferred of
    the list.
    """

    def produce(self, consumer: ListConsumer, items: list[Any]) -> Deferred[Any]:
        self.clock = Clock()
        return IterationProducer(Deferator(items), consumer, clock=self.clock).run()

    def test_plain(self) -> None:
        """
        Without a processItem of its own, the items are kept as they are,
        and the call fires once the producer unregistered.
        """
        consumer = ListConsumer()
        result = consumer()
        self.assertNoResult(result)
        self.successResultOf(self.produce(consumer, [1, 2]))
        self.assertEqual(self.successResultOf(result), [1, 2])
        self.assertEqual(self.successResultOf(consumer()), [1, 2])

    def test_keywords(self) -> None:
        """
        Keywords are set as attributes; one naming an attribute of the
        consumer is refused.
        """
        self.assertEqual(ListConsumer(factor=3, label="x").factor, 3)  # type: ignore[attr-defined]
        with self.assertRaises(TypeError) as cm:
            ListConsumer(items=[])
        self.assertIn("'items'", str(cm.exception))
        with self.assertRaises(TypeError):
            ListConsumer(write=None)

    def test_deferredProcessing(self) -> None:
        """
        A Deferred from processItem pauses the producer until it fires;
        the list keeps the order written.
        """
        consumer = Doubler(factor=10)
        done = self.produce(consumer, [1, 2, 3])
        result = consumer()
        [(item, d)] = consumer.waiting
        self.assertEqual(item, 1)
        self.assertTrue(consumer.producer.paused)
        d.callback(item)
        self.clock.advance(0)
        self.assertEqual(len(consumer.waiting), 2)
        item, d = consumer.waiting[1]
        d.callback(item)
        self.clock.advance(0)
        item, d = consumer.waiting[2]
        d.callback(item)
        self.assertNoResult(result)
        self.clock.advance(0)
        self.successResultOf(done)
        self.assertEqual(self.successResultOf(result), [10, 20, 30])

    def test_deferredFailure(self) -> None:
        """
        A failing processItem Deferred stops the producer and fails the
        consumer's Deferred with that error.
        """
        consumer = Doubler(factor=1)
        done = self.produce(consumer, [1, 2, 3])
        result = consumer()
        consumer.waiting[0][1].errback(ValueError("bad item"))
        self.successResultOf(done)
        self.failureResultOf(result, ValueError)
        self.failureResultOf(consumer(), ValueError)
        self.assertEqual(len(consumer.waiting), 1)

    def test_raises(self) -> None:
        """
        A processItem that raises fails the production and the consumer's
        Deferred.
        """

        class Broken(ListConsumer):
            def processItem(self, item: Any) -> Any:
                raise KeyError(item)

        consumer = Broken()
        self.failureResultOf(self.produce(consumer, ["a"]), KeyError)
        self.failureResultOf(consumer(), KeyError)

    def test_syncDeferred(self) -> None:
        """
        An already-fired Deferred from processItem doesn't pause anything.
        """

        class Now(ListConsumer):
            def processItem(self, item: Any) -> Deferred[Any]:
                return succeed(-item)

        consumer = Now()
        self.successResultOf(self.produce(consumer, [1, 2]))
        self.assertEqual(self.successResultOf(consumer()), [-1, -2])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_deferToDelay() -> None:
    """
    C{asynqueue.iteration.deferToDelay(s)} fires after C{s} seconds.
    """
    from asynqueue.iteration import deferToDelay

    assert await deferToDelay(0.01) is None
