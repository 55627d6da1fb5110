"""
L{PersistentArray}: a sparse three-dimensional array of Python objects,
kept in a database table::

    a = PersistentArray("board", "sqlite:///game.db")
    a.set(0, 0, 0, "rook")
    piece = yield a.get(0, 0, 0)        # "rook"
    empty = yield a.get(5, 5, 0)        # None: never set
    yield a.shutdown()

Use it as a 2-D array with a constant third index. Values are pickled:
only your application may write the table (unpickling runs code).
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as SA
from twisted.internet.defer import Deferred

from ._storage import StoreBroker, dumpValue, loadValue
from ._store import Store

Index = tuple[int, int, int]

MIN_INDEX: Final = -(2**63)
MAX_INDEX: Final = 2**63 - 1
"""
Each index is an int in a signed 64-bit range (a BIGINT column).
"""


def checkIndex(x: object, y: object, z: object) -> Index:
    """
    @return: C{(x, y, z)}.
    @raise TypeError: an index is not an int (C{bool} is not one here).
    @raise ValueError: an index is outside L{MIN_INDEX}..L{MAX_INDEX}.
    """
    for i in (x, y, z):
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"array indexes must be int, not {type(i).__name__}: {i!r}")
        if not MIN_INDEX <= i <= MAX_INDEX:
            raise ValueError(f"array index {i} is outside the signed 64-bit range")
    return (x, y, z)  # type: ignore[return-value]


class ArrayBroker(StoreBroker[Index]):
    """
    The transactions of a L{PersistentArray}: one row per element set.
    """

    tableName = "sasync_array"

    def keyColumns(self) -> list[SA.Column[Any]]:
        return [
            SA.Column(name, SA.BigInteger, primary_key=True, autoincrement=False)
            for name in ("x", "y", "z")
        ]

    def keyRow(self, key: Index) -> dict[str, Any]:
        x, y, z = key
        return {"x": x, "y": y, "z": z}

    def rowKey(self, row: Any) -> Index:
        return (int(row.x), int(row.y), int(row.z))


class PersistentArray(Store[Index]):
    """
    A sparse 3-D array of picklable objects, one group of a database table:
    C{PersistentArray(ID, url=None, *, writeRetryTime=60, **kw)}, as
    L{Store.__init__<sasync.stores._store.Store.__init__>}.

    Every method returns a Deferred. Bad indexes and unpicklable values
    raise at the call (C{TypeError}/C{ValueError}) and change nothing.
    Writes run at a lower priority than reads, in issue order; a C{get}
    reflects every write issued before it.
    """

    brokerClass: type[ArrayBroker] = ArrayBroker

    def __repr__(self) -> str:
        return f"<PersistentArray {self.ID!r}>"

    def get(self, x: int, y: int, z: int) -> Deferred[Any]:
        """
        @return: a Deferred firing with element C{(x, y, z)}, or C{None}
            where none is set.
        """
        self._checkThread("get")
        d = self._readOne(checkIndex(x, y, z))
        return d.addCallback(lambda data: None if data is None else loadValue(data))

    def set(self, x: int, y: int, z: int, value: object) -> Deferred[None]:
        """
        Set element C{(x, y, z)} to C{value} (pickled now).

        @return: a Deferred that fires when the write has landed.
        @raise TypeError: a bad index, or C{value} cannot be pickled.
        """
        self._checkThread("set")
        key = checkIndex(x, y, z)
        return self._seq.put([(key, dumpValue(key, value))])

    def delete(self, x: int, y: int, z: int) -> Deferred[None]:
        """
        Unset element C{(x, y, z)} (nothing happens if it is not set).

        @return: a Deferred that fires when the write has landed.
        """
        self._checkThread("delete")
        return self._seq.put([(checkIndex(x, y, z), None)])

    def clear(self) -> Deferred[None]:
        """
        Unset every element of this array (other arrays are untouched).

        @return: a Deferred that fires when the write has landed.
        """
        self._checkThread("clear")
        return self._seq.clear()


__all__ = ["ArrayBroker", "PersistentArray"]
