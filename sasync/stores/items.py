"""
L{Items}: a persistent store of named Python objects, in groups::

    items = Items("prefs", "sqlite:///app.db")
    yield items.update("color", "blue")
    color = yield items.load("color")          # "blue"
    size = yield items.load("size")            # a falsy Missing
    yield items.shutdown()

Values are pickled: only your application may write the store's table
(unpickling runs code). Names are str, or any other key of
L{sasync.stores._keys} (see L{checkName<sasync.stores._storage.checkName>}).
Writes run at a lower priority than reads, in issue order, and a read
reflects every write issued before it.

A C{sasync_items} table the original sAsync 0.9 wrote (columns
C{group_id}, C{name}, C{value}) is upgraded at start-up (see
L{sasync.stores._layouts}): the original's group C{hash(ID)} becomes the
int ID of the same number, which for an int ID is the ID itself.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import sqlalchemy as SA
from sqlalchemy.engine import Row
from twisted.internet.defer import Deferred

from ._keys import sortedKeys
from ._layouts import OldLayout
from ._storage import (
    StoreBroker,
    StoreID,
    checkName,
    dumpValue,
    groupKey,
    loadValue,
    nameFromRow,
    nameKey,
    nameText,
    textType,
)
from ._store import Store as _Store


def _fromOriginal(row: Row[Any]) -> dict[str, Any]:
    # The original's group_id is hash(ID); its names are text.
    return {
        "group_key": groupKey(int(row.group_id)),
        "name_key": nameKey(row.name),
        "name": nameText(row.name),
        "value": bytes(row.value),
    }


ORIGINAL_ITEMS = OldLayout(
    "the original sAsync 0.9 (Items and PersistentDict)",
    frozenset({"group_id", "name", "value"}),
    "sasync09",
    _fromOriginal,
)
"""
The original sAsync's C{sasync_items}: C{group_id INTEGER} (C{hash(ID)}),
C{name VARCHAR(40)}, C{value} (a pickle), the first two the primary key.
"""


class Missing:
    """
    What L{Items.load} gives for a name that has no item: falsy, and
    carrying the C{group} (the store's ID) and the C{name} asked for.
    """

    __slots__ = ("group", "name")

    def __init__(self, group: StoreID, name: Hashable) -> None:
        self.group = group
        self.name = name

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Missing):
            return NotImplemented
        return (self.group, self.name) == (other.group, other.name)

    def __hash__(self) -> int:
        return hash((Missing, self.group, self.name))

    def __repr__(self) -> str:
        return f"Missing(group={self.group!r}, name={self.name!r})"


class ItemsBroker(StoreBroker[Hashable]):
    """
    The transactions of an L{Items} store: rows keyed by the SHA-256 of the
    name, with the name itself beside it (see L{nameKey
    <sasync.stores._storage.nameKey>}).
    """

    tableName = "sasync_items"
    oldLayouts: Sequence[OldLayout] = (ORIGINAL_ITEMS,)

    def keyColumns(self) -> list[SA.Column[Any]]:
        return [SA.Column("name_key", SA.String(64), primary_key=True)]

    def extraColumns(self) -> list[SA.Column[Any]]:
        return [SA.Column("name", textType(), nullable=False)]

    def keyRow(self, key: Hashable) -> dict[str, Any]:
        return {"name_key": nameKey(key)}

    def extraRow(self, key: Hashable) -> dict[str, Any]:
        return {"name": nameText(key)}

    def rowKey(self, row: Any) -> Hashable:
        return nameFromRow(row.name, row.name_key)


class Items(_Store[Hashable]):
    """
    Name -> value items of one group, kept in a database table.

    C{Items(ID, url=None, *, writeRetryTime=60, **kw)}: the group C{ID} is
    any key of L{sasync.stores._keys} (C{1} and C{"1"} are two groups,
    C{1}, C{1.0} and C{True} one); groups on one database never see each
    other's items. See L{Store.__init__
    <sasync.stores._store.Store.__init__>}.

    Names are str or other hashable keys: equal names (by C{==}) are one
    item. Every method returns a Deferred. Argument errors (an unhashable
    name, a value that cannot be pickled) raise at the call, before
    anything is queued, and leave the stored value as it was.

    @cvar brokerClass: the broker (and so the table) this store uses.
    """

    brokerClass: type[ItemsBroker] = ItemsBroker

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ID!r}>"

    def load(self, name: Hashable) -> Deferred[Any]:
        """
        @return: a Deferred firing with the value of item C{name}, or with
            a L{Missing} if there is none.
        """
        self._checkThread("load")
        checkName(name)
        d = self._readOne(name)
        return d.addCallback(self._loaded, name)

    def _loaded(self, data: bytes | None, name: Hashable) -> Any:
        if data is None:
            return Missing(self.ID, name)
        return loadValue(data)

    def loadAll(self) -> Deferred[dict[Any, Any]]:
        """
        @return: a Deferred firing with a dict of all the group's items,
            by name (in name order).
        """
        return self._loadAll()

    def names(self) -> Deferred[list[Any]]:
        """
        @return: a Deferred firing with the sorted names of the group's
            items (see L{sortedKeys<sasync.stores._keys.sortedKeys>}).
        """
        self._checkThread("names")
        return self._readKeys().addCallback(sortedKeys)

    def update(self, name: Hashable, value: object) -> Deferred[None]:
        """
        Set item C{name} to C{value}, adding it if it does not exist. The
        value is pickled now: changing it afterwards changes nothing stored.

        @return: a Deferred that fires when the write has landed.
        @raise TypeError: C{name} is unhashable or has no stable stored
            form, or C{value} cannot be pickled.
        @raise ValueError: C{name} is too long, or holds a NaN.
        @raise BrokerStopped: after C{shutdown()}.
        """
        self._checkThread("update")
        data = dumpValue(checkName(name), value)
        return self._seq.put([(name, data)])

    def insert(self, name: Hashable, value: object) -> Deferred[None]:
        """
        Add a new item C{name}.

        @return: a Deferred that fires when the write has landed, or fails
            with C{sqlalchemy.exc.IntegrityError} if the item exists (then
            nothing changes).
        @raise TypeError: as for L{update}.
        """
        self._checkThread("insert")
        data = dumpValue(checkName(name), value)
        return self._seq.insert(name, data)

    def delete(self, *names: Hashable) -> Deferred[None]:
        """
        Delete the named items, in one transaction; names without an item
        are ignored.

        @return: a Deferred that fires when the deletion has landed.
        @raise TypeError: a name is not a key (see L{update}).
        """
        self._checkThread("delete")
        for name in names:
            checkName(name)
        return self._seq.put([(name, None) for name in names])

    def clear(self) -> Deferred[None]:
        """
        Delete every item of this group (other groups are untouched).

        @return: a Deferred that fires when the deletion has landed.
        """
        self._checkThread("clear")
        return self._seq.clear()


__all__ = ["ORIGINAL_ITEMS", "Items", "ItemsBroker", "Missing"]
