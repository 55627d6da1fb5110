"""
Table setup for L{AccessBroker.table}: create a table and its named indexes
if missing, idempotently, even when two brokers (or processes) do it at once.

Index names live in one namespace per database on PostgreSQL and SQLite, and
the same C{unique_value=[...]} keyword is commonly given for several tables,
so each index's database name is derived from the table and the keyword:
C{index_dt=} on C{entries} is C{ix_entries_dt}, C{unique_value=} on C{url}
is C{ux_url_value}. Names too long for the database are shortened with a
hash, deterministically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as SA
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .errors import TableNameError

#: The longest identifier every supported database takes (PostgreSQL: 63).
MAX_NAME = 63

INDEX_PREFIX = "index_"
UNIQUE_PREFIX = "unique_"


@dataclass(frozen=True)
class IndexSpec:
    """
    One index asked for with C{index_NAME=[cols]} or C{unique_NAME=[cols]}.
    """

    keyword: str
    dbName: str
    columns: tuple[str, ...]
    unique: bool


def indexName(tableName: str, name: str, unique: bool) -> str:
    """
    The database name of index C{name} of table C{tableName}: unique per
    table and keyword, at most L{MAX_NAME} characters.
    """
    full = f"{'ux' if unique else 'ix'}_{tableName}_{name}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha1(full.encode("utf-8")).hexdigest()[:10]
    return f"{full[: MAX_NAME - 11]}_{digest}"


def splitIndexKeywords(
    tableName: str, kw: Mapping[str, Any]
) -> tuple[list[IndexSpec], dict[str, Any]]:
    """
    Take the C{index_*} and C{unique_*} keywords out of C{kw}.

    @return: the index specs, and the keywords left for C{SA.Table}.
    @raise TypeError: an index keyword's value is not a list of column names.
    @raise ValueError: an index keyword has no name after its prefix.
    """
    indexes: list[IndexSpec] = []
    rest: dict[str, Any] = {}
    for key, value in kw.items():
        if key.startswith(INDEX_PREFIX):
            name, unique = key[len(INDEX_PREFIX) :], False
        elif key.startswith(UNIQUE_PREFIX):
            name, unique = key[len(UNIQUE_PREFIX) :], True
        else:
            rest[key] = value
            continue
        if not name:
            raise ValueError(
                f"table {tableName!r}: index keyword {key!r} names no index"
            )
        if isinstance(value, str):
            value = [value]
        if (
            not isinstance(value, Sequence)
            or not value
            or not all(isinstance(c, str) for c in value)
        ):
            raise TypeError(
                f"table {tableName!r}: {key}= must be a list of column names,"
                f" not {value!r}"
            )
        indexes.append(
            IndexSpec(key, indexName(tableName, name, unique), tuple(value), unique)
        )
    return indexes, rest


def checkTableName(broker: object, name: str, known: Mapping[str, Any]) -> None:
    """
    Make sure C{self.<name>} can hold the table.

    @param known: The tables the broker already has, by name.
    @raise TableNameError: the name would shadow a method or attribute.
    """
    if not isinstance(name, str) or not name:
        raise TableNameError(f"a table name must be a non-empty string, not {name!r}")
    if name.startswith("_"):
        raise TableNameError(
            f"table name {name!r} starts with '_', kept for the broker's own"
            " attributes; choose another name"
        )
    cls = type(broker)
    if hasattr(cls, name):
        what = "method" if callable(getattr(cls, name)) else "attribute"
        raise TableNameError(
            f"table name {name!r} would shadow the {what} {cls.__name__}.{name}"
            f" (tables are reached as self.<name>); choose another table name"
        )
    if name in vars(broker) and name not in known:
        raise TableNameError(
            f"table name {name!r} would overwrite the attribute self.{name} of"
            f" {cls.__name__}; choose another table name"
        )


def defineTable(
    metadata: SA.MetaData,
    name: str,
    columns: Sequence[Any],
    indexes: Sequence[IndexSpec],
    tableKw: Mapping[str, Any],
) -> SA.Table:
    """
    The C{Table} object, with its indexes attached (reactor thread: no I/O).
    """
    table = SA.Table(name, metadata, *columns, **tableKw)
    for spec in indexes:
        try:
            cols = [table.c[c] for c in spec.columns]
        except KeyError as e:
            raise ValueError(
                f"table {name!r}: {spec.keyword}= names column {e.args[0]!r},"
                f" which the table does not have"
            ) from None
        SA.Index(spec.dbName, *cols, unique=spec.unique)
    return table


def createTable(connection: Connection, table: SA.Table, attempts: int = 3) -> None:
    """
    Worker thread: create C{table} and its indexes where missing.

    Losing a race with another broker creating the same table or index
    (an "already exists" error, or PostgreSQL's duplicate catalog key) is
    fine: the transaction is rolled back and the check repeated.
    """
    for attempt in range(attempts):
        try:
            with connection.begin():
                table.create(connection, checkfirst=True)
                for index in table.indexes:
                    index.create(connection, checkfirst=True)
            return
        except DBAPIError as e:
            if e.connection_invalidated:
                raise  # A lost connection, not a lost race.
            if connection.in_transaction():
                connection.rollback()
            if attempt + 1 >= attempts:
                if _allExist(connection, table):
                    return
                raise


def _allExist(connection: Connection, table: SA.Table) -> bool:
    inspector = SA.inspect(connection)
    if not inspector.has_table(table.name, schema=table.schema):
        return False
    names = {i["name"] for i in inspector.get_indexes(table.name, schema=table.schema)}
    result = all(index.name in names for index in table.indexes)
    if connection.in_transaction():
        connection.rollback()
    return result


__all__ = [
    "IndexSpec",
    "checkTableName",
    "createTable",
    "defineTable",
    "indexName",
    "splitIndexKeywords",
]
