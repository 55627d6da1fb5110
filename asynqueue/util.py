"""
The original AsynQueue's C{asynqueue.util} module, deprecated: its public
classes now come from L{asynqueue} itself (C{from asynqueue import
DeferredTracker}); its helpers are gone, each with a message saying what to
use instead. See C{docs/originals.md}.
"""

from __future__ import annotations

from .moved import movedNames

__getattr__ = movedNames(
    __name__,
    {
        "DeferredTracker": "asynqueue.DeferredTracker",
        "DeferredLock": "asynqueue.DeferredLock",
    },
    {
        "o2p": "use pickle.dumps",
        "p2o": "use pickle.loads",
        "callAfterDeferred": "chain on the Deferred itself:"
        " d.addCallback(lambda _: f(*args, **kw))",
        "killProcess": "a ProcessQueue stops its processes in shutdown(); for"
        " processes of your own use os.kill",
        "ProcessProtocol": "use twisted.internet.protocol.ProcessProtocol",
        "CallRunner": "workers run calls themselves; use a ThreadWorker,"
        " AsyncWorker or ProcessWorker",
    },
)
