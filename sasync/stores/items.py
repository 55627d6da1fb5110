"""
L{Items}: a persistent store of named Python objects, in groups::

    items = Items("prefs", "sqlite:///app.db")
    yield items.update("color", "blue")
    color = yield items.load("color")          # "blue"
    size = yield items.load("size")            # a falsy Missing
    yield items.shutdown()

Values are pickled: only your application may write the store's table
(unpickling runs code). Names are str (see L{checkName
<sasync.stores._storage.checkName>}). Writes run at a lower priority than reads,
in issue order, and a read reflects every write issued before it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as SA
from twisted.internet.defer import Deferred

from ._storage import (
    StoreBroker,
    StoreID,
    checkName,
    dumpValue,
    loadValue,
    nameKey,
    textType,
)
from ._store import Store as _Store


class Missing:
    """
    What L{Items.load} gives for a name that has no item: falsy, and
    carrying the C{group} (the store's ID) and the C{name} asked for.
    """

    __slots__ = ("group", "name")

    def __init__(self, group: StoreID, name: str) -> None:
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


class ItemsBroker(StoreBroker[str]):
    """
    The transactions of an L{Items} store: rows keyed by the SHA-256 of the
    name, with the name itself beside it.
    """

    tableName = "sasync_items"

    def keyColumns(self) -> list[SA.Column[Any]]:
        return [SA.Column("name_key", SA.String(64), primary_key=True)]

    def extraColumns(self) -> list[SA.Column[Any]]:
        return [SA.Column("name", textType(), nullable=False)]

    def keyRow(self, key: str) -> dict[str, Any]:
        return {"name_key": nameKey(key)}

    def extraRow(self, key: str) -> dict[str, Any]:
        return {"name": key}

    def rowKey(self, row: Any) -> str:
        name: str = row.name
        return name


class Items(_Store[str]):
    """
    Name -> value items of one group, kept in a database table.

    C{Items(ID, url=None, *, writeRetryTime=60, **kw)}: the group C{ID} is
    a str or an int (C{1} and C{"1"} are two groups); groups on one
    database never see each other's items. See L{Store.__init__
    <sasync.stores._store.Store.__init__>}.

    Every method returns a Deferred. Argument errors (a name that is not a
    str, a value that cannot be pickled) raise at the call, before
    anything is queued, and leave the stored value as it was.

    @cvar brokerClass: the broker (and so the table) this store uses.
    """

    brokerClass: type[ItemsBroker] = ItemsBroker

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ID!r}>"

    def load(self, name: str) -> Deferred[Any]:
        """
        @return: a Deferred firing with the value of item C{name}, or with
            a L{Missing} if there is none.
        """
        self._checkThread("load")
        checkName(name)
        d = self._readOne(name)
        return d.addCallback(self._loaded, name)

    def _loaded(self, data: bytes | None, name: str) -> Any:
        if data is None:
            return Missing(self.ID, name)
        return loadValue(data)

    def loadAll(self) -> Deferred[dict[str, Any]]:
        """
        @return: a Deferred firing with a dict of all the group's items,
            by name (in name order).
        """
        return self._loadAll()

    def names(self) -> Deferred[list[str]]:
        """
        @return: a Deferred firing with the sorted names of the group's
            items.
        """
        self._checkThread("names")
        return self._readKeys().addCallback(sorted)

    def update(self, name: str, value: object) -> Deferred[None]:
        """
        Set item C{name} to C{value}, adding it if it does not exist. The
        value is pickled now: changing it afterwards changes nothing stored.

        @return: a Deferred that fires when the write has landed.
        @raise TypeError: C{name} is not a str, or C{value} cannot be
            pickled.
        @raise ValueError: C{name} is a str that cannot be a key.
        @raise BrokerStopped: after C{shutdown()}.
        """
        self._checkThread("update")
        data = dumpValue(checkName(name), value)
        return self._seq.put([(name, data)])

    def insert(self, name: str, value: object) -> Deferred[None]:
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

    def delete(self, *names: str) -> Deferred[None]:
        """
        Delete the named items, in one transaction; names without an item
        are ignored.

        @return: a Deferred that fires when the deletion has landed.
        @raise TypeError: a name is not a str.
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


__all__ = ["Items", "ItemsBroker", "Missing"]
