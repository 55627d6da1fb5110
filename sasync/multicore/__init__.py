"""
Many processes for one broker (C{processes=N}): a pool of worker processes,
each running its own instance of the broker's class.

  - L{_pool}: the pool a broker submits its transactions to.
  - L{_workerprocess}: one worker process, seen from the parent.
  - L{_child}: the program a worker process runs
    (C{python -P -m sasync.multicore._child}).
  - L{_wire}: the framed requests and replies between them.
  - L{_madewith}: what a broker was made with, for making it again there.

It imports the connection layer and L{sasync.transact}; the broker imports
it, never the other way.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from asynqueue.lazy import lazyNames

from ._madewith import recordArgsOfSubclass as recordArgsOfSubclass
from ._madewith import recordsArgs as recordsArgs

if TYPE_CHECKING:
    from ._pool import ProcessPool as ProcessPool
    from ._pool import ResultSummary as ResultSummary
    from ._pool import attach as attach
    from ._pool import makingChildBroker as makingChildBroker

# The pool (and asynqueue's process workers under it) is imported only by a
# broker made with processes=N, and by a worker process.
__getattr__, __dir__ = lazyNames(
    globals(),
    {
        "ProcessPool": "sasync.multicore._pool",
        "ResultSummary": "sasync.multicore._pool",
        "attach": "sasync.multicore._pool",
        "makingChildBroker": "sasync.multicore._pool",
    },
)


def isMakingChildBroker() -> bool:
    """
    Whether the broker being made is a worker process's own (see
    L{makingChildBroker}).
    """
    # Only a worker process makes one, and it has imported the pool.
    pool = sys.modules.get(f"{__name__}._pool")
    return pool is not None and bool(pool.isMakingChildBroker())


__all__ = [
    "ProcessPool",
    "ResultSummary",
    "attach",
    "isMakingChildBroker",
    "makingChildBroker",
    "recordArgsOfSubclass",
    "recordsArgs",
]
