"""
L{PersistentDict}: a dictionary whose items live in a database table.

Default mode: reading returns Deferreds, writing starts at once::

    d = PersistentDict("session-42", "sqlite:///app.db")
    d["user"] = "alice"                # the write starts now
    user = yield d["user"]             # "alice"
    yield d.deferToWrites()            # every write so far has landed

Preload mode: after C{yield d.preload()}, every read is synchronous (from
memory) and writes go on in the background::

    yield d.preload()
    d["visits"] = d.get("visits", 0) + 1
    len(d), "user" in d, list(d)
    yield d.shutdown()                 # waits for every write

Nothing accepted is dropped silently: a write that could not be stored
makes C{deferToWrites()} and C{shutdown()} fail with
L{WritesLost<sasync.errors.WritesLost>} naming its key.
"""

from __future__ import annotations

from collections.abc import (
    Hashable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from collections.abc import ItemsView as ItemsViewABC
from typing import Any

from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from ..errors import SAsyncError
from ._layouts import Import
from ._storage import StoreID, checkName
from .items import ORIGINAL_ITEMS, Items, ItemsBroker, Missing

_MISSING: Any = object()


class NotPreloaded(SAsyncError, RuntimeError):
    """
    C{len(d)}, C{key in d}, iterating, or comparing with C{==} asked of a
    L{PersistentDict} that has not been preloaded: Python needs those
    answers at once, and only a preloaded dict has them. Use the deferred
    forms (C{d.length()}, C{d.has(key)}, C{d.keys()}) or call
    C{d.preload()} first.
    """


class DictBroker(ItemsBroker):
    """
    The transactions of a L{PersistentDict}: the L{Items} layout, in a table
    of its own. The original sAsync kept its C{PersistentDict}s in
    C{sasync_items}: a missing C{sasync_dict} is first filled from the
    original's table there (or from its copy kept once L{Items} upgraded
    it), which stays as it is.
    """

    tableName = "sasync_dict"
    oldLayouts = ()
    imports = (
        Import("sasync_items", ORIGINAL_ITEMS),
        Import(f"sasync_items_{ORIGINAL_ITEMS.suffix}", ORIGINAL_ITEMS),
    )


class _DictItems(Items):
    brokerClass = DictBroker
    publicName = "PersistentDict"

    def __repr__(self) -> str:
        # What errors and logs call the store: the user's object.
        return f"<PersistentDict {self.ID!r}>"


class PersistentDict(MutableMapping[Hashable, Any]):
    """
    A C{MutableMapping} of hashable keys to picklable values, persisted as
    one group (C{ID}) of a database table.

    Keys are str, int, float, bool, None, bytes, and tuples and frozensets
    of those, compared as a dict does (C{1}, C{1.0} and C{True} are one
    key; see L{sasync.stores._keys}); other keys raise C{TypeError} at the
    call, naming them. Values are pickled when written: a value that cannot be
    pickled raises C{TypeError} at the call and changes nothing.

    Writes (C{d[k] = v}, C{del d[k]}, C{update}, C{clear}, and the writing
    half of C{setdefault}, C{pop} and C{popitem}) start at once, in issue
    order, at a lower priority than reads, and return nothing: wait for
    them with L{deferToWrites}. A write that was accepted is either stored
    or reported: L{deferToWrites} and L{shutdown} fail with
    L{WritesLost<sasync.errors.WritesLost>} naming every key whose latest
    write is not stored, at every call until a later write of that key (or
    a C{clear}) is. A write that fails for want of a connection is tried
    again for C{writeRetryTime} seconds first; one the database refuses
    (a value too big) is reported alone, its neighbours stored.
    Every read reflects every write issued before it.

    Default mode, what returns a Deferred: C{d[k]} (C{KeyError} through
    the Deferred), C{get}, C{keys}, C{values}, C{items}, C{copy},
    C{setdefault}, C{pop}, C{popitem}, and L{has} and L{length}. What
    raises L{NotPreloaded}: C{len(d)}, C{k in d}, C{iter(d)} (so C{list(d)}
    and C{for k in d}); C{d == other} is identity. C{del d[k]} of a missing
    key is no error (nobody could be told in time).

    Preload mode (after L{preload}): everything behaves like a dict, from
    memory; L{has}, L{length} still return (already fired) Deferreds.
    This assumes nobody else writes the group meanwhile; L{preload} again
    to reload. A value read in preload mode is the cached object itself:
    after changing a mutable value in place, assign it again to store it.
    """

    def __init__(self, ID: StoreID, url: str | None = None, **kw: Any) -> None:
        """
        @param ID: the dict's group: a str, an int, or another key of
            L{sasync.stores._keys}.
        @param url: an SQLAlchemy URL; without one, the global engine of
            L{sasync.setup}.
        @param kw: C{writeRetryTime} (for how many seconds of failed
            attempts a write that failed for want of a connection is tried
            again before it is reported lost; see L{Store.__init__
            <sasync.stores._store.Store.__init__>}), and engine keywords, as for
            L{AccessBroker}.
        """
        self.ID = ID
        self._items = _DictItems(ID, url, **kw)
        # The cache of preload mode: None until preloaded.
        self._data: dict[Hashable, Any] | None = None

    def __repr__(self) -> str:
        mode = "preloaded" if self._data is not None else "deferred"
        return f"<PersistentDict {self.ID!r} ({mode})>"

    # --- Modes, writes, ending ------------------------------------------------

    @property
    def isPreloaded(self) -> bool:
        """
        Whether L{preload} has finished: access is synchronous.
        """
        return self._data is not None

    def preload(self) -> Deferred[None]:
        """
        Load every item into memory, then switch to preload mode (or, if
        already there, reload). Writes issued meanwhile are not lost.

        @return: a Deferred that fires when preload mode is on.
        """

        def loaded(values: dict[Hashable, Any]) -> None:
            self._data = values

        # Unbounded: the cache must include writes issued during the read.
        return self._items._loadAll(bounded=False).addCallback(loaded)

    def _track(self, d: Deferred[None]) -> None:
        # Nobody waits for this write's own Deferred: the store logs a lost
        # write and reports it from deferToWrites() and shutdown().
        d.addErrback(lambda failure: None)

    def deferToWrites(self) -> Deferred[None]:
        """
        @return: a Deferred that fires once every write issued so far has
            landed; it fails with L{WritesLost<sasync.errors.WritesLost>}
            naming every key whose latest write was not stored (see the
            class docstring), at every call until a later write of each
            such key is stored.
        """
        return self._items.deferToWrites()

    def waitUntilRunning(self) -> Deferred[None]:
        """
        @return: a Deferred that fires once the dict's table is ready.
        """
        return self._items.waitUntilRunning()

    def shutdown(self) -> Deferred[None]:
        """
        Refuse further writes, wait until every write has landed, then
        release the database. Idempotent.

        @return: a Deferred that fires once shut down; it fails with
            L{WritesLost<sasync.errors.WritesLost>} naming every key whose
            latest write was not stored.
        """
        return self._items.shutdown()

    # --- The abstract methods of MutableMapping -------------------------------

    def __getitem__(self, key: Hashable) -> Any:
        """
        The value of C{key}: at once in preload mode, else a Deferred (that
        fails with C{KeyError} for a missing key).
        """
        checkName(key)
        if self._data is not None:
            return self._data[key]
        return self._items.load(key).addCallback(_orKeyError, key)

    def __setitem__(self, key: Hashable, value: Any) -> None:
        """
        Set C{key} to C{value}; the write starts now (pickling C{value}
        now: a later change to it is not stored).
        """
        d = self._items.update(key, value)
        if self._data is not None:
            self._data[key] = value
        self._track(d)

    def __delitem__(self, key: Hashable) -> None:
        """
        Delete C{key}; the write starts now. In preload mode a missing key
        raises C{KeyError}; in default mode it is silently nothing.
        """
        # (Checked before the cache changes: the delete might be refused.)
        self._items._checkThread("__delitem__")
        checkName(key)
        if self._data is not None:
            del self._data[key]
        self._track(self._items.delete(key))

    def _preloaded(self, what: str, instead: str) -> dict[Hashable, Any]:
        if self._data is None:
            raise NotPreloaded(
                f"{what} of a PersistentDict needs preload() first; without it,"
                f" use {instead}, which returns a Deferred"
            )
        return self._data

    def __len__(self) -> int:
        """
        Preload mode only (L{NotPreloaded} otherwise; see L{length}).
        """
        return len(self._preloaded("len()", "d.length()"))

    def __iter__(self) -> Iterator[Hashable]:
        """
        Preload mode only (L{NotPreloaded} otherwise; see C{keys()}).
        """
        return iter(self._preloaded("iterating", "d.keys()"))

    def __contains__(self, key: object) -> bool:
        """
        Preload mode only (L{NotPreloaded} otherwise; see L{has}).
        """
        checkName(key)
        return key in self._preloaded("'key in d'", "d.has(key)")

    def __eq__(self, other: object) -> bool:
        """
        In preload mode, equal to a mapping with the same items; otherwise
        equal only to itself.
        """
        if self._data is None or not isinstance(other, Mapping):
            return NotImplemented
        if isinstance(other, PersistentDict):
            if other._data is None:
                return NotImplemented
            return self._data == other._data
        return self._data == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    # --- Deferred alternatives ------------------------------------------------

    def has(self, key: Hashable) -> Deferred[bool]:
        """
        @return: a Deferred firing with whether C{key} has an item.
        """
        checkName(key)
        if self._data is not None:
            return succeed(key in self._data)
        return self._items.load(key).addCallback(lambda v: not isinstance(v, Missing))

    def length(self) -> Deferred[int]:
        """
        @return: a Deferred firing with the number of items.
        """
        if self._data is not None:
            return succeed(len(self._data))
        return self._items.names().addCallback(len)

    # --- dict methods that must read the database in default mode -----------

    def keys(self) -> Any:
        """
        @return: a keys view in preload mode, else a Deferred firing with
            the sorted list of keys.
        """
        if self._data is not None:
            return KeysView(self._data)
        return self._items.names()

    def values(self) -> Any:
        """
        @return: a values view in preload mode, else a Deferred firing with
            a list of the values (in key order).
        """
        if self._data is not None:
            return ValuesView(self._data)
        return self._items.loadAll().addCallback(lambda d: list(d.values()))

    def items(self) -> Any:
        """
        @return: an items view in preload mode, else a Deferred firing with
            a list of (key, value), in key order.
        """
        if self._data is not None:
            return ItemsViewABC(self._data)
        return self._items.loadAll().addCallback(lambda d: list(d.items()))

    def copy(self) -> Any:
        """
        @return: a plain dict of the items (a shallow copy), at once in
            preload mode, else through a Deferred.
        """
        if self._data is not None:
            return dict(self._data)
        return self._items.loadAll()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """
        @return: the value of C{key}, or C{default}; through a Deferred in
            default mode.
        """
        checkName(key)
        if self._data is not None:
            return self._data.get(key, default)
        return self._items.load(key).addCallback(
            lambda v: default if isinstance(v, Missing) else v
        )

    def setdefault(self, key: Hashable, default: Any = None) -> Any:
        """
        The value of C{key}, after setting it to C{default} if it has none;
        through a Deferred in default mode (where it is one atomic insert:
        a value someone else wrote first is kept).
        """
        if self._data is not None:
            if key not in self._data:
                self[key] = default
            return self._data[key]
        insert = self._items.insert(key, default)
        insert.addErrback(_existed)
        self._track(insert)
        # The read folds the pending insert over what it finds.
        return self._items.load(key)

    def pop(self, key: Hashable, default: Any = _MISSING) -> Any:
        """
        Remove C{key} and return its value (or C{default}, else
        C{KeyError}); through a Deferred in default mode.
        """
        self._items._checkThread("pop")
        checkName(key)
        if self._data is not None:
            if key not in self._data:
                if default is _MISSING:
                    raise KeyError(key)
                return default
            value = self._data.pop(key)
            self._track(self._items.delete(key))
            return value
        # The read is issued first, so it cannot see the delete.
        read = self._items.load(key)
        self._track(self._items.delete(key))
        return read.addCallback(_orDefault, key, default)

    def popitem(self) -> Any:
        """
        Remove some item and return it as (key, value); C{KeyError} if
        empty; through a Deferred in default mode.
        """
        if self._data is not None:
            if not self._data:
                raise KeyError("popitem(): the PersistentDict is empty")
            key = next(iter(self._data))
            return key, self.pop(key)

        def gotNames(names: list[Any]) -> Deferred[tuple[Any, Any]]:
            if not names:
                raise KeyError("popitem(): the PersistentDict is empty")
            key = names[0]
            d: Deferred[Any] = self.pop(key)
            return d.addCallback(lambda value: (key, value))

        return self._items.names().addCallback(gotNames)

    def clear(self) -> None:
        """
        Delete every item; the write starts now.
        """
        self._items._checkThread("clear")
        if self._data is not None:
            self._data.clear()
        self._track(self._items.clear())


def _existed(failure: Failure) -> Failure | None:
    # setdefault's insert of a key that has a value: nothing to do.
    if isinstance(failure.value, IntegrityError):
        return None
    return failure


def _orKeyError(value: Any, key: Hashable) -> Any:
    if isinstance(value, Missing):
        raise KeyError(key)
    return value


def _orDefault(value: Any, key: Hashable, default: Any) -> Any:
    if isinstance(value, Missing):
        if default is _MISSING:
            raise KeyError(key)
        return default
    return value


__all__ = ["DictBroker", "NotPreloaded", "PersistentDict"]
