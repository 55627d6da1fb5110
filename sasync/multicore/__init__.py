"""
Many processes for one broker (C{processes=N}): a pool of worker processes,
each running its own instance of the broker's class.

  - L{_pool}: the pool a broker submits its transactions to.
  - L{_workerprocess}: one worker process, seen from the parent.
  - L{_child}: the program a worker process runs
    (C{python -P -m sasync.multicore._child}).
  - L{_madewith}: what a broker was made with, for making it again there.

It imports the connection layer and L{sasync.transact}; the broker imports
it, never the other way.
"""

from __future__ import annotations

from ._madewith import recordArgsOfSubclass as recordArgsOfSubclass
from ._madewith import recordsArgs as recordsArgs
from ._pool import ProcessPool as ProcessPool
from ._pool import ResultSummary as ResultSummary
from ._pool import attach as attach
from ._pool import isMakingChildBroker as isMakingChildBroker
from ._pool import makingChildBroker as makingChildBroker

__all__ = [
    "ProcessPool",
    "ResultSummary",
    "attach",
    "isMakingChildBroker",
    "makingChildBroker",
    "recordArgsOfSubclass",
    "recordsArgs",
]
