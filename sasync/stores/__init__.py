"""
Persistent stores on a database, each run by a broker of its own:
L{Items} (a dict of one table's rows), L{PersistentArray} and
L{PersistentDict}, with their storage (L{_storage}, L{_store}), keys
(L{_keys}), earlier layouts (L{_layouts}, L{_py2hash}) and write-behind
(L{_writes}).

The stores sit on top of L{sasync.broker} and L{sasync.transact}; nothing
below imports them.
"""

from __future__ import annotations

from ._py2hash import originalHash as originalHash
from .items import Items as Items
from .items import Missing as Missing
from .parray import PersistentArray as PersistentArray
from .pdict import NotPreloaded as NotPreloaded
from .pdict import PersistentDict as PersistentDict

__all__ = [
    "Items",
    "Missing",
    "NotPreloaded",
    "PersistentArray",
    "PersistentDict",
    "originalHash",
]
