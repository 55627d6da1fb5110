"""
The original sAsync's C{sasync.database} module, deprecated: write C{from
sasync import AccessBroker, transact, wait}. Each name looked up here warns
and gives the real object; the original's helpers that did not come back
raise an error saying what to use. See C{docs/originals.md}.
"""

from __future__ import annotations

from asynqueue.moved import movedNames

__getattr__ = movedNames(
    __name__,
    {name: f"sasync.{name}" for name in ("AccessBroker", "transact", "wait")},
    {
        "SA": "write import sqlalchemy as SA",
        "transaction": "decorate the method with @transact",
        "nextFromRP": "a transaction returning a Result gives a Deferator of"
        " its rows (or a list with asList=True)",
        "isNested": "a transaction called from inside one runs in it by itself",
    },
)
