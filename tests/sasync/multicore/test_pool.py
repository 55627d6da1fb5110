"""
The parent's side of a multicore broker, deterministically: a fake reactor
that "spawns" processes whose pipes are in-memory, a Clock for the grace
periods, and replies written by the test.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue.errors import WorkerError
from asynqueue.process import FRAME, PROTOCOL, encode, failureReply
from asynqueue.task import Task
from sasync.multicore import ProcessPool
from sasync.multicore._workerprocess import (
    CANCEL_GRACE,
    QUIT_GRACE,
    RequestPipe,
    WorkerProtocol,
)
from sasync.transact import CallOptions, TransactionCall

from .brokers import MultiBroker, helperPid


class FakeTransport:
    """
    A fake child: the read end of its request pipe, the signals sent.
    """

    def __init__(self, pid: int, requests: int) -> None:
        self.pid = pid
        self.requests = requests
        os.set_blocking(requests, False)
        self.data = b""
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def messages(self) -> list[tuple[Any, ...]]:
        """Every message written so far, decoded."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.requests, 65536):
                self.data += chunk
        out, data = [], self.data
        while data:
            (n,) = FRAME.unpack_from(data)
            out.append(pickle.loads(data[FRAME.size : FRAME.size + n]))
            data = data[FRAME.size + n :]
        return out


class FakeReactor(Clock):
    """
    A Clock that "spawns" processes: each gets a L{FakeTransport}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[WorkerProtocol, FakeTransport]] = []

    def spawnProcess(
        self, protocol: WorkerProtocol, *args: Any, childFDs: dict[int, Any], **kw: Any
    ) -> FakeTransport:
        # The parent closes its copy of the read end: keep one.
        transport = FakeTransport(1000 + len(self.spawned), os.dup(childFDs[0]))
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.spawned.append((protocol, transport))
        return transport

    def addWriter(self, writer: Any) -> None:
        pass

    def removeWriter(self, writer: Any) -> None:
        pass

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


def reply(protocol: WorkerProtocol, message: tuple[Any, ...]) -> None:
    protocol.outReceived(encode(message))


def ended(protocol: WorkerProtocol) -> None:
    protocol.processEnded(Failure(ProcessTerminated(signal=9)))  # type: ignore[no-untyped-call]


class PoolTests(SynchronousTestCase):
    """
    Requests, replies, process death, cancellation and stopping.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.addCleanup(self.closePipes)
        self.pool = ProcessPool(
            "Owner",
            1,
            1,
            b"recipe",
            reactor=self.reactor,
        )

    def closePipes(self) -> None:
        for protocol, transport in self.reactor.spawned:
            os.close(transport.requests)
            pipe = protocol.process.pipe
            if pipe is not None:
                pipe.close()

    def started(self) -> tuple[WorkerProtocol, FakeTransport]:
        """Start the process: the test says its broker runs."""
        d = self.pool.start()
        protocol, transport = self.reactor.spawned[-1]
        assert transport.messages()[-1][0] == "start"
        reply(protocol, ("ready", transport.messages()[-1][1], None))
        self.successResultOf(d)
        return protocol, transport

    def call(self) -> Task[Any]:
        task: Task[Any] = Task(helperPid)
        self.pool.queue.submit(task)
        return task

    def test_roundTrip(self) -> None:
        """
        A call goes out pickled once the process's broker runs, and its
        value comes back to the caller.
        """
        protocol, transport = self.started()
        task = self.call()
        kind, rid, payload, raw = transport.messages()[-1]
        assert (kind, raw) == ("run", False)
        assert pickle.loads(payload)[0] is helperPid
        reply(protocol, ("value", rid, pickle.dumps(42, PROTOCOL)))
        assert self.successResultOf(task.d) == 42

    def test_slotGivenWithoutDeferred(self) -> None:
        """
        The parent's queue hands a call to a process's slot with give(), no
        Deferred made per call; the slot is free again (the next queued
        call goes out) before the reply reaches the caller. run(), for other
        queues, still returns a Deferred that fires when the slot is free.
        """
        protocol, transport = self.started()
        (slot,) = list(self.pool.queue._workers)
        assert slot.gives and slot.onFreed is not None
        first, second = self.call(), self.call()
        assert [m[0] for m in transport.messages()].count("run") == 1
        sent: list[int] = []
        first.d.addCallback(lambda _: sent.append(len(transport.messages())))
        reply(protocol, ("value", transport.messages()[-1][1], pickle.dumps(1)))
        # The second call was sent before the first one's caller heard.
        assert sent == [len(transport.messages())]
        assert transport.messages()[-1][0] == "run"
        reply(protocol, ("value", transport.messages()[-1][1], pickle.dumps(2)))
        assert self.successResultOf(second.d) == 2
        task: Task[Any] = Task(helperPid)
        task.payload = self.pool.message(task)
        freed = slot.worker.run(task)
        self.assertNoResult(freed)
        reply(protocol, ("value", transport.messages()[-1][1], pickle.dumps(3)))
        self.successResultOf(freed)
        assert self.successResultOf(task.d) == 3

    def test_optionsPickledOnce(self) -> None:
        """
        A transaction travels as (method name, arguments) and its call
        options: calls that share an options object send the very same
        pickle of it, made once; options of a call's own are pickled with
        what the parent keeps (the timeout) left out.
        """
        broker = object.__new__(MultiBroker)
        f = MultiBroker.echo.__sasyncTransaction__  # type: ignore[attr-defined]
        shared = CallOptions(niceness=3)

        def message(options: CallOptions) -> tuple[Any, ...]:
            call = TransactionCall(broker, None, f, options)
            return self.pool.message(Task(call, ("x",), {}))

        first, second = message(shared), message(shared)
        assert first[0] == "call" and pickle.loads(first[1]) == ("echo", ("x",), {})
        assert first[2] is second[2]
        assert pickle.loads(first[2]) == shared
        timed = pickle.loads(message(CallOptions(niceness=3, timeout=5.0))[2])
        assert timed == shared

    def test_deadProcess(self) -> None:
        """
        A process that dies fails what it held with WorkerError; the next
        call starts a new process.
        """
        protocol, _transport = self.started()
        task = self.call()
        ended(protocol)
        self.failureResultOf(task.d, WorkerError)
        nextTask = self.call()
        assert len(self.reactor.spawned) == 2
        self.assertNoResult(nextTask.d)

    def test_failureKeepsTypeWithoutRetryMark(self) -> None:
        """
        A failure comes back as its own type, minus the mark that would make
        the parent retry what the worker's broker already retried.
        """
        protocol, transport = self.started()
        task = self.call()
        rid = transport.messages()[-1][1]
        error = KeyError("k")
        error._sasyncRetryReason = "conflict"  # type: ignore[attr-defined]
        reply(protocol, failureReply(rid, error))
        failure = self.failureResultOf(task.d, KeyError)
        assert not hasattr(failure.value, "_sasyncRetryReason")

    def test_cancelThenKill(self) -> None:
        """
        Cancelling a running call sends the process a cancel; a process that
        has not ended the call CANCEL_GRACE seconds later is killed, and
        the caller hears CancelledError once it has ended.
        """
        protocol, transport = self.started()
        task = self.call()
        rid = transport.messages()[-1][1]
        task.d.cancel()
        assert transport.messages()[-1] == ("cancel", rid)
        self.assertNoResult(task.d)
        self.reactor.advance(CANCEL_GRACE)
        assert transport.signals == ["KILL"]
        ended(protocol)
        self.failureResultOf(task.d, CancelledError)

    def test_cancelHeard(self) -> None:
        """
        A process that stops the cancelled call in time is not killed.
        """
        protocol, transport = self.started()
        task = self.call()
        rid = transport.messages()[-1][1]
        task.d.cancel()
        reply(protocol, failureReply(rid, CancelledError("stopped")))
        self.failureResultOf(task.d, CancelledError)
        self.reactor.advance(CANCEL_GRACE)
        assert transport.signals == []

    def test_closeQuitsThenKills(self) -> None:
        """
        Closing the pool tells each process to quit, and kills one that has
        not ended QUIT_GRACE seconds later.
        """
        protocol, transport = self.started()
        d = self.pool.close()
        assert transport.messages()[-1] == ("quit",)
        self.assertNoResult(d)
        self.reactor.advance(QUIT_GRACE)
        assert transport.signals == ["KILL"]
        ended(protocol)
        self.successResultOf(d)

    def test_startupFailure(self) -> None:
        """
        A process whose broker can't start fails start() with the error, and
        is told to quit.
        """
        d = self.pool.start()
        protocol, transport = self.reactor.spawned[-1]
        rid = transport.messages()[-1][1]
        reply(protocol, failureReply(rid, RuntimeError("no")))
        self.failureResultOf(d, RuntimeError)
        assert transport.messages()[-1] == ("quit",)


class RecordingReactor:
    """Records the writers added and removed."""

    def __init__(self) -> None:
        self.writers: list[Any] = []

    def addWriter(self, writer: Any) -> None:
        self.writers.append(writer)

    def removeWriter(self, writer: Any) -> None:
        if writer in self.writers:
            self.writers.remove(writer)


class RequestPipeTests(SynchronousTestCase):
    """
    Requests are written at once; what a full pipe can't take waits, in
    order, until the reactor says it drains.
    """

    def test_fullPipe(self) -> None:
        readEnd, writeEnd = os.pipe()
        os.set_blocking(writeEnd, False)
        self.addCleanup(os.close, readEnd)
        reactor = RecordingReactor()
        pipe = RequestPipe(writeEnd, reactor)
        self.addCleanup(pipe.close)
        pipe.write(b"a" * 10)
        assert os.read(readEnd, 100) == b"a" * 10 and reactor.writers == []
        big = bytes(range(256)) * 1024
        pipe.write(big)
        pipe.write(b"after")
        assert pipe.pending and reactor.writers == [pipe]
        received = b""
        while pipe.pending or len(received) < len(big) + 5:
            received += os.read(readEnd, 1 << 20)
            if pipe.pending:
                pipe.doWrite()
        assert received == big + b"after"
        assert reactor.writers == []
