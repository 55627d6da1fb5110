"""
L{PersistentArray}: a sparse three-dimensional array of Python objects,
kept in a database table::

    a = PersistentArray("board", "sqlite:///game.db")
    a.set(0, 0, 0, "rook")
    piece = yield a.get(0, 0, 0)        # "rook"
    empty = yield a.get(5, 5, 0)        # None: never set
    yield a.shutdown()

Use it as a 2-D array with a constant third index. Coordinates are any
hashable keys of L{sasync.stores._keys}: ints, str, tuples, ... (equal
coordinates, by C{==}, are one element). Values are pickled: only your
application may write the table (unpickling runs code).

Earlier tables are upgraded at start-up (see L{sasync.stores._layouts}):
this sAsync's first C{sasync_array} (BIGINT coordinates), and the original
sAsync 0.9's (C{group_id}, C{x}, C{y}, C{z} the C{hash()} of the group and
coordinates, whose int coordinates and groups are the ints themselves).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import sqlalchemy as SA
from sqlalchemy.engine import Row
from twisted.internet.defer import Deferred

from ._keys import canonicalText, decodeKey, typedText
from ._layouts import OldLayout
from ._storage import (
    MAX_NAME_LENGTH,
    StoreBroker,
    digest,
    dumpValue,
    groupKey,
    loadValue,
    textType,
)
from ._store import Store

Index = tuple[Hashable, Hashable, Hashable]


def checkIndex(x: object, y: object, z: object) -> Index:
    """
    @return: C{(x, y, z)}.
    @raise TypeError: a coordinate is unhashable or has no stable stored
        form (the message names it).
    @raise ValueError: a coordinate holds a NaN, or is longer than
        L{MAX_NAME_LENGTH} characters stored.
    """
    for i in (x, y, z):
        if len(typedText(i)) > MAX_NAME_LENGTH:
            raise ValueError(
                f"array coordinate of type {type(i).__name__} is longer than"
                f" {MAX_NAME_LENGTH} characters stored"
            )
    return (x, y, z)


def _cellRow(group: str, x: int, y: int, z: int, value: Any) -> dict[str, Any]:
    # A row of int coordinates, from an earlier layout.
    key = (int(x), int(y), int(z))
    return {
        "group_key": group,
        **ArrayBroker.keyRow(key),
        **ArrayBroker.extraRow(key),
        "value": bytes(value),
    }


def _fromFirst(row: Row[Any]) -> dict[str, Any]:
    return _cellRow(row.group_key, row.x, row.y, row.z, row.value)


def _fromOriginal(row: Row[Any]) -> dict[str, Any]:
    # The original stored hash(ID) and hash() of each coordinate.
    return _cellRow(groupKey(int(row.group_id)), row.x, row.y, row.z, row.value)


FIRST_ARRAY = OldLayout(
    "sAsync's first PersistentArray (int coordinates)",
    frozenset({"group_key", "x", "y", "z", "value"}),
    "v1",
    _fromFirst,
)
"""
This sAsync's first C{sasync_array}: C{group_key}, and C{x}, C{y}, C{z}
BIGINT, the primary key.
"""

ORIGINAL_ARRAY = OldLayout(
    "the original sAsync 0.9 (PersistentArray)",
    frozenset({"group_id", "x", "y", "z", "value"}),
    "sasync09",
    _fromOriginal,
)
"""
The original sAsync's C{sasync_array}: C{group_id}, C{x}, C{y}, C{z}
INTEGER (C{hash()} of the ID and the coordinates), C{value} (a pickle).
"""


class ArrayBroker(StoreBroker[Index]):
    """
    The transactions of a L{PersistentArray}: one row per element set,
    keyed by the SHA-256 of the coordinates' canonical form, with each
    coordinate's typed form beside it.
    """

    tableName = "sasync_array"
    oldLayouts = (FIRST_ARRAY, ORIGINAL_ARRAY)

    def keyColumns(self) -> list[SA.Column[Any]]:
        return [SA.Column("cell_key", SA.String(64), primary_key=True)]

    def extraColumns(self) -> list[SA.Column[Any]]:
        return [SA.Column(name, textType(), nullable=False) for name in "xyz"]

    @staticmethod
    def keyRow(key: Index) -> dict[str, Any]:
        return {"cell_key": digest(canonicalText(key))}

    @staticmethod
    def extraRow(key: Index) -> dict[str, Any]:
        x, y, z = key
        return {"x": typedText(x), "y": typedText(y), "z": typedText(z)}

    def rowKey(self, row: Any) -> Index:
        return (decodeKey(row.x), decodeKey(row.y), decodeKey(row.z))


class PersistentArray(Store[Index]):
    """
    A sparse 3-D array of picklable objects, one group of a database table:
    C{PersistentArray(ID, url=None, *, writeRetryTime=60, **kw)}, as
    L{Store.__init__<sasync.stores._store.Store.__init__>}.

    Coordinates are hashable keys (see L{checkIndex}); equal coordinates
    (C{1}, C{1.0}, C{True}) are one element. Every method returns a
    Deferred. Bad coordinates and unpicklable values
    raise at the call (C{TypeError}/C{ValueError}) and change nothing.
    Writes run at a lower priority than reads, in issue order; a C{get}
    reflects every write issued before it.
    """

    brokerClass: type[ArrayBroker] = ArrayBroker

    def __repr__(self) -> str:
        return f"<PersistentArray {self.ID!r}>"

    def get(self, x: Hashable, y: Hashable, z: Hashable) -> Deferred[Any]:
        """
        @return: a Deferred firing with element C{(x, y, z)}, or C{None}
            where none is set.
        """
        self._checkThread("get")
        d = self._readOne(checkIndex(x, y, z))
        return d.addCallback(lambda data: None if data is None else loadValue(data))

    def set(
        self, x: Hashable, y: Hashable, z: Hashable, value: object
    ) -> Deferred[None]:
        """
        Set element C{(x, y, z)} to C{value} (pickled now).

        @return: a Deferred that fires when the write has landed.
        @raise TypeError: a bad coordinate, or C{value} cannot be pickled.
        """
        self._checkThread("set")
        key = checkIndex(x, y, z)
        return self._seq.put([(key, dumpValue(key, value))])

    def delete(self, x: Hashable, y: Hashable, z: Hashable) -> Deferred[None]:
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


__all__ = [
    "FIRST_ARRAY",
    "ORIGINAL_ARRAY",
    "ArrayBroker",
    "PersistentArray",
    "checkIndex",
]
