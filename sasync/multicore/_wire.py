"""
The wire between a multicore broker's parent and its worker processes (see
L{sasync.multicore}): the parent writes requests to a process's stdin, the
process writes replies to its stdout.

Each message is a frame: a fixed header, L{HEADER} (the body's length, the
request ID, the kind), then the body. The header is read without
unpickling anything, so a call's reply reaches its caller with one
unpickling, of the result itself; and a result that can't be unpickled
spoils only its own call.

Requests (body)::
    START  rid  pickle((recipe, sysPath))   -> READY | FAILURE
    CALL   rid  pickle((methodName, args, kw, pickledOptions))
                                            -> VALUE | ITER[_END] | FAILURE
    RUN    rid  pickle((pickledCall, raw))  -> VALUE | ITER[_END] | FAILURE
    NEXT   rid  pickle(iterID)              -> BATCH[_END] | FAILURE
    CLOSE  iterID  (empty)                  (no reply)
    CANCEL rid of the call  (empty)         (the call's reply says how it ended)
    QUIT   0  (empty)                       (shut the broker down, exit)

Replies (body)::
    READY      pickled tables, or empty
    VALUE      pickle(result)
    ITER       pickle(first batch of items); more to come (iterID: the rid)
    ITER_END   pickle(items): the whole iteration
    BATCH      pickle(items); more to come
    BATCH_END  pickle(items): the last batch
    FAILURE    pickle((pickledException or None, typeName, message, traceback))

A call's request ID is made by the parent's pool when the call is made
(its request is framed then, whole); every request ID is unique within a
pool, so a process's calls and other requests never share one.
"""

from __future__ import annotations

import struct

from asynqueue.process import PROTOCOL as PROTOCOL

#: Body length, request ID, kind.
HEADER = struct.Struct(">IQB")
HEADER_SIZE = HEADER.size

# Requests.
START = 1
CALL = 2
RUN = 3
NEXT = 4
CLOSE = 5
CANCEL = 6
QUIT = 7

# Replies.
READY = 16
VALUE = 17
ITER = 18
ITER_END = 19
BATCH = 20
BATCH_END = 21
FAILURE = 22

_pack = HEADER.pack


def frame(kind: int, rid: int, body: bytes = b"") -> bytes:
    """
    One message, framed for the wire.
    """
    return _pack(len(body), rid, kind) + body


__all__ = [
    "BATCH",
    "BATCH_END",
    "CALL",
    "CANCEL",
    "CLOSE",
    "FAILURE",
    "HEADER",
    "HEADER_SIZE",
    "ITER",
    "ITER_END",
    "NEXT",
    "PROTOCOL",
    "QUIT",
    "READY",
    "RUN",
    "START",
    "VALUE",
    "frame",
]
