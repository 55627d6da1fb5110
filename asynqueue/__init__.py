"""
AsynQueue: asynchronous task queueing with Twisted, threaded and multicore.

A L{TaskQueue} runs calls on its workers in priority order and gives you a
Deferred for each. Workers run them in the reactor (L{AsyncWorker}), in a
dedicated thread (L{ThreadWorker}), in another process (L{ProcessWorker}),
or on a server in another process or machine (C{asynqueue.wire}). A call
that returns an iterator gives a L{Deferator}, or writes its items to an
C{IConsumer} with backpressure (unless it returns L{AsIs}C{(iterator)}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._util import Waiters as Waiters
from ._util import checkNumber as checkNumber
from ._util import follow as follow
from ._util import globalReactor as globalReactor
from ._version import __version__ as __version__
from .deferator import Deferator as Deferator
from .delay import Delay as Delay
from .errors import AuthenticationError as AuthenticationError
from .errors import IterationStopped as IterationStopped
from .errors import OutcomeUnknown as OutcomeUnknown
from .errors import QueueError as QueueError
from .errors import QueueStopped as QueueStopped
from .errors import RemoteTaskError as RemoteTaskError
from .errors import ServerLost as ServerLost
from .errors import TaskTimeout as TaskTimeout
from .errors import UnknownSeries as UnknownSeries
from .errors import WorkerError as WorkerError
from .info import Info as Info
from .interfaces import IWorker as IWorker
from .lazy import lazyNames
from .lock import DeferredLock as DeferredLock
from .prefetch import Prefetcherator as Prefetcherator
from .producer import IterationProducer as IterationProducer
from .producer import ListConsumer as ListConsumer
from .producer import iteratorToProducer as iteratorToProducer
from .task import AsIs as AsIs
from .task import Task as Task
from .task import currentTask as currentTask
from .taskqueue import TaskQueue as TaskQueue
from .threads import ThreadQueue as ThreadQueue
from .tracker import DeferredTracker as DeferredTracker
from .workers import AsyncWorker as AsyncWorker
from .workers import ThreadWorker as ThreadWorker

if TYPE_CHECKING:
    from .process import ProcessQueue as ProcessQueue
    from .process import ProcessWorker as ProcessWorker

# Process workers (and the pickling and child-process code under them) load
# when a program first asks for them: most queues run in one process.
__getattr__, __dir__ = lazyNames(
    globals(),
    {"ProcessQueue": "asynqueue.process", "ProcessWorker": "asynqueue.process"},
    submodules=("process",),
)

__all__ = [
    "AsIs",
    "AsyncWorker",
    "AuthenticationError",
    "Deferator",
    "DeferredLock",
    "DeferredTracker",
    "Delay",
    "IWorker",
    "Info",
    "IterationProducer",
    "IterationStopped",
    "ListConsumer",
    "OutcomeUnknown",
    "Prefetcherator",
    "ProcessQueue",
    "ProcessWorker",
    "QueueError",
    "QueueStopped",
    "RemoteTaskError",
    "ServerLost",
    "Task",
    "TaskQueue",
    "TaskTimeout",
    "ThreadQueue",
    "ThreadWorker",
    "UnknownSeries",
    "Waiters",
    "WorkerError",
    "checkNumber",
    "currentTask",
    "follow",
    "globalReactor",
    "iteratorToProducer",
]
