"""
L{ProcessWorker}: runs tasks in a separate Python process, for work that
needs a core of its own; L{ProcessQueue}: a L{TaskQueue} of them.

Calls, arguments, results and iterated items travel pickled over the
child's stdin and stdout (see L{asynqueue._child}). So a callable must be
picklable, which means importable by name: a function or class defined at
the top level of a module (not a lambda or closure), or a bound method of
a picklable object. The top level of the script you run (C{__main__})
counts: a worker process that gets a call naming it runs that script
first as C{__mp_main__}, as multiprocessing does (keep the script's own
work under C{if __name__ == "__main__":}); from an interactive session or
C{python -c} there is no script to run, and such a call is refused.

Everything here runs in the reactor thread: the child's output arrives
through Twisted's process support, never through a thread of ours.

The wire format (L{encode}, L{decodeFrames}, L{dumps}, L{failureReply}) and
the parent's side of a child (L{ChildProcessProtocol}, L{Requests},
L{decodeReply}, L{finishFromReply}, L{remoteDeferator}) are public too:
they are the parts a pool of processes of one's own is built from (as
sAsync's C{processes=N}, and asynqueue.wire's remote workers).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._child import FRAME as FRAME
from ._child import PROTOCOL as PROTOCOL
from ._child import decodeFrames as decodeFrames
from ._child import dumps as dumps
from ._child import encode as encode
from ._child import failureReply as failureReply
from ._mainmodule import aliasMain, mainLocation
from ._util import checkNumber, follow, globalReactor
from .deferator import DEFAULT_BATCH, Batch, Deferator, checkBatchSize
from .errors import RemoteTaskError, WorkerError
from .info import callableName
from .interfaces import IWorker
from .task import Task
from .taskqueue import TaskQueue

log = Logger()

#: Handles the reply to one request: (kind, body, exhausted), where body is
#: pickled bytes, or a Failure when kind is "failure".
ReplyHandler = Callable[[str, Any, bool], None]

#: The directory holding the asynqueue package, for the child's sys.path.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def payloadOrFail(
    task: Task[Any],
    encode: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], bytes],
) -> bytes | None:
    """
    The bytes that carry C{task} to another process: its C{payload} if it
    has them, else C{encode(f, args, kw)}. C{None} when the task ended here
    instead: a stop was already asked for, or C{encode} refused the call
    (C{TypeError}); its Deferred has failed with the reason.
    """
    if task.stopRequested:
        task.fail(Failure(task.stopReason))  # type: ignore[no-untyped-call]
        return None
    try:
        payload = task.payload
        return (
            payload
            if isinstance(payload, bytes)
            else encode(task.f, task.args, task.kw)
        )
    except TypeError:
        task.fail(Failure())  # type: ignore[no-untyped-call]
        return None


def pickleCall(
    f: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]
) -> bytes:
    """
    The call C{f(*args, **kw)}, pickled for a worker process.

    @raise TypeError: C{f} or its arguments can't be pickled, or C{f} lives
        in a C{__main__} that the worker process can't run (an interactive
        session, C{python -c}). The message names the callable.
    """
    name = callableName(f)
    inMain = getattr(f, "__module__", None) == "__main__" and not hasattr(f, "__self__")
    if inMain and mainLocation() is None:
        raise TypeError(
            f"{name} is defined in __main__, and this __main__ is no script a"
            " worker process can run (an interactive session or python -c):"
            " move it to a module"
        )
    try:
        return dumps((f, args, kw))
    except Exception as e:
        try:
            dumps(f)
        except Exception:
            if inMain:
                raise TypeError(
                    f"{name} is defined in __main__ but not at its top level,"
                    f" so a worker process can't find it ({e}): move it to a"
                    " module"
                ) from e
            raise TypeError(
                f"{name} can't run in a worker process: it can't be pickled ({e})"
            ) from e
        raise TypeError(
            f"the arguments of {name} can't be pickled for a worker process: {e}"
        ) from e


def rebuildFailure(
    pickled: bytes | None, remoteType: str, message: str, remoteTraceback: str
) -> Failure:
    """
    The failure of a call in a worker process: its own exception type where
    that can be recreated here, else L{RemoteTaskError}. Either way the
    remote traceback text comes along (as C{remoteTraceback}, and as a note
    shown with the exception's traceback).
    """
    error: BaseException | None = None
    if pickled is not None:
        try:
            error = pickle.loads(pickled)
        except Exception:
            error = None
    if not isinstance(error, BaseException):
        error = RemoteTaskError(remoteType, message, remoteTraceback)
    else:
        try:
            error.remoteTraceback = remoteTraceback  # type: ignore[attr-defined]
            error.add_note(f"Traceback in the worker process:\n{remoteTraceback}")
        except Exception:
            pass
    return Failure(error)  # type: ignore[no-untyped-call]


def decodeReply(message: tuple[Any, ...]) -> tuple[str, Any, bool]:
    """
    A child's reply (see L{asynqueue._child}) as a L{ReplyHandler} takes
    it: C{(kind, body, exhausted)}, a failure rebuilt (L{rebuildFailure}).
    """
    if message[0] == "failure":
        return "failure", rebuildFailure(*message[2:]), False
    return message[0], message[2], message[3] if len(message) > 3 else True


class Requests:
    """
    The requests sent to a child process that still wait for their
    replies, by request ID. Reactor thread only.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._handlers: dict[int, ReplyHandler] = {}

    def add(self, handle: ReplyHandler) -> int:
        """
        @return: the ID of a new request, whose reply goes to C{handle}.
        """
        rid = next(self._ids)
        self._handlers[rid] = handle
        return rid

    def __contains__(self, rid: object) -> bool:
        return rid in self._handlers

    def discard(self, rid: int) -> None:
        """
        Forget request C{rid}: its reply, if any comes, is dropped.
        """
        self._handlers.pop(rid, None)

    def deliver(self, message: tuple[Any, ...]) -> None:
        """
        Hand a reply (C{(kind, rid, ...)}) to its request's handler.
        """
        handle = self._handlers.pop(message[1], None)
        if handle is None:
            return
        handle(*decodeReply(message))

    def failAll(self, text: str) -> None:
        """
        The child is gone: fail every request still waiting with a
        L{WorkerError} saying C{text}.
        """
        handlers, self._handlers = self._handlers, {}
        for handle in handlers.values():
            error = WorkerError(text)
            handle("failure", Failure(error), False)  # type: ignore[no-untyped-call]


def finishFromReply(
    task: Task[Any],
    kind: str,
    body: Any,
    exhausted: bool,
    deferator: Callable[[list[Any], bool], Deferator[Any]],
) -> None:
    """
    End C{task} with a child's reply: a failure, a pickled value, or
    (C{kind} C{"iter"}) the pickled first batch of an iteration, which
    C{deferator} turns into the parent's L{Deferator}.
    """
    if kind == "failure":
        task.fail(body)
        return
    try:
        result = pickle.loads(body)
    except Exception:
        task.fail(Failure())  # type: ignore[no-untyped-call]
        return
    if kind == "iter":
        task.finish(deferator(result, exhausted))
    else:
        task.finish(result)


def remoteDeferator(
    items: list[Any],
    exhausted: bool,
    *,
    ask: Callable[[ReplyHandler], object],
    close: Callable[[], object],
    alive: Callable[[], bool],
    gone: str,
    reactor: Any,
) -> Deferator[Any]:
    """
    The parent's side of an iteration open in a child process: each further
    batch is asked for (C{ask} sends the request, with its handler) only
    when the L{Deferator} wants it, so a paused consumer stops the fetching;
    an iteration ended early, or dropped, is closed in the child (C{close}).

    @param alive: whether the child that holds the iteration still runs.
    @param gone: what the L{WorkerError} says when it no longer does.
    """
    if exhausted:
        return Deferator(items)

    def fetch() -> Deferred[Batch[Any]]:
        if not alive():
            return fail(WorkerError(gone))
        d: Deferred[Batch[Any]] = Deferred()

        def handle(kind: str, body: Any, exhausted: bool) -> None:
            if kind == "failure":
                d.errback(body)
                return
            try:
                batch = pickle.loads(body)
            except Exception:
                d.errback(Failure())  # type: ignore[no-untyped-call]
                return
            d.callback((batch, exhausted))

        ask(handle)
        return d

    def stop() -> None:
        if alive():
            close()

    dr: Deferator[Any] = Deferator(items, fetch, stop=stop)
    # A dropped Deferator must not leave its iteration open in the child.
    # The finalizer may run in any thread: go through the reactor.
    finalizer = weakref.finalize(dr, reactor.callFromThread, stop)
    finalizer.atexit = False
    dr.whenDone().addCallback(lambda _: finalizer.detach())
    return dr


class ChildProcessProtocol(ProcessProtocol):
    """
    The parent's end of the pipes to a child that speaks framed pickles on
    its stdout (L{asynqueue._child}): whole messages go to L{received}, the
    child's stderr to L{logLine} a line at a time, and its end to L{ended}.
    Subclasses supply those three and L{clock}.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.ended: Deferred[None] = Deferred()
        self._errBuffer = b""
        self._reaper: Any = None

    @property
    def clock(self) -> IReactorTime:
        """
        For polling the child's exit.
        """
        raise NotImplementedError

    def received(self, message: Any) -> None:
        """
        One message from the child.
        """
        raise NotImplementedError

    def logLine(self, line: str) -> None:
        """
        One line the child wrote to stderr.
        """
        raise NotImplementedError

    def childEnded(self, reason: Failure) -> None:
        """
        The child is gone (C{ended} fires right after).
        """
        raise NotImplementedError

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        for message in decodeFrames(self.buffer):
            self.received(message)

    def errReceived(self, data: bytes) -> None:
        lines = (self._errBuffer + data).split(b"\n")
        self._errBuffer = lines.pop()
        for line in lines:
            self.logLine(line.decode("utf-8", "replace"))

    def childConnectionLost(self, childFD: int) -> None:
        if childFD == 1 and self._reaper is None:
            # Without SIGCHLD handling (a reactor not in the main thread)
            # nobody reaps the child: ask now and then until it is gone.
            self._reaper = self.clock.callLater(0.05, self._reap)

    def _reap(self) -> None:
        reap = getattr(self.transport, "reapProcess", None)
        if reap is not None:
            reap()
        if not self.ended.called:
            self._reaper = self.clock.callLater(0.05, self._reap)

    def processEnded(self, reason: Failure) -> None:
        if self._reaper is not None and self._reaper.active():
            self._reaper.cancel()
        if self._errBuffer:
            self.errReceived(b"\n")
        self.childEnded(reason)
        self.ended.callback(None)


class _ChildProtocol(ChildProcessProtocol):
    """
    The pipes to one L{ProcessWorker}'s child: its replies go to
    C{requests}, and its end to C{onEnded(protocol, reason)}.
    """

    def __init__(
        self,
        requests: Requests,
        onEnded: Callable[[_ChildProtocol, Failure], None],
        *,
        clock: IReactorTime,
        who: object,
    ) -> None:
        super().__init__()
        self.requests = requests
        self.onEnded = onEnded
        self._clock = clock
        #: Names the child in the log (its str is taken when a line comes).
        self.who = who
        #: Whether the child was told to run our __main__ (see _sendMain).
        self.mainSent = False

    @property
    def clock(self) -> IReactorTime:
        return self._clock

    def received(self, message: Any) -> None:
        self.requests.deliver(message)

    def logLine(self, line: str) -> None:
        # The child's stderr (and its stdout: see _child.main) goes to the log.
        log.info("{worker}: {line}", worker=self.who, line=line)

    def childEnded(self, reason: Failure) -> None:
        self.onEnded(self, reason)


@implementer(IWorker)
class ProcessWorker:
    """
    Runs tasks one at a time in a Python process of its own, started when
    the first task comes and stopped by L{stop}.

    A task that returns an iterator (unless called with C{raw=True}) gives
    a L{Deferator} whose batches are taken in the process; the worker takes
    other tasks between batches.

    Cancelling a running task, or its timeout, kills the process (with
    C{killOnInterrupt}, the default): the only way to stop Python code
    running elsewhere. The caller hears of it once the process has ended;
    the next task starts a new one. Iterations open in the killed process
    fail with L{WorkerError}.

    @cvar cQualified: The series every ProcessWorker runs besides its own
        C{series}: C{"process"} and C{"local"}, as in the original AsynQueue.
    """

    cQualified: tuple[str, ...] = ("process", "local")

    def __init__(
        self,
        series: Sequence[str] = (),
        *,
        batchSize: int = DEFAULT_BATCH,
        killOnInterrupt: bool = True,
        python: str | None = None,
        reactor: Any = None,
        name: str = "asynqueue-process",
    ) -> None:
        """
        @param series: The series this worker is qualified for.
        @param python: The Python executable; C{sys.executable} by default.
        @param reactor: Provides C{IReactorProcess} and C{IReactorTime}; the
            global reactor by default, resolved on first use.
        """
        self.iQualified = list(series)
        self.batchSize = checkBatchSize(batchSize)
        self.killOnInterrupt = killOnInterrupt
        self.python = python or sys.executable
        self.name = name
        self._reactor = reactor
        self.task: Task[Any] | None = None
        self._protocol: _ChildProtocol | None = None
        self._requests = Requests()
        self._stopping: Deferred[None] | None = None
        self._taskRequest = 0

    def __repr__(self) -> str:
        return f"<ProcessWorker {self.name} pid={self.pid}>"

    @property
    def reactor(self) -> Any:
        """
        The reactor that runs the process, resolved lazily.
        """
        if self._reactor is None:
            self._reactor = globalReactor()
        return self._reactor

    @property
    def clock(self) -> IReactorTime:
        """
        The reactor, as a clock.
        """
        return self.reactor  # type: ignore[no-any-return]

    @property
    def pid(self) -> int | None:
        """
        The process ID of the running child, if there is one.
        """
        if self._protocol is None or self._protocol.transport is None:
            return None
        return getattr(self._protocol.transport, "pid", None)

    # The child process -----------------------------------------------------

    def _start(self) -> _ChildProtocol:
        if self._protocol is not None:
            return self._protocol
        protocol = _ChildProtocol(
            self._requests, self._ended, clock=self.clock, who=self
        )
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
        # -P (Python 3.11+, so only for this interpreter): the current
        # directory doesn't come first on the child's sys.path, so it runs
        # this asynqueue even from a directory holding another.
        safePath = ["-P"] if self.python == sys.executable else []
        self.reactor.spawnProcess(
            protocol,
            self.python,
            [self.python, *safePath, "-m", "asynqueue._child"],
            env=env,
        )
        self._protocol = protocol
        # The child imports by name what the parent pickles by name.
        self._send(("init", list(sys.path)))
        return protocol

    def _sendMain(self, protocol: _ChildProtocol) -> None:
        # Once per child process: run our __main__ there (see _mainmodule).
        protocol.mainSent = True
        location = mainLocation()
        if location is not None:
            aliasMain()
            self._send(("main", location, list(sys.argv)))

    def _send(self, message: tuple[Any, ...]) -> None:
        assert self._protocol is not None and self._protocol.transport is not None
        self._protocol.transport.write(encode(message))

    def _request(self, message: tuple[Any, ...], handle: ReplyHandler) -> int:
        rid = self._requests.add(handle)
        self._send((message[0], rid, *message[1:]))
        return rid

    def _ended(self, protocol: _ChildProtocol, reason: Failure) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        text = reason.getErrorMessage()
        self._requests.failAll(f"the worker process of {self!r} ended: {text}")

    def _kill(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            # If it is already gone, processEnded is on its way.
            with contextlib.suppress(Exception):
                self._protocol.transport.signalProcess("KILL")

    # IWorker ---------------------------------------------------------------

    def run(self, task: Task[Any]) -> Deferred[None]:
        """
        Run C{task} in the process; see L{IWorker.run}.

        @raise RuntimeError: the worker was stopped.
        """
        if self._stopping is not None:
            raise RuntimeError(f"{self!r} is stopped")
        payload = payloadOrFail(task, pickleCall)
        if payload is None:
            return succeed(None)
        generation = self._start()
        if not generation.mainSent and b"__main__" in payload:
            # The call names something of the script being run (or merely
            # holds that string: then running the script is harmless).
            self._sendMain(generation)
        freed: Deferred[None] = Deferred()
        self.task = task
        rid = 0

        def handle(kind: str, body: Any, exhausted: bool) -> None:
            # Free the worker first, then deliver (as ThreadWorker does).
            self.task = None
            freed.callback(None)
            finishFromReply(
                task,
                kind,
                body,
                exhausted,
                lambda items, done: self._deferator(rid, items, done, generation),
            )

        rid = self._request(("call", payload, task.raw, self.batchSize), handle)
        self._taskRequest = rid
        if self.killOnInterrupt:
            task.onInterrupt(lambda reason: self._interrupt(rid))
        return freed

    def _interrupt(self, rid: int) -> None:
        # Reactor thread. Still running? Then end the process.
        if rid in self._requests:
            self._kill()

    def _deferator(
        self, iterID: int, items: list[Any], exhausted: bool, generation: object
    ) -> Deferator[Any]:
        return remoteDeferator(
            items,
            exhausted,
            ask=lambda handle: self._request(("next", iterID), handle),
            close=lambda: self._send(("close", iterID)),
            alive=lambda: self._protocol is generation,
            gone=f"the worker process of {self!r} has ended",
            reactor=self.reactor,
        )

    def stop(self) -> Deferred[None]:
        """
        Let the process finish what it was given, then end it.

        @return: fires when the process has ended (at once if none runs).
        """
        if self._stopping is None:
            protocol = self._protocol
            if protocol is None:
                self._stopping = succeed(None)
            else:
                # The child quits after what it was already sent.
                self._send(("quit",))
                self._stopping = Deferred()
                protocol.ended.chainDeferred(self._stopping)
        return follow(self._stopping)

    def crash(self) -> list[Task[Any]]:
        """
        Kill the process now; hand back the task it was running.
        """
        task, self.task = self.task, None
        if task is not None:
            # The queue gives it to another worker: don't fail it here.
            self._requests.discard(self._taskRequest)
        self._stopping = self._stopping or Deferred()
        protocol = self._protocol
        if protocol is None:
            if not self._stopping.called:
                self._stopping.callback(None)
        else:
            if not self._stopping.called:
                protocol.ended.chainDeferred(self._stopping)
            self._kill()
        return [task] if task is not None else []


class ProcessQueue(TaskQueue):
    """
    A task queue run by C{n} worker processes, one L{ProcessWorker} each.

    Calls are checked at L{call} time: one that can't be pickled is refused
    with a C{TypeError} naming the callable, and the queue goes on.
    """

    def __init__(
        self,
        n: int | None = None,
        *,
        batchSize: int = DEFAULT_BATCH,
        killOnInterrupt: bool = True,
        clock: IReactorTime | None = None,
        reactor: Any = None,
        name: str = "asynqueue-process",
        warn: bool | None = None,
        spew: bool | None = None,
        returnFailure: bool | None = None,
    ) -> None:
        """
        @param n: How many processes; the number of CPU cores by default.
        @param warn: The original's, deprecated: see L{TaskQueue}.
        @param spew: The original's, deprecated: see L{TaskQueue}.
        @param returnFailure: The original's, deprecated: see L{TaskQueue}.
        """
        if n is None:
            n = os.cpu_count() or 1
        checkNumber(
            n,
            "a ProcessQueue's n (processes)",
            integer=True,
            positive=True,
            typeError=ValueError,
        )
        super().__init__(clock=clock or reactor)
        # (Here, not through super(): the warnings point at our caller.)
        self._originalOptions(warn, spew, returnFailure)
        for i in range(n):
            self.attachWorker(
                ProcessWorker(
                    batchSize=batchSize,
                    killOnInterrupt=killOnInterrupt,
                    reactor=reactor,
                    name=f"{name}-{i}",
                )
            )

    def submit(self, task: Task[Any], *, timeout: float | None = None) -> Deferred[Any]:
        """
        Queue a task, pickled now so that the worker process gets the call
        as it was made.

        @raise TypeError: the call can't be pickled.
        """
        if self.isRunning() and not isinstance(task.payload, bytes):
            task.payload = pickleCall(task.f, task.args, task.kw)
        return super().submit(task, timeout=timeout)


__all__ = [
    "FRAME",
    "PROTOCOL",
    "ChildProcessProtocol",
    "ProcessQueue",
    "ProcessWorker",
    "ReplyHandler",
    "Requests",
    "decodeFrames",
    "decodeReply",
    "dumps",
    "encode",
    "failureReply",
    "finishFromReply",
    "payloadOrFail",
    "pickleCall",
    "remoteDeferator",
]
