"""
The original AsynQueue's C{asynqueue.base} module, deprecated: write
C{from asynqueue import TaskQueue}. See C{docs/originals.md}.
"""

from __future__ import annotations

from .moved import movedNames

__getattr__ = movedNames(
    __name__,
    {"TaskQueue": "asynqueue.TaskQueue"},
    {
        name: "the queue's internals are private; use TaskQueue's methods"
        " (call, update, attachWorker, pending, whenIdle)"
        for name in ("Priority", "LoadInfoProducer", "Queue")
    },
)
