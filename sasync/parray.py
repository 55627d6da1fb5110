"""
The original sAsync's C{sasync.parray} module, deprecated: write C{from
sasync import PersistentArray}. See C{docs/originals.md}.
"""

from __future__ import annotations

from asynqueue.moved import movedNames

__getattr__ = movedNames(
    __name__,
    {"PersistentArray": "sasync.PersistentArray"},
    {"Transactor": "the store's broker is internal; use PersistentArray's methods"},
)
