"""
Unit tests for L{asynqueue.process}: L{ProcessWorker} and L{ProcessQueue}
against a fake reactor whose "child process" is the real
L{asynqueue._child.ChildServer}, run in-process and stepped by the test.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from asynqueue import (
    Deferator,
    IWorker,
    ListConsumer,
    ProcessQueue,
    ProcessWorker,
    RemoteTaskError,
    TaskTimeout,
    WorkerError,
)
from asynqueue._child import FRAME, ChildServer, encode, failureReply
from asynqueue.process import pickleCall, rebuildFailure

from . import processtasks as pt


class FakeChild:
    """
    The transport of a fake child process: what the parent writes is handed
    to a L{ChildServer} when the test calls L{flush}.
    """

    def __init__(self, reactor: FakeReactor, protocol: Any) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.pid = 1000 + len(reactor.children)
        self.server = ChildServer()
        self.inbox = bytearray()
        self.signals: list[str] = []
        self.ended = False
        self.handled: list[str] = []

    def write(self, data: bytes) -> None:
        assert not self.ended
        self.inbox += data

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)

    def flush(self) -> None:
        """
        Let the child handle everything it was sent, and end if it quit or
        was killed.
        """
        if self.ended:
            return
        if self.signals:
            self.end(ProcessTerminated(signal=9))
            return
        while len(self.inbox) >= FRAME.size:
            (n,) = FRAME.unpack_from(self.inbox)
            message = pickle.loads(bytes(self.inbox[FRAME.size : FRAME.size + n]))
            del self.inbox[: FRAME.size + n]
            self.handled.append(message[0])
            replies = b"".join(encode(r) for r in self.server.handle(message))
            if replies:
                # Split in two, as pipes do, to exercise the framing.
                half = len(replies) // 2
                self.protocol.outReceived(replies[:half])
                self.protocol.outReceived(replies[half:])
            if message[0] == "quit":
                self.end(ProcessDone(0))
                return

    def end(self, reason: Exception) -> None:
        self.ended = True
        self.protocol.processEnded(Failure(reason))


class FakeReactor(Clock):
    """
    Spawns L{FakeChild}ren; also a clock, and calls "from threads" at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.children: list[FakeChild] = []

    def spawnProcess(
        self, protocol: Any, executable: str, args: list[str], env: Any = None
    ) -> FakeChild:
        assert args[1:] == ["-P", "-m", "asynqueue._child"]
        child = FakeChild(self, protocol)
        self.children.append(child)
        protocol.makeConnection(child)
        return child

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def flush(self) -> None:
        for child in self.children:
            child.flush()


class PickleCallTests(SynchronousTestCase):
    """
    Calls are checked for picklability with errors naming the callable.
    """

    def test_ok(self) -> None:
        """
        A module-level function and its arguments pickle.
        """
        f, args, kw = pickle.loads(pickleCall(pt.add, (1,), {"y": 2}))
        self.assertEqual(f(*args, **kw), 3)

    def test_lambda(self) -> None:
        """
        A lambda can't be pickled: a TypeError naming it.
        """
        e = self.assertRaises(TypeError, pickleCall, lambda: 1, (), {})
        self.assertIn("<lambda>", str(e))
        self.assertIn("pickled", str(e))

    def test_arguments(self) -> None:
        """
        Unpicklable arguments: a TypeError naming the callable.
        """
        e = self.assertRaises(TypeError, pickleCall, pt.add, (lambda: 1,), {})
        self.assertIn("arguments of tests.asynqueue.processtasks.add", str(e))

    def test_main(self) -> None:
        """
        A function of C{__main__} is refused: the child can't import it.
        """

        def f() -> None:
            pass

        f.__module__ = "__main__"
        e = self.assertRaises(TypeError, pickleCall, f, (), {})
        self.assertIn("__main__", str(e))


class RebuildFailureTests(SynchronousTestCase):
    """
    Exceptions from the child come back with their type where possible.
    """

    def reply(self, e: BaseException) -> Failure:
        try:
            raise e
        except BaseException as raised:
            message = failureReply(1, raised)
        return rebuildFailure(*message[2:])

    def test_ownType(self) -> None:
        """
        An exception that pickles comes back as itself, with the remote
        traceback text attached.
        """
        failure = self.reply(pt.CustomError("bad"))
        self.assertTrue(failure.check(pt.CustomError))
        self.assertIn("Traceback", failure.value.remoteTraceback)
        self.assertIn("CustomError: bad", failure.value.remoteTraceback)

    def test_remoteTaskError(self) -> None:
        """
        One that can't be rebuilt is a L{RemoteTaskError} naming its type.
        """
        failure = self.reply(pt.Unpicklable(1, 2))
        self.assertTrue(failure.check(RemoteTaskError))
        error = failure.value
        assert isinstance(error, RemoteTaskError)
        self.assertEqual(error.remoteType, "tests.asynqueue.processtasks.Unpicklable")
        self.assertIn("Traceback", error.remoteTraceback)


class ProcessWorkerTests(SynchronousTestCase):
    """
    The worker against a fake, in-process child.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.q = ProcessQueue(1, reactor=self.reactor)
        self.worker = self.q.workers[0]

    def test_interface(self) -> None:
        """
        L{ProcessWorker} provides L{IWorker}.
        """
        verifyObject(IWorker, self.worker)
        verifyObject(IWorker, ProcessWorker())

    def test_lazyStart(self) -> None:
        """
        No process is started until there is work.
        """
        self.assertEqual(self.reactor.children, [])
        self.assertIsNone(self.worker.pid)
        d = self.q.call(pt.add, 1, y=2)
        self.assertEqual(len(self.reactor.children), 1)
        self.assertEqual(self.worker.pid, 1000)
        self.assertNoResult(d)
        self.reactor.flush()
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(self.reactor.children[0].handled, ["init", "call"])

    def test_exception(self) -> None:
        """
        A call that raises fails with its own exception type.
        """
        d = self.q.call(pt.raiseCustom, "oops")
        self.reactor.flush()
        failure = self.failureResultOf(d, pt.CustomError)
        self.assertIn("oops", failure.value.remoteTraceback)

    def test_systemExitInTask(self) -> None:
        """
        A task raising SystemExit fails; the child goes on.
        """
        d = self.q.call(pt.exitProcess)
        self.reactor.flush()
        self.failureResultOf(d, SystemExit)
        d2 = self.q.call(pt.add, 4)
        self.reactor.flush()
        self.assertEqual(self.successResultOf(d2), 4)

    def test_unpicklableResult(self) -> None:
        """
        A result that can't be sent back is a TypeError naming the call.
        """
        d = self.q.call(pt.returnUnpicklable)
        self.reactor.flush()
        failure = self.failureResultOf(d, TypeError)
        self.assertIn("returnUnpicklable", str(failure.value))

    def test_badCallRefusedAtCallTime(self) -> None:
        """
        An unpicklable call is a TypeError at call time; the queue goes on.
        """
        self.assertRaises(TypeError, self.q.call, lambda: 1)
        self.assertRaises(TypeError, self.q.call, pt.add, threading.Lock())
        self.assertEqual(self.q.pending(), 0)
        d = self.q.call(pt.add, 1)
        self.reactor.flush()
        self.assertEqual(self.successResultOf(d), 1)

    def test_iteration(self) -> None:
        """
        An iterator streams back in batches as a L{Deferator}, one request
        per batch (and one more, on its way when the last batch landed).
        """
        self.worker.batchSize = 10
        d = self.q.call(pt.count, 35)
        self.reactor.flush()
        dr = self.successResultOf(d)
        self.assertIsInstance(dr, Deferator)
        items = []
        for itemD in dr:
            self.reactor.flush()
            items.append(self.successResultOf(itemD))
        self.assertEqual(items, list(range(35)))
        self.assertIn(self.reactor.children[0].handled.count("next"), (3, 4))
        self.assertEqual(self.reactor.children[0].server.iterators, {})

    def test_iterationFailure(self) -> None:
        """
        An iterator failing midway fails after the items before it.
        """
        self.worker.batchSize = 4
        consumer = ListConsumer()
        d = self.q.call(pt.count, 35, failAt=6, consumer=consumer)
        self.reactor.flush()
        self.reactor.flush()
        self.failureResultOf(d, pt.CustomError)
        self.assertEqual(consumer.items, list(range(6)))

    def test_stopIterationClosesRemote(self) -> None:
        """
        Stopping a Deferator closes the iterator in the child.
        """
        self.worker.batchSize = 2
        dr = self.q.call(pt.count, 100)
        self.reactor.flush()
        deferator = self.successResultOf(dr)
        self.reactor.flush()
        self.assertEqual(len(self.reactor.children[0].server.iterators), 1)
        deferator.stop()
        self.reactor.flush()
        self.assertEqual(self.reactor.children[0].server.iterators, {})

    def test_cancelRunningKills(self) -> None:
        """
        Cancelling a running call kills the process; the caller hears
        L{CancelledError} once it ended; the next call starts a new one.
        """
        d = self.q.call(pt.sleepFor, 100)
        child = self.reactor.children[0]
        d.cancel()
        self.assertEqual(child.signals, ["KILL"])
        self.assertNoResult(d)
        child.flush()
        self.failureResultOf(d, CancelledError)
        d2 = self.q.call(pt.add, 5)
        self.assertEqual(len(self.reactor.children), 2)
        self.reactor.flush()
        self.assertEqual(self.successResultOf(d2), 5)

    def test_timeoutKills(self) -> None:
        """
        A running call that times out kills its process and fails with
        L{TaskTimeout}.
        """
        d = self.q.call(pt.sleepFor, 100, timeout=3)
        self.reactor.advance(3)
        self.assertEqual(self.reactor.children[0].signals, ["KILL"])
        self.reactor.flush()
        self.failureResultOf(d, TaskTimeout)

    def test_noKill(self) -> None:
        """
        With C{killOnInterrupt=False}, cancelling leaves the process alone
        and the caller hears at once.
        """
        q = ProcessQueue(1, reactor=self.reactor, killOnInterrupt=False)
        d = q.call(pt.add, 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.reactor.children[0].signals, [])

    def test_processDies(self) -> None:
        """
        A process that dies fails its call with L{WorkerError}, and open
        iterations too; the next call gets a new process.
        """
        self.worker.batchSize = 2
        dr = self.successResultOf(_flushed(self, self.q.call(pt.count, 100)))
        d = self.q.call(pt.hardExit)
        child = self.reactor.children[0]
        child.end(ProcessTerminated(exitCode=7))
        failure = self.failureResultOf(d, WorkerError)
        self.assertIn("ended", str(failure.value))
        got: list[Any] = []
        for itemD in dr:
            itemD.addCallbacks(got.append, lambda f: got.append(f.value))
        self.assertIsInstance(got[-1], WorkerError)
        d2 = self.q.call(pt.add, 2)
        self.reactor.flush()
        self.assertEqual(self.successResultOf(d2), 2)

    def test_shutdown(self) -> None:
        """
        Shutdown lets the child finish its call, then it quits.
        """
        d = self.q.call(pt.add, 1)
        stopped = self.q.shutdown()
        self.assertNoResult(stopped)
        self.reactor.flush()
        self.assertEqual(self.successResultOf(d), 1)
        self.successResultOf(stopped)
        child = self.reactor.children[0]
        self.assertTrue(child.ended)
        self.assertEqual(child.handled[-1], "quit")

    def test_stopWithoutProcess(self) -> None:
        """
        Stopping a worker that never started a process is immediate.
        """
        self.successResultOf(self.q.shutdown())
        self.assertEqual(self.reactor.children, [])

    def test_crash(self) -> None:
        """
        Crashing kills the process and hands back the running task
        without failing it.
        """
        d = self.q.call(pt.sleepFor, 100)
        tasks = self.worker.crash()
        self.assertEqual(len(tasks), 1)
        self.assertEqual(self.reactor.children[0].signals, ["KILL"])
        self.reactor.flush()
        self.assertNoResult(d)

    def test_processQueueSize(self) -> None:
        """
        A ProcessQueue has one worker per core by default.
        """
        import os

        q = ProcessQueue(reactor=self.reactor)
        self.assertEqual(len(q.workers), os.cpu_count() or 1)
        self.assertRaises(ValueError, ProcessQueue, 0)


def _flushed(test: ProcessWorkerTests, d: Any) -> Any:
    test.reactor.flush()
    return d
