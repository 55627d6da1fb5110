"""
The original sAsync's C{sasync.selex} module is gone: C{broker.selex(...)}
yields the placeholder (a L{sasync.statements.SelectHolder}). See
C{docs/originals.md}.
"""

from __future__ import annotations

from asynqueue.moved import movedNames

__getattr__ = movedNames(
    __name__,
    {},
    {
        "SelectAndResultHolder": "use broker.selex(...), which yields a"
        " sasync.statements.SelectHolder",
    },
)
