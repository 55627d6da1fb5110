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

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue.errors import WorkerError
from asynqueue.process import PROTOCOL, failureReply
from asynqueue.task import Task
from sasync.multicore import ProcessPool
from sasync.multicore._pool import PIN_ENV, workerCPUs
from sasync.multicore._wire import (
    CALL,
    CANCEL,
    FAILURE,
    HEADER,
    QUIT,
    READY,
    RUN,
    START,
    VALUE,
    frame,
)
from sasync.multicore._workerprocess import (
    CANCEL_GRACE,
    CPU_ENV,
    QUIT_GRACE,
    RequestPipe,
    WorkerProtocol,
)
from sasync.transact import CallOptions, TransactionCall

from .brokers import MultiBroker, helperPid


class FakeTransport:
    """
    A fake child: the read end of its request pipe, the write end of its
    reply pipe, the signals sent.
    """

    def __init__(self, pid: int, requests: int, replies: int) -> None:
        self.pid = pid
        self.requests = requests
        self.replies = replies
        os.set_blocking(requests, False)
        self.data = b""
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def messages(self) -> list[tuple[int, int, bytes]]:
        """Every message written so far: (kind, request ID, body)."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.requests, 65536):
                self.data += chunk
        return frames(self.data)


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """The messages in C{data}: (kind, request ID, body)."""
    out = []
    while data:
        size, rid, kind = HEADER.unpack_from(data)
        out.append((kind, rid, data[HEADER.size : HEADER.size + size]))
        data = data[HEADER.size + size :]
    return out


class FakeReactor(Clock):
    """
    A Clock that "spawns" processes: each gets a L{FakeTransport}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[WorkerProtocol, FakeTransport]] = []
        #: The environment each process was given.
        self.envs: list[dict[str, str]] = []

    def spawnProcess(
        self, protocol: WorkerProtocol, *args: Any, childFDs: dict[int, Any], **kw: Any
    ) -> FakeTransport:
        # The parent closes its copies of the child's ends: keep some.
        transport = FakeTransport(
            1000 + len(self.spawned), os.dup(childFDs[0]), os.dup(childFDs[1])
        )
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.spawned.append((protocol, transport))
        self.envs.append(kw["env"])
        return transport

    def addWriter(self, writer: Any) -> None:
        pass

    def addReader(self, reader: Any) -> None:
        pass

    def removeReader(self, reader: Any) -> None:
        pass

    def removeWriter(self, writer: Any) -> None:
        pass

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


def reply(protocol: WorkerProtocol, kind: int, rid: int, body: bytes = b"") -> None:
    protocol.outReceived(frame(kind, rid, body))


def value(protocol: WorkerProtocol, rid: int, result: object) -> None:
    reply(protocol, VALUE, rid, pickle.dumps(result, PROTOCOL))


def failed(protocol: WorkerProtocol, rid: int, error: BaseException) -> None:
    reply(protocol, FAILURE, rid, pickle.dumps(failureReply(rid, error)[2:]))


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
            with contextlib.suppress(OSError):
                os.close(transport.replies)
            pipe = protocol.process.pipe
            if pipe is not None:
                pipe.close()

    def started(self) -> tuple[WorkerProtocol, FakeTransport]:
        """Start the process: the test says its broker runs."""
        d = self.pool.start()
        protocol, transport = self.reactor.spawned[-1]
        assert transport.messages()[-1][0] == START
        reply(protocol, READY, transport.messages()[-1][1])
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
        kind, rid, body = transport.messages()[-1]
        payload, raw = pickle.loads(body)
        assert (kind, raw) == (RUN, False)
        assert pickle.loads(payload)[0] is helperPid
        value(protocol, rid, 42)
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
        assert [m[0] for m in transport.messages()].count(RUN) == 1
        sent: list[int] = []
        first.d.addCallback(lambda _: sent.append(len(transport.messages())))
        value(protocol, transport.messages()[-1][1], 1)
        # The second call was sent before the first one's caller heard.
        assert sent == [len(transport.messages())]
        assert transport.messages()[-1][0] == RUN
        value(protocol, transport.messages()[-1][1], 2)
        assert self.successResultOf(second.d) == 2
        task: Task[Any] = Task(helperPid)
        task.payload = self.pool.message(task)
        freed = slot.worker.run(task)
        self.assertNoResult(freed)
        value(protocol, transport.messages()[-1][1], 3)
        self.successResultOf(freed)
        assert self.successResultOf(task.d) == 3

    def test_requestsTogether(self) -> None:
        """
        Replies read together free their slots first: the next calls'
        requests go out in one write, before any of the callers hears.
        """
        self.pool = ProcessPool("Owner", 1, 2, b"recipe", reactor=self.reactor)
        protocol, transport = self.started()
        tasks = [self.call() for _ in range(4)]
        running = [m for m in transport.messages() if m[0] == RUN]
        assert len(running) == 2
        pipe = protocol.process.pipe
        assert pipe is not None
        writes: list[list[tuple[int, int, bytes]]] = []
        write = pipe.write

        def recorded(data: bytes) -> None:
            writes.append(frames(data))
            write(data)

        pipe.write = recorded  # type: ignore[method-assign]
        # (What was written by the time the first caller hears.)
        heard: list[int] = []

        def hears(result: object) -> object:
            heard.append(len(writes))
            return result

        tasks[0].d.addCallback(hears)
        protocol.outReceived(
            b"".join(
                frame(VALUE, rid, pickle.dumps(n, PROTOCOL))
                for n, (_, rid, _) in enumerate(running)
            )
        )
        assert [[kind for kind, _, _ in w] for w in writes] == [[RUN, RUN]]
        assert heard == [1]
        assert [self.successResultOf(t.d) for t in tasks[:2]] == [0, 1]
        self.assertNoResult(tasks[2].d)
        # A reply read alone: its slot's next request goes out at once.
        reply(protocol, VALUE, writes[0][0][1], pickle.dumps(2, PROTOCOL))
        assert self.successResultOf(tasks[2].d) == 2

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
            rid, data = self.pool.message(Task(call, ("x",), {}))
            [(kind, sentID, body)] = frames(data)
            assert (kind, sentID) == (CALL, rid)
            result: tuple[Any, ...] = pickle.loads(body)
            return result

        first, second = message(shared), message(shared)
        assert first[:3] == ("echo", ("x",), {})
        assert first[3] == second[3]
        assert self.pool._optionsSent[id(shared)][1] == first[3]
        assert pickle.loads(first[3]) == shared
        timed = pickle.loads(message(CallOptions(niceness=3, timeout=5.0))[3])
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

    def test_lastRepliesOfADeadProcess(self) -> None:
        """
        Replies a process wrote before it died reach their callers (its
        reply pipe is read to the end first); the calls it still held fail
        with WorkerError.
        """
        self.pool = ProcessPool("Owner", 1, 2, b"recipe", reactor=self.reactor)
        protocol, transport = self.started()
        answered, lost = self.call(), self.call()
        rid = next(m for m in transport.messages() if m[0] == RUN)[1]
        os.write(transport.replies, frame(VALUE, rid, pickle.dumps(7, PROTOCOL)))
        os.close(transport.replies)
        ended(protocol)
        assert self.successResultOf(answered.d) == 7
        self.failureResultOf(lost.d, WorkerError)

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
        failed(protocol, rid, error)
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
        assert transport.messages()[-1] == (CANCEL, rid, b"")
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
        failed(protocol, rid, CancelledError("stopped"))
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
        assert transport.messages()[-1] == (QUIT, 0, b"")
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
        failed(protocol, rid, RuntimeError("no"))
        self.failureResultOf(d, RuntimeError)
        assert transport.messages()[-1] == (QUIT, 0, b"")


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


class WorkerCPUsTests(SynchronousTestCase):
    """
    Which CPU each worker process keeps to (see L{workerCPUs}).
    """

    def test_auto(self) -> None:
        """
        By default the processes keep to a CPU each when they are at least
        as many as the CPUs allowed, in the allowed CPUs' order, round and
        round; fewer roam.
        """
        assert workerCPUs(2, None, {5, 3}) == [3, 5]
        assert workerCPUs(3, "auto", {0, 1}) == [0, 1, 0]
        assert workerCPUs(2, None, {0, 1, 2, 3}) == [None, None]

    def test_always(self) -> None:
        """
        C{"1"} keeps them to a CPU each however many CPUs there are.
        """
        assert workerCPUs(2, "1", {0, 1, 2, 3}) == [0, 1]

    def test_never(self) -> None:
        """
        C{"0"} never does; nor does a single allowed CPU, or none known.
        """
        assert workerCPUs(2, "0", {0, 1}) == [None, None]
        assert workerCPUs(2, "1", {7}) == [None, None]
        assert workerCPUs(2, "1", set()) == [None, None]

    def test_badSetting(self) -> None:
        """
        Another setting is refused, naming the variable.
        """
        with pytest.raises(ValueError, match=PIN_ENV):
            workerCPUs(2, "yes", {0, 1})

    def test_toldTheProcess(self) -> None:
        """
        A process kept to a CPU is told which in its environment (it keeps
        itself there before it starts a thread); one that roams is told
        nothing, even if the parent's own environment said something.
        """
        for setting, told in (("1", "0"), ("0", None)):
            reactor = FakeReactor()
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv(PIN_ENV, setting)
                patch.setenv(CPU_ENV, "9")
                patch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
                pool = ProcessPool("Owner", 1, 1, b"recipe", reactor=reactor)
            pool.start()
            (protocol, transport), env = reactor.spawned[0], reactor.envs[0]
            os.close(transport.requests)
            os.close(transport.replies)
            assert protocol.process.pipe is not None
            assert protocol.process.replies is not None
            protocol.process.pipe.close()
            protocol.process.replies.close()
            assert env.get(CPU_ENV) == told
