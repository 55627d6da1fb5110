"""
A worker process of a broker made with C{processes=N} (see
L{sasync.multicore}): run as C{python -P -m sasync.multicore._child}.

It runs a Twisted reactor in its main thread and makes its own instance of
the broker's class, which runs each transaction it is sent exactly as a
broker in one process would: in a worker thread of its own engine, with its
priorities, retries, cancellation and result handling. The reactor thread
here only reads requests and writes replies, so a cancel is heard while a
transaction runs.

The wire (stdin, stdout): each message is a 4-byte big-endian length and a
pickle of a tuple whose first item names its kind.

Requests::
    ("start", rid, recipe, sysPath)      -> ready | failure
    ("call", rid, pickledCall, pickledOptions)
                                         -> value | iter | failure
    ("run", rid, pickledCall, raw)       -> value | iter | failure
    ("next", rid, iterID)                -> batch | failure
    ("close", iterID)                    (no reply)
    ("cancel", rid)                      (the call's reply says how it ended)
    ("quit",)                            (shut the broker down, exit)

Replies::
    ("ready", rid, pickledTables or None)
    ("value", rid, pickledResult)
    ("iter", rid, pickledItems, exhausted)     (iterID is the call's rid)
    ("batch", rid, pickledItems, exhausted)
    ("failure", rid, pickledException or None, typeName, message, traceback)
"""

from __future__ import annotations

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
from asynqueue.process import PROTOCOL, decodeFrames, encode, failureReply
from asynqueue.task import Task

from . import _pool as multicore

#: Distinct call options kept unpickled (see L{BrokerServer.call}).
OPTIONS_KEPT = 64


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
        #: Per method name: the transaction function it runs.
        self.methods: dict[str, Any] = {}
        #: Call options by their pickle: most calls send the same few.
        self.options: dict[bytes, Any] = {}

    def send(self, message: tuple[Any, ...]) -> None:
        """
        Send one message to the parent. While other calls run here, it is
        queued: what is queued in one reactor turn goes out together at its
        end, in one system call. A reply with no other call running (nothing
        else to come this turn) goes out at once, without the turn's timer.
        """
        data = encode(message)
        if not self.outgoing and not self.calls:
            self.write(data)
            return
        self.outgoing.append(data)
        if len(self.outgoing) == 1:
            self.reactor.callLater(0, self.flush)

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
        view = memoryview(data)
        while view:
            view = view[os.write(self.wireOut, view) :]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        for message in decodeFrames(self.buffer):
            self.handle(message)

    def handle(self, message: tuple[Any, ...]) -> None:
        """
        Act on one request.
        """
        kind = message[0]
        if kind == "call":
            self.call(message[1], message[2], message[3])
        elif kind == "next":
            self.next(message[1], message[2])
        elif kind == "cancel":
            d = self.calls.get(message[1])
            if d is not None:
                d.cancel()
        elif kind == "close":
            dr = self.iterations.pop(message[1], None)
            if dr is not None:
                dr.stop()
        elif kind == "run":
            self.run(message[1], message[2], message[3])
        elif kind == "start":
            self.start(message[1], message[2], message[3])
        elif kind == "quit":
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
        except BaseException as e:
            self.send(failureReply(rid, e))
            return

        def running(_: None) -> None:
            try:
                tables: bytes | None = pickle.dumps(
                    self.broker._schema.tables, PROTOCOL
                )
            except Exception:
                tables = None
            self.send(("ready", rid, tables))

        self.broker.waitUntilRunning().addCallbacks(
            running, lambda f: self.send(failureReply(rid, f.value))
        )

    def call(self, rid: int, payload: bytes, pickledOptions: bytes) -> None:
        """
        Run a transaction, by method name.
        """
        try:
            name, args, kw = pickle.loads(payload)
            options = self.options.get(pickledOptions)
            if options is None:
                options = pickle.loads(pickledOptions)
                if options.record is None:
                    if len(self.options) >= OPTIONS_KEPT:
                        self.options.clear()
                    self.options[pickledOptions] = options
            f = self.methods.get(name)
            if f is None:
                method = getattr(type(self.broker), name)
                f = self.methods[name] = getattr(
                    method, "__sasyncTransaction__", method
                )
            # The parent's record came as trace context headers: this
            # process's span of the call joins the parent's trace.
            calls = self.broker._calls
            record = calls.stats.begin(name, options.niceness, options.record)
            d = calls.transact(self.broker, f, args, kw, options, name, record)
        except BaseException as e:
            self.send(failureReply(rid, e))
            return
        self.watch(rid, d, f"the result of {type(self.broker).__name__}.{name}")

    def run(self, rid: int, payload: bytes, raw: bool) -> None:
        """
        Run a plain call in one of the broker's worker threads
        (L{sasync.AccessBroker.deferToQueue}).
        """
        try:
            f, args, kw = pickle.loads(payload)
            d = self.broker._handle.submit(Task(f, args, kw, raw=raw))
        except BaseException as e:
            self.send(failureReply(rid, e))
            return
        self.watch(rid, d, "the result")

    def watch(self, rid: int, d: Deferred[Any], what: str) -> None:
        """
        Reply to call C{rid} when C{d} fires.
        """
        self.calls[rid] = d

        def done(value: Any) -> None:
            del self.calls[rid]
            if isinstance(value, Deferator):
                nextBatch(value).addCallbacks(
                    lambda batch: self.reply(rid, "iter", batch, what, value),
                    lambda f: self.fail(rid, f),
                )
                return
            try:
                pickled = pickle.dumps(portable(value), PROTOCOL)
            except Exception as e:
                error = TypeError(
                    f"{what} can't be sent back from the worker process: {e}"
                )
                self.send(failureReply(rid, error))
                return
            self.send(("value", rid, pickled))

        def failed(failure: Failure) -> None:
            self.calls.pop(rid, None)
            self.fail(rid, failure)

        d.addCallbacks(done, failed)

    def next(self, rid: int, iterID: int) -> None:
        """
        Send the next batch of iteration C{iterID}.
        """
        dr = self.iterations.get(iterID)
        if dr is None:
            self.send(("batch", rid, pickle.dumps([], PROTOCOL), True))
            return
        nextBatch(dr).addCallbacks(
            lambda batch: self.reply(rid, "batch", batch, "a row", dr, iterID),
            lambda f: self.fail(rid, f, iterID),
        )

    def reply(
        self,
        rid: int,
        kind: str,
        batch: Batch[Any],
        what: str,
        dr: Deferator[Any],
        iterID: int | None = None,
    ) -> None:
        """
        Send a batch of an iteration (its first, C{iter}, or a later one).
        """
        items, exhausted = batch
        key = rid if iterID is None else iterID
        try:
            pickled = pickle.dumps(items, PROTOCOL)
        except Exception as e:
            dr.stop()
            self.iterations.pop(key, None)
            error = TypeError(f"{what} can't be sent back from the worker process: {e}")
            self.send(failureReply(rid, error))
            return
        if exhausted:
            self.iterations.pop(key, None)
        elif kind == "iter":
            self.iterations[key] = dr
        self.send((kind, rid, pickled, exhausted))

    def fail(self, rid: int, failure: Failure, iterID: int | None = None) -> None:
        """
        Tell the parent that request C{rid} failed.
        """
        if iterID is not None:
            self.iterations.pop(iterID, None)
        assert failure.value is not None
        self.send(failureReply(rid, failure.value))

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


def main() -> None:
    """
    Serve the parent until told to quit or stdin closes.
    """
    # The parent decides when this process ends: Ctrl-C in a terminal goes
    # to the whole process group, and the parent handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
