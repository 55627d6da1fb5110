"""
The child side of a L{asynqueue.process.ProcessWorker}: a loop that reads
pickled requests from its stdin and writes pickled replies to its stdout.

Run as C{python -P -m asynqueue._child}. One request is handled at a time, in
the order received, in the child's main thread.

The wire: each message is a 4-byte big-endian length and a pickle of a
tuple whose first item names its kind.

Requests::
    ("init", sysPath)
    ("main", location, argv)                     (no reply; see _mainmodule)
    ("call", rid, pickledCall, raw, batchSize)   -> value | iter | failure
    ("next", rid, iterID)                        -> batch | failure
    ("close", iterID)                            (no reply)
    ("quit",)                                    (the child exits)

Replies::
    ("value", rid, pickledResult)
    ("iter", rid, pickledItems, exhausted)
    ("batch", rid, pickledItems, exhausted)
    ("failure", rid, pickledException or None, typeName, message, traceback)

Results and items are pickled on their own, so that one that can't be
pickled (or unpickled by the parent) spoils only its own request.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import signal
import struct
import sys
import traceback
import types
from collections.abc import Iterator
from typing import Any, BinaryIO

from ._mainmodule import loadMain
from .deferator import BatchTaker
from .info import callableName

FRAME = struct.Struct(">I")
PROTOCOL = pickle.HIGHEST_PROTOCOL

# twisted.persisted.styles (imported by twisted.web, among others) registers
# a global reducer for bound methods that breaks on classmethods, such as
# the one every SQLAlchemy Table holds; Python's own reduction is right.
_METHOD = types.MethodType
# The global reducers but that one, made again when more are registered.
_dispatch: tuple[int, dict[type, Any]] = (-1, {})


def dumps(obj: Any) -> bytes:
    """
    C{pickle.dumps} for crossing to another process, unaffected by reducers
    that other libraries registered globally for bound methods.
    """
    table = copyreg.dispatch_table
    if _METHOD not in table:
        # (The common case: nobody did, and pickle's own way is the same.)
        return pickle.dumps(obj, PROTOCOL)
    global _dispatch
    if _dispatch[0] != len(table):
        _dispatch = (len(table), {k: v for k, v in table.items() if k is not _METHOD})
    out = io.BytesIO()
    pickler = pickle.Pickler(out, PROTOCOL)
    pickler.dispatch_table = _dispatch[1]
    pickler.dump(obj)
    return out.getvalue()


#: What a message of the wire mostly holds: pickled by C{pickle.dumps}
#: itself, without the reducers L{dumps} keeps out (none of these use them).
_PLAIN = frozenset((bytes, str, int, bool, float, type(None)))


def encode(message: tuple[Any, ...]) -> bytes:
    """
    One message, framed for the wire.
    """
    if _PLAIN.issuperset(map(type, message)):
        # (The common case: request and reply bodies are pickled already.)
        data = pickle.dumps(message, PROTOCOL)
    else:
        data = dumps(message)
    return FRAME.pack(len(data)) + data


def decodeFrames(buffer: bytearray) -> Iterator[Any]:
    """
    Take every whole message from the front of C{buffer}, unpickled, leaving
    a partial one there for the next read.
    """
    size = FRAME.size
    while len(buffer) >= size:
        (n,) = FRAME.unpack_from(buffer)
        if len(buffer) < size + n:
            return
        message = pickle.loads(buffer[size : size + n])
        del buffer[: size + n]
        yield message


def typeName(e: BaseException) -> str:
    """
    The dotted name of an exception's type.
    """
    cls = type(e)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def failureReply(rid: int, e: BaseException) -> tuple[Any, ...]:
    """
    The reply telling the parent that request C{rid} raised C{e}: the
    exception itself if it survives pickling, and always its type name,
    message and traceback text.
    """
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    pickled: bytes | None
    try:
        pickled = pickle.dumps(e, PROTOCOL)
        # Some exceptions pickle but can't be rebuilt (odd __init__s).
        pickle.loads(pickled)
    except Exception:
        pickled = None
    return ("failure", rid, pickled, typeName(e), str(e), text)


class ChildServer:
    """
    Handles the requests of one child process, keeping the iterators that
    calls returned until they are exhausted or closed. Free of I/O, so that
    tests can run it in-process.
    """

    def __init__(self) -> None:
        self.iterators: dict[int, BatchTaker[Any]] = {}
        #: Why the parent's main module could not be run here, if it failed.
        self.mainError: str | None = None

    def handle(self, message: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """
        Handle one request. @return: the replies to send (none or one).
        """
        kind = message[0]
        if kind == "call":
            return [self._call(*message[1:])]
        if kind == "next":
            return [self._next(*message[1:])]
        if kind == "close":
            taker = self.iterators.pop(message[1], None)
            if taker is not None:
                taker.close()
            return []
        if kind == "init":
            for entry in reversed(message[1]):
                if entry not in sys.path:
                    sys.path.insert(0, entry)
            return []
        if kind == "main":
            try:
                loadMain(message[1], message[2])
            except BaseException as e:
                # The calls that need it say so (see _call).
                self.mainError = f"{typeName(e)}: {e}"
                traceback.print_exc()
            return []
        if kind == "quit":
            self.closeAll()
            return []
        raise ValueError(f"unknown request {kind!r}")

    def closeAll(self) -> None:
        """
        Close every open iterator (the child is quitting).
        """
        takers, self.iterators = list(self.iterators.values()), {}
        for taker in takers:
            try:
                taker.close()
            except Exception:
                traceback.print_exc()

    def _call(
        self, rid: int, pickledCall: bytes, raw: bool, batchSize: int
    ) -> tuple[Any, ...]:
        try:
            f, args, kw = pickle.loads(pickledCall)
        except Exception as e:
            why = f"{typeName(e)}: {e}"
            if self.mainError is not None:
                why += f" (running the main script here failed: {self.mainError})"
            error = TypeError(
                f"the call could not be unpickled in the worker process: {why}"
            )
            return failureReply(rid, error)
        try:
            result = self.invoke(rid, f, args, kw)
            if not raw and isinstance(result, Iterator):
                taker: BatchTaker[Any] = BatchTaker(result, batchSize)
                items, exhausted = taker.takeFinished()
                reply = ("iter", rid, self._pickle(items, f), exhausted)
                if not exhausted:
                    self.iterators[rid] = taker
                return reply
            return ("value", rid, self._pickle(result, f))
        except BaseException as e:
            # Even SystemExit: a task must not end the worker process.
            return failureReply(rid, e)

    def invoke(
        self, rid: int, f: Any, args: tuple[Any, ...], kw: dict[str, Any]
    ) -> Any:
        """
        Call C{f(*args, **kw)} for request C{rid}; a subclass may wrap the
        call (asynqueue.wire makes it interruptible).
        """
        return f(*args, **kw)

    def _next(self, rid: int, iterID: int) -> tuple[Any, ...]:
        taker = self.iterators.get(iterID)
        if taker is None:
            return ("batch", rid, pickle.dumps([], PROTOCOL), True)
        try:
            items, exhausted = taker.takeFinished()
            if exhausted:
                del self.iterators[iterID]
            return ("batch", rid, self._pickle(items, None), exhausted)
        except Exception as e:
            self.iterators.pop(iterID, None)
            return failureReply(rid, e)

    @staticmethod
    def _pickle(value: Any, f: Any) -> bytes:
        try:
            return pickle.dumps(value, PROTOCOL)
        except Exception as e:
            what = f"the result of {callableName(f)}" if f is not None else "an item"
            raise TypeError(
                f"{what} can't be sent back from the worker process: {e}"
            ) from e


def _readExactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    if len(data) < n:
        return None
    return data


def main() -> None:
    """
    The child's loop: serve requests until told to quit or stdin closes.
    """
    # The parent decides when this process ends: Ctrl-C in a terminal goes
    # to the whole process group, and the parent handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Keep private copies of the pipes and point fds 0/1 elsewhere, so that
    # a task that reads stdin or prints can't corrupt the wire.
    wireIn = os.fdopen(os.dup(0), "rb")
    wireOut = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    server = ChildServer()
    while True:
        header = _readExactly(wireIn, FRAME.size)
        if header is None:
            break
        body = _readExactly(wireIn, FRAME.unpack(header)[0])
        if body is None:
            break
        message = pickle.loads(body)
        for reply in server.handle(message):
            wireOut.write(encode(reply))
        wireOut.flush()
        if message[0] == "quit":
            break
    server.closeAll()
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main()
