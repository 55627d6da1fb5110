"""
Remote workers: a L{WireWorker} runs the tasks of a
L{TaskQueue<asynqueue.taskqueue.TaskQueue>} on a L{WireServer} in another
process or machine, over Twisted AMP, with TLS and a shared secret.

Start a server with C{python -m asynqueue.wire serve --port P --interface
ADDRESS --secret-file F} (or the secret in C{ASYNQUEUE_WIRE_SECRET}), then
attach workers::

    queue = TaskQueue()
    queue.attachWorker(WireWorker("tcp:10.0.0.2:8790", secret=secret))
    result = await queue.call(mymodule.crunch, data)

A task is a callable importable by name on the server. A cancelled (or
timed out) task is stopped on the server where Python allows it: its
thread gets L{TaskInterrupted} at its next Python instruction (code
blocked in C gets it when it comes back to Python), and it may check
C{currentTask().stopRequested} itself. See C{docs/remote.md}.
"""

from __future__ import annotations

from ..errors import AuthenticationError as AuthenticationError
from ..errors import RemoteTaskError as RemoteTaskError
from ..errors import ServerLost as ServerLost
from ._calls import idempotent as idempotent
from ._interrupt import TaskInterrupted as TaskInterrupted
from ._queue import WireQueue as WireQueue
from ._server import WireServer as WireServer
from ._worker import WireWorker as WireWorker

__all__ = [
    "AuthenticationError",
    "RemoteTaskError",
    "ServerLost",
    "TaskInterrupted",
    "WireQueue",
    "WireServer",
    "WireWorker",
    "idempotent",
]
