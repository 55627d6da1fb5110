"""
The parent's end of one worker process of a multicore broker (see
L{sasync.multicore}): starting it, the requests it has in hand and their
replies, iterations open in it, cancelling, and stopping or killing it;
and L{Slot}, one of its places for a call in the parent's queue.

Everything here runs in the reactor thread: the process's output arrives
through Twisted's process support, never through a thread of ours.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from asynqueue import Waiters
from asynqueue.deferator import Deferator
from asynqueue.errors import WorkerError
from asynqueue.interfaces import IWorker
from asynqueue.process import (
    PROTOCOL,
    ChildProcessProtocol,
    ReplyHandler,
    rebuildFailure,
    remoteDeferator,
)
from asynqueue.task import Task

from ..retry import _REASON as _RETRY_REASON
from ._wire import (
    BATCH_END,
    CANCEL,
    CLOSE,
    FAILURE,
    HEADER,
    HEADER_SIZE,
    ITER,
    ITER_END,
    NEXT,
    QUIT,
    START,
    VALUE,
    frame,
)

if TYPE_CHECKING:
    from .._protocols import ProcessOwner

log = Logger()

#: Seconds a running call may ignore its cancel before its process is killed.
CANCEL_GRACE = 10.0
#: Seconds a process may take to quit at shutdown before it is killed.
QUIT_GRACE = 10.0
#: The environment variable that tells a worker process the CPU to keep to.
CPU_ENV = "SASYNC_WORKER_CPU"

#: The directory holding the sasync package, for the children's sys.path.
_PACKAGE_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)

#: Handles the reply to a request other than a call: C{(kind, body)}, the
#: body a rebuilt Failure when the kind is L{FAILURE}, else bytes.
Handler = Callable[[int, Any], None]
#: What frees a slot: the queue's C{onFreed(slot, task)} (see L{Slot.give}).
OnFreed = Callable[["Slot", Task[Any]], object]

_unpack = HEADER.unpack_from
_loads = pickle.loads


@implementer(IWriteDescriptor)
class RequestPipe:
    """
    The write end of a worker process's request pipe, held here rather than
    by the process transport: a request is written in the very call that
    sends it (the transport would wait for the end of the reactor turn, so
    a burst of calls would reach the process only once all were made), and
    what the pipe can't take now waits here and goes out as it drains.
    """

    def __init__(self, fd: int, reactor: Any) -> None:
        self.fd = fd
        self.reactor = reactor
        self.pending = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "RequestPipe"

    def write(self, data: bytes) -> None:
        """
        Write C{data} now, or as soon as the pipe takes it, in order.
        """
        if self.closed:
            return
        if not self.pending:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                n = 0
            except OSError:
                # The process is gone: its end is on the way.
                self.close()
                return
            if n == len(data):
                return
            data = data[n:]
            self.reactor.addWriter(self)
        self.pending += data

    def doWrite(self) -> None:
        """
        The pipe takes more: write what waits.
        """
        try:
            n = os.write(self.fd, self.pending)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self.pending[:n]
        if not self.pending:
            self.reactor.removeWriter(self)

    def connectionLost(self, reason: Failure) -> None:
        self.close()

    def close(self) -> None:
        """
        Close the pipe (the process reads the end of its input).
        """
        if self.closed:
            return
        self.closed = True
        self.pending.clear()
        self.reactor.removeWriter(self)
        os.close(self.fd)


@implementer(IReadDescriptor)
class ReplyPipe:
    """
    The read end of a worker process's reply pipe, read here rather than
    by the process transport: what is read goes straight to
    L{WorkerProcess.received} (Twisted's process reader hands each read
    through four calls first). The process's end (L{WorkerProcess.ended})
    drains it first.
    """

    def __init__(self, fd: int, protocol: WorkerProtocol, reactor: Any) -> None:
        self.fd = fd
        self.protocol = protocol
        self.reactor = reactor
        self.closed = False
        # (Per read: what outReceived would do, without its call.)
        self._buffer = protocol.buffer
        self._received = protocol.process.received
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "ReplyPipe"

    def doRead(self) -> None:
        """
        Replies (or the end of them) came.
        """
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            buffer = self._buffer
            buffer += data
            self._received(buffer)
            return
        # The process closed its end, or ended.
        self.close()
        self.protocol.childConnectionLost(1)

    def drain(self) -> None:
        """
        Read what is left (the process has ended), then close.
        """
        while not self.closed:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                # (BlockingIOError: nothing more.)
                break
            if not data:
                break
            self.protocol.outReceived(data)
        self.close()

    def connectionLost(self, reason: Failure) -> None:
        self.close()

    def close(self) -> None:
        """
        Stop reading, and close the pipe.
        """
        if self.closed:
            return
        self.closed = True
        self.reactor.removeReader(self)
        os.close(self.fd)


class Outbox:
    """
    The requests of one pool to its worker processes, and their IDs.

    A request is written at once (see L{RequestPipe}), except while the
    replies of one read are taken in (L{WorkerProcess.received}): the
    calls the queue hands the slots those replies free wait then, and go
    out together, one write per process, before any of the replies reaches
    its caller. So a busy pool writes once per read, not once per call,
    and no request waits for a caller's callbacks.
    """

    def __init__(self) -> None:
        #: Request IDs, unique within the pool (see L{sasync.multicore._wire}).
        self.rids = itertools.count(1)
        #: Whether requests wait for L{release}.
        self.holding = False
        #: The processes with requests waiting.
        self.held: list[WorkerProcess] = []

    def release(self) -> None:
        """
        Write the requests that waited, and write at once from now on.
        """
        self.holding = False
        held = self.held
        if held:
            self.held = []
            for process in held:
                process.flush()


class WorkerProtocol(ChildProcessProtocol):
    """
    The parent's end of the pipes to one worker process.
    """

    def __init__(self, process: WorkerProcess) -> None:
        super().__init__()
        self.process = process
        #: The process ID, kept after the process has ended.
        self.pid: int | None = None

    @property
    def clock(self) -> Any:
        return self.process.reactor

    def outReceived(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        self.process.received(buffer)

    def received(self, message: Any) -> None:
        # (Replies are framed by sasync.multicore._wire, read by
        # WorkerProcess.received: outReceived never calls this.)
        raise NotImplementedError

    def logLine(self, line: str) -> None:
        # The child's log (warnings and worse) and stray prints.
        log.warn("{process}: {line}", process=self.process, line=line)

    def childEnded(self, reason: Failure) -> None:
        self.process.ended(self, reason)


class WorkerProcess:
    """
    One worker process, started on demand, and the requests it has in hand.

    @ivar calls: The calls it runs, by request ID: (task, what frees its
        slot, the slot).
    """

    def __init__(
        self, pool: ProcessOwner, index: int, outbox: Outbox | None = None
    ) -> None:
        """
        @param outbox: The pool's requests (shared by its processes); one
            of its own by default.
        """
        self.pool = pool
        self.index = index
        self.outbox = Outbox() if outbox is None else outbox
        self.protocol: WorkerProtocol | None = None
        self.pipe: RequestPipe | None = None
        self.replies: ReplyPipe | None = None
        self.ready = False
        self.calls: dict[int, tuple[Task[Any], OnFreed, Slot]] = {}
        self._handlers: dict[int, Handler] = {}
        self._held: list[bytes] = []
        self._readyWaiters = Waiters()
        self._stopping = False
        #: The CPU the process is kept on, if any (set by the pool; see
        #: L{sasync.multicore._pool.workerCPUs}).
        self.cpu: int | None = None

    def __repr__(self) -> str:
        return f"<worker process {self.index} of {self.pool.name} pid={self.pid}>"

    @property
    def reactor(self) -> Any:
        return self.pool.reactor

    @property
    def pid(self) -> int | None:
        """
        The process ID, while the process runs.
        """
        if self.protocol is None or self.protocol.transport is None:
            return None
        return getattr(self.protocol.transport, "pid", None)

    # Starting -----------------------------------------------------------------

    def whenReady(self) -> Deferred[None]:
        """
        Fires once the process runs and its broker has started; starts the
        process if none runs. Fails if the broker could not start.
        """
        if self.ready:
            return succeed(None)
        d = self._readyWaiters.wait()
        if self.protocol is None:
            self._spawn()
        return d

    def _spawn(self) -> None:
        protocol = WorkerProtocol(self)
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
        # The process keeps itself on its CPU, before it starts a thread.
        env.pop(CPU_ENV, None)
        if self.cpu is not None:
            env[CPU_ENV] = str(self.cpu)
        python = sys.executable
        # Requests and replies go through pipes of ours (see RequestPipe
        # and ReplyPipe).
        readEnd, writeEnd = os.pipe()
        os.set_blocking(writeEnd, False)
        replyRead, replyWrite = os.pipe()
        os.set_blocking(replyRead, False)
        try:
            transport = self.reactor.spawnProcess(
                protocol,
                python,
                # -P: the current directory doesn't come first on its
                # sys.path, so it runs this sasync even from a directory
                # holding another (a source checkout, a stray sasync.py).
                [python, "-P", "-m", "sasync.multicore._child"],
                env=env,
                childFDs={0: readEnd, 1: replyWrite, 2: "r"},
            )
        except BaseException:
            os.close(writeEnd)
            os.close(replyRead)
            raise
        finally:
            os.close(readEnd)
            os.close(replyWrite)
        protocol.pid = getattr(transport, "pid", None)
        self.protocol = protocol
        self.pipe = RequestPipe(writeEnd, self.reactor)
        self.replies = ReplyPipe(replyRead, protocol, self.reactor)
        body = pickle.dumps((self.pool.recipe, list(sys.path)), PROTOCOL)
        self.request(START, body, self._started)

    def _started(self, kind: int, body: Any) -> None:
        waiters, self._readyWaiters = self._readyWaiters, Waiters()
        if kind == FAILURE:
            # Its broker did not start: let this process go; the next call
            # tries a new one.
            self.stop()
            waiters.fail(body)
            return
        self.ready = True
        self.pool.learnTables(body or None)
        waiters.fire()

    # Requests -----------------------------------------------------------------

    def request(self, kind: int, body: bytes, handle: Handler) -> int:
        """
        Send a request other than a call (see L{Slot.give}); C{handle} gets
        its reply (or a L{WorkerError} if the process ends first).

        @return: its request ID.
        """
        rid = next(self.outbox.rids)
        self._handlers[rid] = handle
        self.write(frame(kind, rid, body))
        return rid

    def send(self, kind: int, rid: int = 0, body: bytes = b"") -> None:
        """
        Send a message that has no reply.
        """
        self.write(frame(kind, rid, body))

    def write(self, data: bytes) -> None:
        """
        Write framed messages to the process: now, or once the replies
        being read are in (see L{Outbox}).
        """
        if self.outbox.holding:
            self.hold(data)
        elif self.pipe is not None:
            self.pipe.write(data)

    def hold(self, data: bytes) -> None:
        """
        Keep C{data} for the outbox's release (see L{Outbox}).
        """
        if not self._held:
            self.outbox.held.append(self)
        self._held.append(data)

    def flush(self) -> None:
        """
        Write what waited for the replies being read.
        """
        data = b"".join(self._held)
        self._held.clear()
        if self.pipe is not None:
            self.pipe.write(data)

    def pending(self, rid: int) -> bool:
        """
        Whether request C{rid} still waits for its reply.
        """
        return rid in self.calls or rid in self._handlers

    def received(self, buffer: bytearray) -> None:
        """
        Take the whole replies at the front of C{buffer}, in order. Each
        call's slot is freed before its caller hears (the queue sends the
        next call at once); when several replies came together, every slot
        is freed first, and the requests for the next calls go out together
        (see L{Outbox}) before any of the callers hears.
        """
        end = len(buffer)
        if end < HEADER_SIZE:
            return
        size, rid, kind = _unpack(buffer, 0)
        if HEADER_SIZE + size != end:
            self._receivedMany(buffer, end)
            return
        # One reply (the common case of a lone call).
        body = buffer[HEADER_SIZE:]
        buffer.clear()
        entry = self.calls.pop(rid, None)
        if entry is None:
            self._answered(rid, kind, body)
            return
        task, onFreed, slot = entry
        onFreed(slot, task)
        self._finishCall(task, kind, body, rid)

    def _receivedMany(self, buffer: bytearray, end: int) -> None:
        # received(), for a buffer that holds more than one reply (or the
        # start of one only).
        calls = self.calls
        replies: list[tuple[Task[Any] | None, int, bytearray, int]] = []
        outbox = self.outbox
        outbox.holding = True
        pos = 0
        try:
            while end - pos >= HEADER_SIZE:
                size, rid, kind = _unpack(buffer, pos)
                start = pos + HEADER_SIZE
                if start + size > end:
                    break
                pos = start + size
                entry = calls.pop(rid, None)
                if entry is None:
                    replies.append((None, kind, buffer[start:pos], rid))
                    continue
                called, onFreed, slot = entry
                onFreed(slot, called)
                replies.append((called, kind, buffer[start:pos], rid))
        finally:
            del buffer[:pos]
            outbox.release()
        for task, kind, body, rid in replies:
            if task is None:
                self._answered(rid, kind, body)
            else:
                self._finishCall(task, kind, body, rid)

    def _finishCall(
        self, task: Task[Any], kind: int, body: bytearray, rid: int
    ) -> None:
        # A call's reply: its value, or else how it ended.
        if kind == VALUE:
            try:
                result = _loads(body)
            except Exception:
                task.fail(Failure())  # type: ignore[no-untyped-call]
                return
            task.finish(result)
            return
        if kind == FAILURE:
            failure = _failure(body)
            # Retried (or not) in the worker process already: not again.
            with contextlib.suppress(AttributeError):
                delattr(failure.value, _RETRY_REASON)
            task.fail(failure)
            return
        try:
            items = _loads(body)
        except Exception:
            task.fail(Failure())  # type: ignore[no-untyped-call]
            return
        if kind in (ITER, ITER_END):
            task.finish(self.deferator(rid, items, kind == ITER_END))
        else:
            task.fail(Failure(WorkerError(f"{self!r} sent a reply of kind {kind}")))  # type: ignore[no-untyped-call]

    def _answered(self, rid: int, kind: int, body: bytearray) -> None:
        # The reply to a request other than a call (dropped if nobody waits).
        handle = self._handlers.pop(rid, None)
        if handle is not None:
            handle(kind, _failure(body) if kind == FAILURE else bytes(body))

    def cancel(self, rid: int, reason: BaseException | None = None) -> None:
        """
        Ask the process to cancel call C{rid}; kill it if the call has not
        ended L{CANCEL_GRACE} seconds later. (Its task's interrupter: the
        C{reason} is the task's to tell.)
        """
        if not self.pending(rid):
            return
        self.send(CANCEL, rid)
        protocol = self.protocol

        def check() -> None:
            if self.pending(rid) and self.protocol is protocol:
                log.warn(
                    "{process} did not stop a cancelled call within {grace:g} s:"
                    " killing it",
                    process=self,
                    grace=CANCEL_GRACE,
                )
                self.kill()

        self.reactor.callLater(CANCEL_GRACE, check)

    def kill(self) -> None:
        """
        End the process now (its calls fail once it has ended).
        """
        if self.protocol is not None and self.protocol.transport is not None:
            with contextlib.suppress(Exception):
                self.protocol.transport.signalProcess("KILL")

    def ended(self, protocol: WorkerProtocol, reason: Failure) -> None:
        """
        The process has ended: fail what it held.
        """
        if protocol is not self.protocol:
            return
        if self.replies is not None:
            # Its last replies come first.
            replies, self.replies = self.replies, None
            replies.drain()
        name = f"worker process {self.index} of {self.pool.name}"
        pid = protocol.pid
        self.protocol = None
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
        self._held.clear()
        self.ready = False
        # (Taken now: failing the requests below calls _started.)
        waiters, self._readyWaiters = self._readyWaiters, Waiters()
        text = reason.getErrorMessage()
        if not self._stopping:
            log.warn(
                "{process} ended: {text}; a new one starts with the next call",
                process=self,
                text=text,
            )
        self._stopping = False
        why = f"the {name} (pid {pid}) ended: {text}"
        # (Both taken first: a call failed below may start the next process.)
        calls, self.calls = self.calls, {}
        handlers, self._handlers = self._handlers, {}
        for task, onFreed, slot in calls.values():
            onFreed(slot, task)
            task.fail(Failure(WorkerError(why)))  # type: ignore[no-untyped-call]
        for handle in handlers.values():
            handle(FAILURE, Failure(WorkerError(why)))  # type: ignore[no-untyped-call]
        ended = WorkerError(f"the {name} (pid {pid}) ended before its broker started")
        waiters.fail(Failure(ended))  # type: ignore[no-untyped-call]

    # Iterations ---------------------------------------------------------------

    def deferator(
        self, iterID: int, items: list[Any], exhausted: bool
    ) -> Deferator[Any]:
        """
        The parent's side of an iteration open in the process: each batch is
        asked for when the L{Deferator} wants it (so a paused consumer stops
        the fetching), and an iteration ended early is closed there.
        """
        generation = self.protocol
        body = pickle.dumps(iterID, PROTOCOL)
        return remoteDeferator(
            items,
            exhausted,
            ask=lambda handle: self.request(NEXT, body, _batchHandler(handle)),
            close=lambda: self.send(CLOSE, iterID),
            alive=lambda: self.protocol is generation,
            gone=f"the {self!r} has ended",
            reactor=self.reactor,
        )

    # Stopping -----------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """
        Tell the process to quit (its broker shuts down first); kill it if
        it has not ended L{QUIT_GRACE} seconds later.

        @return: fires when it has ended (at once if none runs).
        """
        protocol = self.protocol
        if protocol is None:
            return succeed(None)
        self._stopping = True
        self.send(QUIT)
        killer = self.reactor.callLater(QUIT_GRACE, self.kill)
        done: Deferred[None] = Deferred()

        def ended(_: None) -> None:
            if killer.active():
                killer.cancel()
            done.callback(None)

        protocol.ended.addCallback(ended)
        return done


def _failure(body: bytes | bytearray) -> Failure:
    # A FAILURE reply's body, as the failure of the call (its own exception
    # type where that can be rebuilt).
    try:
        fields = _loads(body)
    except Exception:
        return Failure()  # type: ignore[no-untyped-call]
    return rebuildFailure(*fields)


def _batchHandler(handle: ReplyHandler) -> Handler:
    # A NEXT request's reply, for remoteDeferator's handler.
    def answer(kind: int, body: Any) -> None:
        if kind == FAILURE:
            handle("failure", body, False)
        else:
            handle("batch", body, kind == BATCH_END)

    return answer


@implementer(IWorker)
class Slot:
    """
    One of a process's places for a call: the parent's queue hands it one
    call at a time, and it is free again once the call's reply (or an
    iteration's first batch) is back.
    """

    iQualified: list[str] = []

    def __init__(self, process: WorkerProcess) -> None:
        self.process = process

    def __repr__(self) -> str:
        return f"<slot of {self.process!r}>"

    def run(self, task: Task[Any]) -> Deferred[None]:
        """
        Send C{task}'s call to the process (started first if need be).

        @return: fires when the slot is free again.
        """
        freed: Deferred[None] = Deferred()
        self.give(task, lambda slot, task: freed.callback(None))
        return freed

    def give(self, task: Task[Any], onFreed: OnFreed) -> None:
        """
        L{run} without a Deferred, as the parent's queue calls it (one
        Deferred and its callbacks less per call): C{onFreed(self, task)}
        is called once, when the slot is free again. The task comes
        prepared by the pool (L{sasync.multicore._pool.ProcessPool.prepare}):
        its C{payload} is its request ID and framed request, and its
        interrupter sends the process a cancel.
        """
        process = self.process
        if process.ready and not task.stopRequested:
            rid, data = task.payload
            process.calls[rid] = (task, onFreed, self)
            # (process.write, inlined: this runs per call.)
            if process.outbox.holding:
                process.hold(data)
            elif process.pipe is not None:
                process.pipe.write(data)
            return
        if task.stopRequested:
            onFreed(self, task)
            task.fail(Failure(task.stopReason))  # type: ignore[no-untyped-call]
            return

        def notStarted(failure: Failure) -> None:
            onFreed(self, task)
            task.fail(failure)

        process.whenReady().addCallbacks(lambda _: self.give(task, onFreed), notStarted)

    def stop(self) -> Deferred[None]:
        """
        Nothing to wait for: the pool stops the process.
        """
        return succeed(None)

    def crash(self) -> list[Task[Any]]:
        """
        The pool kills the process; its calls fail with L{WorkerError}.
        """
        return []


__all__ = [
    "CANCEL_GRACE",
    "CPU_ENV",
    "QUIT_GRACE",
    "Outbox",
    "RequestPipe",
    "Slot",
    "WorkerProcess",
    "WorkerProtocol",
]
