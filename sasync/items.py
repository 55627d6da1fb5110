"""
The original sAsync's C{sasync.items} module, deprecated: write C{from
sasync import Items, Missing}. See C{docs/originals.md}.
"""

from __future__ import annotations

from asynqueue.moved import movedNames

__getattr__ = movedNames(
    __name__,
    {"Items": "sasync.Items", "Missing": "sasync.Missing"},
    {"Transactor": "the store's broker is internal; use Items' methods"},
)
