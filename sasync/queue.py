"""
The original sAsync's C{sasync.queue} module is gone: brokers made with the
same URL and keywords share one engine and its connection threads by
themselves. Looking up its C{Factory} raises an error saying what to use.
See C{docs/originals.md}.
"""

from __future__ import annotations

from asynqueue.moved import movedNames

__getattr__ = movedNames(
    __name__,
    {},
    {
        "Factory": "brokers with the same URL and keywords share an engine by"
        " themselves; set the global engine with sasync.setup(url, ...) and"
        " reach a broker's engine as broker.engine",
    },
)
