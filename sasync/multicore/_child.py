"""
A worker process of a broker made with C{processes=N} (see
L{sasync.multicore}): run as C{python -P -m sasync.multicore._child}.

It runs a Twisted reactor in its main thread and makes its own instance of
the broker's class, which runs each transaction it is sent exactly as a
broker in one process would: in a worker thread of its own engine, with its
priorities, retries, cancellation and result handling. The reactor thread
here only reads requests and writes replies, so a cancel is heard while a
transaction runs.

The wire (stdin, stdout) is L{sasync.multicore._wire}'s: framed requests
and replies, read and written here.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import signal
import sys
from typing import Any

from sqlalchemy.engine import CursorResult
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from asynqueue.deferator import Batch, Deferator
from asynqueue.process import failureReply
from asynqueue.task import Task

from . import _pool as multicore
from ._wire import (
    BATCH,
    BATCH_END,
    CALL,
    CANCEL,
    CLOSE,
    FAILURE,
    HEADER,
    HEADER_SIZE,
    ITER,
    NEXT,
    PROTOCOL,
    QUIT,
    READY,
    RUN,
    START,
    VALUE,
)
from ._workerprocess import CPU_ENV

#: Distinct call options kept unpickled (see L{BrokerServer.call}).
OPTIONS_KEPT = 64

#: What most results are: no iteration, no Result to sum up.
_PLAIN = frozenset((type(None), bool, int, float, str, bytes, list, tuple, dict))

_unpack = HEADER.unpack_from
_pack = HEADER.pack
_loads = pickle.loads
_dumps = pickle.dumps


def nextBatch(dr: Deferator[Any]) -> Deferred[Batch[Any]]:
    """
    The next batch of C{dr}'s items: what it holds now, or else what it
    fetches next.
    """
    items = dr.takeBuffered()
    if items or dr.done:
        return succeed((items, dr.done))
    return dr.fetchMore().addCallback(lambda _: (dr.takeBuffered(), dr.done))


def portable(value: Any) -> Any:
    """
    What is sent back for C{value}: a result without rows becomes a
    L{multicore.ResultSummary}.
    """
    if not isinstance(value, CursorResult):
        return value

    def attempt(name: str) -> Any:
        try:
            return getattr(value, name)
        except Exception:
            return None

    return multicore.ResultSummary(
        attempt("rowcount"), attempt("inserted_primary_key"), attempt("lastrowid")
    )


def failureBody(rid: int, e: BaseException) -> bytes:
    """
    The body of the L{FAILURE} reply saying that request C{rid} raised C{e}
    (see L{asynqueue.process.failureReply}).
    """
    return _dumps(failureReply(rid, e)[2:], PROTOCOL)


class BrokerServer(Protocol):
    """
    Serves the parent's requests with this process's broker. Reactor
    thread only.
    """

    def __init__(self, reactor: Any, wireOut: int) -> None:
        """
        @param wireOut: The (blocking) file descriptor replies are written to.
        """
        self.reactor = reactor
        self.wireOut = wireOut
        self.buffer = bytearray()
        self.broker: Any = None
        self.calls: dict[int, Deferred[Any]] = {}
        self.iterations: dict[int, Deferator[Any]] = {}
        self.quitting = False
        self.outgoing: list[bytes] = []
        #: Per (method name, pickled call options): the transaction
        #: function it runs and the options. Most calls send a few.
        self.known: dict[tuple[str, bytes], tuple[Any, Any]] = {}
        # Bound once: each call's Deferred gets it.
        self._endedBound = self._ended
        # The end of this reactor turn: what send() queues goes out then.
        self._flushLater = functools.partial(reactor.callLater, 0, self.flush)
        # The broker's admission of calls, and its stats' begin(), once
        # the broker is made.
        self._site: Any = None
        self._begin: Any = None

    def send(self, kind: int, rid: int, body: bytes = b"") -> None:
        """
        Send one message to the parent. While other calls run here, it is
        queued: what is queued in one reactor turn goes out together at its
        end, in one system call. A reply with no other call running (nothing
        else to come this turn) goes out at once, without the turn's timer.
        """
        data = _pack(len(body), rid, kind) + body
        outgoing = self.outgoing
        if not outgoing and not self.calls:
            self.write(data)
            return
        outgoing.append(data)
        if len(outgoing) == 1:
            self._flushLater()

    def flush(self) -> None:
        """
        Write the queued messages now, blocking only while the parent has
        not read what came before. (The transport would register for
        writability and write a turn later.)
        """
        data = b"".join(self.outgoing)
        self.outgoing.clear()
        self.write(data)

    def write(self, data: bytes) -> None:
        """
        Write C{data} to the parent now, blocking only while it has not read
        what came before.
        """
        written = os.write(self.wireOut, data)
        if written != len(data):
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(self.wireOut, view) :]

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = len(buffer)
        pos = 0
        try:
            while end - pos >= HEADER_SIZE:
                size, rid, kind = _unpack(buffer, pos)
                start = pos + HEADER_SIZE
                if start + size > end:
                    break
                pos = start + size
                if kind == CALL:
                    # (The common request, without the call of handle.)
                    self.call(rid, buffer[start:pos])
                else:
                    self.handle(kind, rid, buffer[start:pos])
        finally:
            del buffer[:pos]

    def handle(self, kind: int, rid: int, body: bytes | bytearray) -> None:
        """
        Act on one request (see L{sasync.multicore._wire}).
        """
        if kind == CALL:
            self.call(rid, body)
        elif kind == NEXT:
            self.next(rid, _loads(body))
        elif kind == CANCEL:
            d = self.calls.get(rid)
            if d is not None:
                d.cancel()
        elif kind == CLOSE:
            dr = self.iterations.pop(rid, None)
            if dr is not None:
                dr.stop()
        elif kind == RUN:
            pickledCall, raw = _loads(body)
            self.run(rid, pickledCall, raw)
        elif kind == START:
            recipe, sysPath = _loads(body)
            self.start(rid, recipe, sysPath)
        elif kind == QUIT:
            self.quit()

    # Requests -----------------------------------------------------------------

    def start(self, rid: int, recipe: bytes, sysPath: list[str]) -> None:
        """
        Make this process's broker, and say when it runs.
        """
        for entry in reversed(sysPath):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        try:
            moduleName, qualname, args, kw = pickle.loads(recipe)
            cls: Any = importlib.import_module(moduleName)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            with multicore.makingChildBroker():
                self.broker = cls(*args, **kw)
            self._site = self.broker._calls
            self._begin = self._site.stats.begin
        except BaseException as e:
            self.send(FAILURE, rid, failureBody(rid, e))
            return

        def running(_: None) -> None:
            try:
                tables = pickle.dumps(self.broker._schema.tables, PROTOCOL)
            except Exception:
                tables = b""
            self.send(READY, rid, tables)

        self.broker.waitUntilRunning().addCallbacks(
            running, lambda f: self.send(FAILURE, rid, failureBody(rid, f.value))
        )

    def call(self, rid: int, body: bytes | bytearray) -> None:
        """
        Run a transaction, by method name.
        """
        try:
            name, args, kw, pickledOptions = _loads(body)
            known = self.known.get((name, pickledOptions))
            if known is None:
                known = self._learn(name, pickledOptions)
            f, options = known
            # The parent's record came as trace context headers: this
            # process's span of the call joins the parent's trace.
            record = self._begin(name, options.niceness, options.record)
            d = self._site.transact(self.broker, f, args, kw, options, name, record)
        except BaseException as e:
            self.send(FAILURE, rid, failureBody(rid, e))
            return
        self.calls[rid] = d
        d.addBoth(self._endedBound, rid, name)

    def _learn(self, name: str, pickledOptions: bytes) -> tuple[Any, Any]:
        # The transaction function of method name, and the options: kept
        # for the next calls unless the options are the call's own (they
        # carry its trace context).
        method = getattr(type(self.broker), name)
        f = getattr(method, "__sasyncTransaction__", method)
        options = pickle.loads(pickledOptions)
        known = (f, options)
        if options.record is None:
            if len(self.known) >= OPTIONS_KEPT:
                self.known.clear()
            self.known[name, pickledOptions] = known
        return known

    def run(self, rid: int, payload: bytes, raw: bool) -> None:
        """
        Run a plain call in one of the broker's worker threads
        (L{sasync.AccessBroker.deferToQueue}).
        """
        try:
            f, args, kw = pickle.loads(payload)
            d = self.broker._handle.submit(Task(f, args, kw, raw=raw))
        except BaseException as e:
            self.send(FAILURE, rid, failureBody(rid, e))
            return
        self.calls[rid] = d
        d.addBoth(self._endedBound, rid, None)

    def _ended(self, result: Any, rid: int, name: str | None) -> None:
        # Call rid ended with result: reply. (name: the method's, None for
        # a plain call; only a message needs it.)
        calls = self.calls
        calls.pop(rid, None)
        cls = result.__class__
        if cls is Failure:
            self.fail(rid, result)
            return
        if cls not in _PLAIN:
            if isinstance(result, Deferator):
                nextBatch(result).addCallbacks(
                    lambda batch: self.reply(rid, ITER, batch, name, result),
                    lambda f: self.fail(rid, f),
                )
                return
            if isinstance(result, CursorResult):
                result = portable(result)
        try:
            pickled = _dumps(result, PROTOCOL)
        except Exception as e:
            error = TypeError(
                f"{self._what(name)} can't be sent back from the worker process: {e}"
            )
            self.send(FAILURE, rid, failureBody(rid, error))
            return
        # (send(), inlined: this runs per call.)
        data = _pack(len(pickled), rid, VALUE) + pickled
        outgoing = self.outgoing
        if not outgoing and not calls:
            self.write(data)
            return
        outgoing.append(data)
        if len(outgoing) == 1:
            self._flushLater()

    def _what(self, name: str | None) -> str:
        # What a message calls the result of a call of method name.
        if name is None:
            return "the result"
        return f"the result of {type(self.broker).__name__}.{name}"

    def next(self, rid: int, iterID: int) -> None:
        """
        Send the next batch of iteration C{iterID}.
        """
        dr = self.iterations.get(iterID)
        if dr is None:
            self.send(BATCH_END, rid, pickle.dumps([], PROTOCOL))
            return
        nextBatch(dr).addCallbacks(
            lambda batch: self.reply(rid, BATCH, batch, "", dr, iterID),
            lambda f: self.fail(rid, f, iterID),
        )

    def reply(
        self,
        rid: int,
        kind: int,
        batch: Batch[Any],
        name: str | None,
        dr: Deferator[Any],
        iterID: int | None = None,
    ) -> None:
        """
        Send a batch of an iteration: its first (C{kind} L{ITER}; C{name},
        the method's, names the result in a message), or a later one
        (L{BATCH}).
        """
        items, exhausted = batch
        key = rid if iterID is None else iterID
        try:
            pickled = pickle.dumps(items, PROTOCOL)
        except Exception as e:
            dr.stop()
            self.iterations.pop(key, None)
            what = self._what(name) if kind == ITER else "a row"
            error = TypeError(f"{what} can't be sent back from the worker process: {e}")
            self.send(FAILURE, rid, failureBody(rid, error))
            return
        if exhausted:
            self.iterations.pop(key, None)
        elif kind == ITER:
            self.iterations[key] = dr
        # (The _END kinds follow their kinds.)
        self.send(kind + 1 if exhausted else kind, rid, pickled)

    def fail(self, rid: int, failure: Failure, iterID: int | None = None) -> None:
        """
        Tell the parent that request C{rid} failed.
        """
        if iterID is not None:
            self.iterations.pop(iterID, None)
        assert failure.value is not None
        self.send(FAILURE, rid, failureBody(rid, failure.value))

    # Ending -------------------------------------------------------------------

    def quit(self) -> None:
        """
        Stop open iterations, shut the broker down, end the process.
        """
        if self.quitting:
            return
        self.quitting = True
        iterations, self.iterations = list(self.iterations.values()), {}
        for dr in iterations:
            dr.stop()
        d = self.broker.shutdown() if self.broker is not None else succeed(None)
        d.addBoth(self.stop)

    def stop(self, _: object = None) -> None:
        """
        Send what is queued, and stop the reactor.
        """
        if self.outgoing:
            self.flush()
        self.reactor.stop()

    def connectionLost(self, reason: Failure | None = None) -> None:
        # The parent is gone (or closed our stdin): quit.
        self.quit()


def keepToCPU(cpu: str | None) -> None:
    """
    Keep this process on CPU C{cpu} (the parent's choice; see
    L{sasync.multicore._pool.workerCPUs}), if given: called before any
    thread starts, so that every thread it starts stays there too.
    """
    setAffinity = getattr(os, "sched_setaffinity", None)
    if cpu is None or setAffinity is None:
        return
    try:
        setAffinity(0, {int(cpu)})
    except (OSError, ValueError) as e:
        # (The CPU went away meanwhile, or the set was narrowed: run anywhere.)
        print(f"worker process: not kept on CPU {cpu}: {e}", file=sys.stderr)


def main() -> None:
    """
    Serve the parent until told to quit or stdin closes.
    """
    # The parent decides when this process ends: Ctrl-C in a terminal goes
    # to the whole process group, and the parent handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keepToCPU(os.environ.pop(CPU_ENV, None))
    # Keep private copies of the pipes and point fds 0/1 elsewhere, so that
    # a transaction that reads stdin or prints can't corrupt the wire.
    wireIn, wireOut = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)

    from twisted.internet import reactor, stdio
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    # Warnings and worse go to stderr, which the parent logs.
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    server = BrokerServer(reactor, wireOut)
    # Requests come through the reactor; replies go straight to wireOut.
    quiet = os.open(os.devnull, os.O_WRONLY)
    stdio.StandardIO(  # type: ignore[no-untyped-call,call-arg]
        server, stdin=wireIn, stdout=quiet, reactor=reactor
    )
    reactor.run()
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main()
