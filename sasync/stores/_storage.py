"""
What the persistent stores share: how keys and values become rows, and
the L{StoreBroker} that reads and writes them (L{sasync.stores._store.Store} puts
a write queue in front of it).

Row layout (one table per kind of store)::

    group_key  CHAR(64)   SHA-256 of the store's ID      } primary key
    ...key columns...     the key within the group        }
    ...extra columns...   e.g. the key's readable text
    value      BLOB       the pickled value

IDs and keys are stored as SHA-256 hex digests rather than as text,
because MySQL/MariaDB's default collations compare text case- and
trailing-space-insensitively (C{"A"} would overwrite C{"a"}) and index key
lengths are limited; lowercase hex compares the same everywhere. What is
digested is a key's canonical form (L{sasync.stores._keys}), so that keys
equal in Python find one row; a plain str key and a str or int ID are
digested as the first versions did, so their rows read back the same.

At start-up, a table of an earlier layout is upgraded first (see
L{sasync.stores._layouts}).

Trust boundary: values are pickles, and unpickling runs code. Only the
application (through these stores) may write these tables; never store a
row that came from someone else.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Final, Generic, TypeAlias

import sqlalchemy as SA
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from .._schema import SetupJob
from ..broker import AccessBroker
from ..transact import transact
from . import _keys, _layouts
from ._writes import K

StoreID: TypeAlias = Hashable
"""
What identifies a store's group: any key of L{sasync.stores._keys} (C{1}
and C{"1"} differ; C{1}, C{1.0} and C{True} are one group).
"""

PICKLE_PROTOCOL: Final = 5
"""
The pickle protocol values are written with (readable by Python >= 3.8).
"""

MAX_NAME_LENGTH: Final = 16000
"""
The longest stored text of a key (a str key itself, another key's typed
form) allowed, in characters (it fits a MySQL TEXT column in utf8mb4, four
bytes a character at worst).
"""

DELETE_CHUNK: Final = 500
"""
How many keys one DELETE statement names at most.
"""

READ_NICENESS: Final = 0
WRITE_NICENESS: Final = 5
"""
Reads run before writes: a lower niceness runs first.
"""


# --- Keys and values ---------------------------------------------------------


def digest(text: str) -> str:
    """
    @return: the SHA-256 hex digest of C{text} (lone surrogates kept).
    """
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def groupKey(ID: object) -> str:
    """
    @return: the C{group_key} column value of store C{ID}: the digest of
        C{"s:"} and a str, of C{"i:"} and the int a number equals (as the
        first versions wrote them), else of C{"k:"} and its canonical form.
    @raise TypeError: C{ID} is not a key of L{sasync.stores._keys}.
    @raise ValueError: C{ID} is or holds a NaN.
    """
    if isinstance(ID, str):
        return digest(f"s:{ID}")
    number = _keys.canonicalInt(ID)
    if number is not None:
        return digest(f"i:{number}")
    return digest(f"k:{_keys.canonicalText(ID)}")


def _plainName(key: object) -> bool:
    # A str the first versions stored as itself: no NUL (PostgreSQL text
    # cannot hold one) and valid Unicode.
    if not isinstance(key, str) or "\x00" in key:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def checkName(name: object) -> Hashable:
    """
    Check a key of L{Items<sasync.stores.items.Items>} or
    L{PersistentDict<sasync.stores.pdict.PersistentDict>}: one of
    L{sasync.stores._keys}, whose stored text (a str itself, another key
    its typed form) is at most L{MAX_NAME_LENGTH} characters.

    @return: C{name}.
    @raise TypeError: C{name} is unhashable, or has no stable stored form
        (the message names it).
    @raise ValueError: C{name} is too long, or holds a NaN.
    """
    text = nameText(name)
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError(
            f"key {_short(name)} is {len(text)} characters long stored;"
            f" at most {MAX_NAME_LENGTH} are allowed"
        )
    return name


def _short(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-15:]}"


def nameText(key: object) -> str:
    """
    @return: the C{name} column value of a key: a plain str as it is,
        any other key its typed form.
    @raise TypeError: as for L{checkName}.
    """
    if _plainName(key):
        return key  # type: ignore[return-value]
    return _keys.typedText(key)


def nameKey(key: object) -> str:
    """
    @return: the C{name_key} column value of a (checked) key: for a plain
        str the digest of the str (as the first versions wrote it), else the
        digest of a NUL and its canonical form (no plain str holds a NUL,
        so the two never meet).
    """
    if _plainName(key):
        return digest(key)  # type: ignore[arg-type]
    return digest("\x00" + _keys.canonicalText(key))


def nameFromRow(name: str, key: str) -> Hashable:
    """
    @return: the key of a row whose C{name} and C{name_key} columns are
        C{name} and C{key}: a plain str if C{key} is its digest, else the
        key C{name} is the typed form of.
    """
    if not _keys.mayBeTyped(name) or digest(name) == key:
        return name
    return _keys.decodeKey(name)


def dumpValue(key: object, value: object) -> bytes:
    """
    Pickle a value now, in the caller's thread: what is written is the
    value as it was at the call, and an unpicklable value fails at once.

    @raise TypeError: C{value} cannot be pickled (the message names C{key}).
    """
    try:
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except Exception as e:
        raise TypeError(
            f"cannot store the value for key {key!r}: a"
            f" {type(value).__name__} cannot be pickled ({e})"
        ) from e


def loadValue(data: bytes) -> Any:
    """
    Unpickle a stored value (see the trust boundary above). A Python 2
    C{str} in a pickle the original sAsync wrote comes back as a str: as
    ASCII where it is, else decoded as Latin-1 (one character per byte:
    C{.encode("latin-1")} gives the bytes back).
    """
    try:
        return pickle.loads(data)
    except UnicodeDecodeError:
        # Only Python 2's str opcodes decode text with the encoding.
        return pickle.loads(data, encoding="latin-1")


def loadValues(rows: Iterable[tuple[K, bytes]]) -> dict[K, Any]:
    """
    Unpickle the value of each (key, pickled value) of C{rows}, one at a
    time (a worker thread running this lets the reactor in between).
    """
    return {key: loadValue(data) for key, data in rows}


def valueType() -> SA.types.TypeEngine[bytes]:
    """
    The value column's type: a BLOB that holds more than MySQL's 64 KiB.
    """
    # Imported here, as the dialects below: "import sasync" stays lean.
    from sqlalchemy.dialects import mysql

    return SA.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def textType() -> SA.types.TypeEngine[str]:
    """
    A text column that holds any Unicode key, whatever the MySQL database's
    default character set.
    """
    from sqlalchemy.dialects import mysql

    return SA.Text().with_variant(mysql.TEXT(charset="utf8mb4"), "mysql", "mariadb")


def upsert(
    conn: Connection,
    table: SA.Table,
    rows: Sequence[dict[str, Any]],
    keyColumns: Sequence[str],
    updateColumns: Sequence[str],
) -> None:
    """
    Insert C{rows}, or update the columns C{updateColumns} of those whose
    C{keyColumns} (the primary key) exist, atomically on each of SQLite,
    PostgreSQL and MySQL/MariaDB; UPDATE-then-INSERT elsewhere.
    """
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    name = conn.dialect.name
    stmt: Any
    if name == "sqlite":
        stmt = sqlite.insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keyColumns),
            set_={c: stmt.excluded[c] for c in updateColumns},
        )
    elif name == "postgresql":
        stmt = postgresql.insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keyColumns),
            set_={c: stmt.excluded[c] for c in updateColumns},
        )
        # RETURNING makes SQLAlchemy send many rows per statement
        # ("insertmanyvalues"); psycopg2's executemany sends one per round
        # trip, seven times slower for 10,000 rows.
        stmt = stmt.returning(table.c[keyColumns[0]])
    elif name in ("mysql", "mariadb"):
        stmt = mysql.insert(table)
        stmt = stmt.on_duplicate_key_update(
            {c: stmt.inserted[c] for c in updateColumns}
        )
    else:
        _genericUpsert(conn, table, rows, keyColumns, updateColumns)
        return
    conn.execute(stmt, list(rows)).close()


def _genericUpsert(
    conn: Connection,
    table: SA.Table,
    rows: Sequence[dict[str, Any]],
    keyColumns: Sequence[str],
    updateColumns: Sequence[str],
) -> None:
    where = SA.and_(*[table.c[c] == SA.bindparam(f"k_{c}") for c in keyColumns])
    update = table.update().where(where)
    for row in rows:
        params = {f"k_{c}": row[c] for c in keyColumns}
        values = {c: row[c] for c in updateColumns}
        if conn.execute(update.values(values), params).rowcount:
            continue
        try:
            # A savepoint, so a lost race doesn't abort the transaction.
            with conn.begin_nested():
                conn.execute(table.insert().values(row))
        except IntegrityError:
            conn.execute(update.values(values), params)


# --- The broker ----------------------------------------------------------------


class StoreBroker(AccessBroker, Generic[K]):
    """
    The transactions of one store kind, for one group. Subclasses say how
    a key maps to columns.

    Thread rule: the C{@transact} methods run in a worker thread; they only
    return values (bytes, keys), never touch Deferreds.
    """

    tableName = ""

    #: The earlier layouts of the table, brought to the current one at
    #: start-up.
    oldLayouts: Sequence[_layouts.OldLayout] = ()

    #: Where a missing table is filled from (see L{_layouts.Import}).
    imports: Sequence[_layouts.Import] = ()

    def __init__(self, ID: object, url: str | None = None, **kw: Any) -> None:
        # Set before the broker starts: startup() needs them.
        self.groupKey = groupKey(ID)
        # What shutdown() waits for before the broker stops taking work:
        # the store's pending writes (set by the Store).
        self.drain: Callable[[], Deferred[None]] = lambda: succeed(None)
        self._storeStopping: Deferred[None] | None = None
        super().__init__(url, **kw)

    def shutdown(self, timeout: float | None = None) -> Deferred[None]:
        """
        Let the store's pending writes land, then shut down as a broker
        does (C{timeout} applies from then on). This is also what runs
        before the reactor stops, so no write issued before then is lost.
        """
        if self._storeStopping is None:
            d = self.drain()
            d.addCallback(lambda _: AccessBroker.shutdown(self, timeout))
            self._storeStopping = d
        mine: Deferred[None] = Deferred()
        self._storeStopping.addBoth(_passTo, mine)
        return mine

    # Subclasses fill these in.

    def keyColumns(self) -> list[SA.Column[Any]]:
        """
        @return: the columns that identify a row within its group.
        """
        raise NotImplementedError

    def extraColumns(self) -> list[SA.Column[Any]]:
        """
        @return: further columns derived from the key.
        """
        return []

    def keyRow(self, key: K) -> dict[str, Any]:
        """
        @return: the identifying column values of C{key}.
        """
        raise NotImplementedError

    def extraRow(self, key: K) -> dict[str, Any]:
        """
        @return: the extra column values of C{key}.
        """
        return {}

    def rowKey(self, row: Any) -> K:
        """
        @return: the key of a row read with L{readAll} or L{readKeys}.
        """
        raise NotImplementedError

    # Table and transactions.

    def columns(self) -> list[SA.Column[Any]]:
        """
        @return: the table's columns, new ones at every call.
        """
        return [
            SA.Column("group_key", SA.String(64), primary_key=True),
            *self.keyColumns(),
            *self.extraColumns(),
            SA.Column("value", valueType(), nullable=False),
        ]

    async def startup(self) -> None:
        """
        Bring the table from an earlier layout to the current one (see
        L{sasync.stores._layouts}), then create it if missing.
        """
        target = SA.Table(self.tableName, SA.MetaData(), *self.columns())
        job = SetupJob(
            functools.partial(
                _layouts.upgrade,
                target=target,
                layouts=self.oldLayouts,
                imports=self.imports,
                pooled=self._spec.pooler is not None,
            ),
            f"{type(self).__name__}: upgrading {self.tableName}",
        )
        # Only a missing or lost connection makes it run again: an upgrade
        # interrupted anywhere leaves the old table whole.
        await self._calls.setupJob(job, job.description)
        await self.table(self.tableName, *self.columns())

    def _table(self) -> SA.Table:
        table: SA.Table = getattr(self, self.tableName)
        return table

    def _whereKey(self, table: SA.Table, key: K) -> SA.ColumnElement[bool]:
        return SA.and_(
            table.c.group_key == self.groupKey,
            *[table.c[c] == v for c, v in self.keyRow(key).items()],
        )

    def _keySelectColumns(self, table: SA.Table) -> list[SA.Column[Any]]:
        names = [c.name for c in self.keyColumns() + self.extraColumns()]
        return [table.c[name] for name in names]

    @transact
    def readOne(self, key: K) -> bytes | None:
        """
        @return: the pickled value of C{key}, or C{None} if there is none.
        """
        t = self._table()
        row = self.conn.execute(
            SA.select(t.c.value).where(self._whereKey(t, key))
        ).first()
        return None if row is None else bytes(row[0])

    @transact
    def readAll(self) -> list[tuple[K, bytes]]:
        """
        @return: (key, pickled value) for every row of the group.
        """
        t = self._table()
        result = self.conn.execute(
            SA.select(*self._keySelectColumns(t), t.c.value).where(
                t.c.group_key == self.groupKey
            )
        )
        return [(self.rowKey(row), bytes(row.value)) for row in result]

    @transact
    def readKeys(self) -> list[K]:
        """
        @return: the key of every row of the group.
        """
        t = self._table()
        result = self.conn.execute(
            SA.select(*self._keySelectColumns(t)).where(t.c.group_key == self.groupKey)
        )
        return [self.rowKey(row) for row in result]

    @transact
    def writeUnit(
        self,
        clearFirst: bool,
        upserts: list[tuple[K, bytes]],
        deletes: list[K],
        insert: bool,
    ) -> None:
        """
        Write one L{WriteUnit}, in one transaction: clear the group if
        asked, delete, then upsert (or plainly insert, for an insert unit,
        so that an existing key fails it with C{IntegrityError}).
        """
        t = self._table()
        conn = self.conn
        if clearFirst:
            conn.execute(t.delete().where(t.c.group_key == self.groupKey))
        keyNames = [c.name for c in self.keyColumns()]
        # One statement per chunk of keys, not one round trip per key.
        for i in range(0, len(deletes), DELETE_CHUNK):
            chunk = [
                tuple(self.keyRow(k).values()) for k in deletes[i : i + DELETE_CHUNK]
            ]
            keyColumn: Any
            if len(keyNames) == 1:
                keyColumn, values = t.c[keyNames[0]], [v for (v,) in chunk]
            else:
                keyColumn, values = SA.tuple_(*[t.c[c] for c in keyNames]), chunk
            conn.execute(
                t.delete().where(t.c.group_key == self.groupKey, keyColumn.in_(values))
            )
        if not upserts:
            return
        rows = [
            {
                "group_key": self.groupKey,
                **self.keyRow(k),
                **self.extraRow(k),
                "value": v,
            }
            for k, v in upserts
        ]
        if insert:
            conn.execute(t.insert(), rows)
            return
        upsert(
            conn,
            t,
            rows,
            ["group_key", *(c.name for c in self.keyColumns())],
            # The extra columns stay as first written: a dict keeps the
            # first of equal keys (1, then True: 1).
            ["value"],
        )


def _passTo(result: object, d: Deferred[None]) -> object:
    # Tell d how shutdown ended, leaving the shared result as it was.
    if isinstance(result, Failure):
        d.errback(result)
        return None
    d.callback(None)
    return result
