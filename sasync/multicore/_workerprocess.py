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
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from asynqueue import Waiters
from asynqueue.deferator import Deferator
from asynqueue.errors import WorkerError
from asynqueue.interfaces import IWorker
from asynqueue.process import (
    ChildProcessProtocol,
    ReplyHandler,
    Requests,
    encode,
    finishFromReply,
    remoteDeferator,
)
from asynqueue.task import Task

from ..retry import _REASON as _RETRY_REASON

if TYPE_CHECKING:
    from .._protocols import ProcessOwner

log = Logger()

#: Seconds a running call may ignore its cancel before its process is killed.
CANCEL_GRACE = 10.0
#: Seconds a process may take to quit at shutdown before it is killed.
QUIT_GRACE = 10.0

#: The directory holding the sasync package, for the children's sys.path.
_PACKAGE_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


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

    def received(self, message: Any) -> None:
        self.process.received(message)

    def logLine(self, line: str) -> None:
        # The child's log (warnings and worse) and stray prints.
        log.warn("{process}: {line}", process=self.process, line=line)

    def childEnded(self, reason: Failure) -> None:
        self.process.ended(self, reason)


class WorkerProcess:
    """
    One worker process, started on demand, and the requests it has in hand.
    """

    def __init__(self, pool: ProcessOwner, index: int) -> None:
        self.pool = pool
        self.index = index
        self.protocol: WorkerProtocol | None = None
        self.pipe: RequestPipe | None = None
        self.ready = False
        self._readyWaiters = Waiters()
        self._requests = Requests()
        self._stopping = False

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
        python = sys.executable
        # Requests go through a pipe of ours (see RequestPipe).
        readEnd, writeEnd = os.pipe()
        os.set_blocking(writeEnd, False)
        try:
            transport = self.reactor.spawnProcess(
                protocol,
                python,
                # -P: the current directory doesn't come first on its
                # sys.path, so it runs this sasync even from a directory
                # holding another (a source checkout, a stray sasync.py).
                [python, "-P", "-m", "sasync.multicore._child"],
                env=env,
                childFDs={0: readEnd, 1: "r", 2: "r"},
            )
        except BaseException:
            os.close(writeEnd)
            raise
        finally:
            os.close(readEnd)
        protocol.pid = getattr(transport, "pid", None)
        self.protocol = protocol
        self.pipe = RequestPipe(writeEnd, self.reactor)
        self.request(("start", self.pool.recipe, list(sys.path)), self._started)

    def _started(self, kind: str, body: Any, exhausted: bool) -> None:
        waiters, self._readyWaiters = self._readyWaiters, Waiters()
        if kind == "failure":
            # Its broker did not start: let this process go; the next call
            # tries a new one.
            self.stop()
            failure = body if isinstance(body, Failure) else Failure(body)  # type: ignore[no-untyped-call]
            waiters.fail(failure)
            return
        self.ready = True
        self.pool.learnTables(body)
        waiters.fire()

    # Requests -----------------------------------------------------------------

    def request(self, message: tuple[Any, ...], handle: ReplyHandler) -> int:
        """
        Send a request; C{handle} gets its reply (or a L{WorkerError} if
        the process ends first).
        """
        rid = self._requests.add(handle)
        self.send((message[0], rid, *message[1:]))
        return rid

    def send(self, message: tuple[Any, ...]) -> None:
        """
        Send a message that has no reply.
        """
        if self.pipe is not None:
            self.pipe.write(encode(message))

    def pending(self, rid: int) -> bool:
        """
        Whether request C{rid} still waits for its reply.
        """
        return rid in self._requests

    def received(self, message: tuple[Any, ...]) -> None:
        """
        A reply from the process.
        """
        self._requests.deliver(message)

    def cancel(self, rid: int) -> None:
        """
        Ask the process to cancel call C{rid}; kill it if the call has not
        ended L{CANCEL_GRACE} seconds later.
        """
        if rid not in self._requests:
            return
        self.send(("cancel", rid))
        protocol = self.protocol

        def check() -> None:
            if rid in self._requests and self.protocol is protocol:
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
        name = f"worker process {self.index} of {self.pool.name}"
        pid = protocol.pid
        self.protocol = None
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
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
        self._requests.failAll(f"the {name} (pid {pid}) ended: {text}")
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
        return remoteDeferator(
            items,
            exhausted,
            ask=lambda handle: self.request(("next", iterID), handle),
            close=lambda: self.send(("close", iterID)),
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
        self.send(("quit",))
        killer = self.reactor.callLater(QUIT_GRACE, self.kill)
        done: Deferred[None] = Deferred()

        def ended(_: None) -> None:
            if killer.active():
                killer.cancel()
            done.callback(None)

        protocol.ended.addCallback(ended)
        return done


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

    def give(
        self, task: Task[Any], onFreed: Callable[[Slot, Task[Any]], object]
    ) -> None:
        """
        L{run} without a Deferred, as the parent's queue calls it (one
        Deferred and its callbacks less per call): C{onFreed(self, task)}
        is called once, when the slot is free again.
        """
        process = self.process
        rid = 0

        def send(_: None) -> None:
            nonlocal rid
            if task.stopRequested:
                onFreed(self, task)
                task.fail(Failure(task.stopReason))  # type: ignore[no-untyped-call]
                return
            rid = process.request(task.payload, handle)
            task.onInterrupt(lambda reason: process.cancel(rid))

        def notStarted(failure: Failure) -> None:
            onFreed(self, task)
            task.fail(failure)

        def handle(kind: str, body: Any, exhausted: bool) -> None:
            # Free the slot first, then deliver (as ThreadWorker does).
            onFreed(self, task)
            if kind == "failure":
                # Retried (or not) in the worker process already: not again.
                with contextlib.suppress(AttributeError):
                    delattr(body.value, _RETRY_REASON)
            finishFromReply(
                task,
                kind,
                body,
                exhausted,
                lambda items, done: process.deferator(rid, items, done),
            )

        if process.ready:
            send(None)
        else:
            process.whenReady().addCallbacks(send, notStarted)

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
    "QUIT_GRACE",
    "RequestPipe",
    "Slot",
    "WorkerProcess",
    "WorkerProtocol",
]
