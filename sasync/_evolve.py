"""
Schema evolution for L{tables.createTable<sasync.tables.createTable>}: compare
a declared table with the one in the database, plan the additive changes
C{table()} makes by itself, and name every other difference.

What is added (unless the table says C{evolve=False}): a declared column the
database lacks, if it is nullable or has a C{server_default} (existing rows
get NULL or the default), is not part of the primary key, and carries no
foreign key, column-level C{unique=True} or generated value; and a declared
index (C{index_NAME=}, C{unique_NAME=}, C{Column(index=True)}) the database
lacks. Everything else that differs is a L{SchemaMismatch}.

What is compared, per declared column the database has:
  - the type's generic kind (integer, string, text, float, numeric,
    datetime, date, time, boolean, binary, ...), after resolving
    C{with_variant()} and C{TypeDecorator}s for the database;
  - lengths of strings, the width of integers (small, normal, big, and
    MySQL's tiny and medium), precision and scale of numerics, all only
    where both sides state one;
  - whether it takes NULL (not for primary-key columns);
and the primary key's columns, and each declared index's columns and
uniqueness.

What is not compared, because databases don't report it faithfully:
server defaults, collations and character sets, C{Enum} values, time zones
(but on PostgreSQL), float precision, autoincrement, comments, and
constraints other than the primary key. Known stand-ins are accepted:
BOOLEAN stored as an integer (MySQL's TINYINT(1)), JSON as text (MariaDB),
UUID as a string, INTERVAL as a datetime (MySQL). A type the database
reports that SQLAlchemy does not know is not compared; on SQLite, a column
type outside SQLAlchemy's names (SQLite takes any) is compared by SQLite's
type affinity only. Columns and indexes the database has beyond the
declaration are fine.

Worker thread only (it uses the worker's connection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as SA
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn, ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler
from sqlalchemy.types import TypeDecorator, TypeEngine

from .errors import SchemaMismatch

#: The key in C{Table.info} holding C{table(..., evolve=...)}.
EVOLVE_KEY = "sasync.evolve"

#: Where the differences point to.
MIGRATE_HINT = "add it with a migration (docs/schema.md)"


@dataclass
class Plan:
    """
    What C{table()} does to one table.

    @ivar create: The table is missing: create it (and its indexes).
    @ivar columns: Columns to add.
    @ivar indexes: Indexes to create.
    @ivar mismatches: Differences C{table()} does not change.
    """

    create: bool = False
    columns: list[SA.Column[Any]] = field(default_factory=list)
    indexes: list[SA.Index] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """
        Whether there is nothing to do.
        """
        return not (self.create or self.columns or self.indexes)


class AddColumn(ExecutableDDLElement):
    """
    C{ALTER TABLE t ADD <column>}: the column rendered as C{CREATE TABLE}
    renders it, defaults included.
    """

    def __init__(self, column: SA.Column[Any]) -> None:
        self.column = column


@compiles(AddColumn)
def _compileAddColumn(element: AddColumn, compiler: DDLCompiler, **kw: Any) -> str:
    table = element.column.table
    spec = compiler.process(CreateColumn(element.column), **kw)
    return f"ALTER TABLE {compiler.preparer.format_table(table)} ADD {spec}"


def evolves(table: SA.Table) -> bool:
    """
    Whether C{table()} may add columns and indexes to C{table}.
    """
    return bool(table.info.get(EVOLVE_KEY, True))


def plan(connection: Connection, table: SA.Table) -> Plan:
    """
    Worker thread: compare C{table} with the database (reading only).
    """
    inspector = SA.inspect(connection)
    result = Plan()
    if not inspector.has_table(table.name, schema=table.schema):
        result.create = True
        return result
    evolve = evolves(table)
    dialect = connection.dialect
    found = {c["name"]: c for c in inspector.get_columns(table.name, table.schema)}
    raw = _sqliteTypes(connection, table) if dialect.name == "sqlite" else {}
    for column in table.columns:
        there = found.get(column.name)
        if there is None:
            why = _notAddable(column, evolve)
            if why:
                result.mismatches.append(
                    f"column {column.name!r} is missing in the database: {why}"
                )
            else:
                result.columns.append(column)
            continue
        result.mismatches.extend(_columnDifferences(column, there, dialect, raw))
    declaredKey = [c.name for c in table.primary_key.columns]
    foundKey = inspector.get_pk_constraint(table.name, table.schema)
    keyThere = list(foundKey.get("constrained_columns") or [])
    if declaredKey and keyThere != declaredKey:
        result.mismatches.append(
            f"primary key: declared {_cols(declaredKey)}, found {_cols(keyThere)}"
        )
    indexes = {i["name"]: i for i in inspector.get_indexes(table.name, table.schema)}
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        thereIndex = indexes.get(str(index.name))
        if thereIndex is None:
            if evolve:
                result.indexes.append(index)
            else:
                result.mismatches.append(
                    f"index {index.name!r} is missing in the database"
                    " (evolve=False: table() adds nothing)"
                )
            continue
        result.mismatches.extend(_indexDifferences(index, thereIndex))
    return result


def _notAddable(column: SA.Column[Any], evolve: bool) -> str:
    """
    Why C{table()} can't add C{column} (C{""}: it can).
    """
    if not evolve:
        return "evolve=False: table() adds nothing; " + MIGRATE_HINT
    if column.primary_key:
        return f"it is part of the primary key; {MIGRATE_HINT}"
    if column.foreign_keys:
        return f"it has a foreign key; {MIGRATE_HINT}"
    if column.unique:
        return (
            "it is declared unique=True (a constraint); declare unique_NAME="
            f"[{column.name!r}] instead, or {MIGRATE_HINT}"
        )
    if column.computed is not None or column.identity is not None:
        return f"it is a generated column; {MIGRATE_HINT}"
    if not column.nullable and column.server_default is None:
        return (
            "it is NOT NULL without a server_default, so the existing rows"
            " would have no value: declare it nullable or with a"
            f" server_default, or {MIGRATE_HINT}"
        )
    return ""


# Types ------------------------------------------------------------------------

#: (kind, generic classes), the first match wins (Boolean and Float before
#: the classes they could also pass for, Text before String).
_KINDS: tuple[tuple[str, tuple[type[Any], ...]], ...] = (
    ("enum", (SA.Enum,)),
    ("boolean", (SA.Boolean,)),
    ("integer", (SA.Integer,)),
    ("float", (SA.Float,)),
    ("numeric", (SA.Numeric,)),
    ("text", (SA.Text,)),
    ("string", (SA.String,)),
    ("datetime", (SA.DateTime,)),
    ("date", (SA.Date,)),
    ("time", (SA.Time,)),
    ("interval", (SA.Interval,)),
    ("binary", (SA.LargeBinary, SA.BINARY, SA.VARBINARY)),
    ("json", (SA.JSON,)),
    ("uuid", (SA.Uuid,)),
)

#: (declared kind, found kind) pairs that are a database's usual stand-in.
_STAND_INS = {
    ("boolean", "integer"),
    ("json", "text"),
    ("uuid", "string"),
    ("interval", "datetime"),
}

#: Kinds whose details no database reports faithfully.
_NOT_COMPARED = {"enum", None}


def resolved(type_: TypeEngine[Any], dialect: Dialect) -> TypeEngine[Any]:
    """
    The type C{type_} is on C{dialect}: its variant for it, and what a
    C{TypeDecorator} stands on.
    """
    for _ in range(10):  # (a TypeDecorator of a TypeDecorator ...)
        type_ = type_.dialect_impl(dialect)
        if not isinstance(type_, TypeDecorator):
            break
        type_ = type_.load_dialect_impl(dialect)
    return type_


def kindOf(type_: TypeEngine[Any]) -> str | None:
    """
    The generic kind of a type, C{None} for one outside L{_KINDS}.
    """
    name = type(type_).__name__.upper()
    if name.endswith("TEXT") and isinstance(type_, SA.String):
        return "text"  # MySQL's TINYTEXT, MEDIUMTEXT, LONGTEXT are Strings
    if name.endswith("BLOB"):
        return "binary"  # and its TINYBLOB ... LONGBLOB plain types
    for kind, classes in _KINDS:
        if isinstance(type_, classes):
            return kind
    return None


def _intWidth(type_: TypeEngine[Any]) -> int:
    name = type(type_).__name__.upper()
    if isinstance(type_, SA.BigInteger):
        return 8
    if isinstance(type_, SA.SmallInteger):
        return 2
    if name == "TINYINT":
        return 1
    if name == "MEDIUMINT":
        return 3
    return 4


def typeDifference(
    declared: TypeEngine[Any], found: TypeEngine[Any], dialect: Dialect
) -> str:
    """
    How C{found} (reflected) differs from C{declared}, by the rule of this
    module; C{""} if it does not, or if that can't be told.
    """
    declared = resolved(declared, dialect)
    mine, theirs = kindOf(declared), kindOf(found)
    if mine in _NOT_COMPARED or theirs in _NOT_COMPARED:
        return ""
    if mine != theirs:
        if (mine, theirs) in _STAND_INS:
            return ""
        if {mine, theirs} == {"string", "text"} and not (
            getattr(declared if mine == "string" else found, "length", None)
        ):
            # A string without a length is unbounded text (PostgreSQL's
            # VARCHAR is TEXT; psycopg 3's dialect makes one for the other).
            return ""
        return _typeChange(declared, found, dialect)
    for mineValue, theirValue in zip(
        _details(mine, declared, dialect), _details(mine, found, dialect), strict=True
    ):
        if mineValue is not None and theirValue is not None and mineValue != theirValue:
            return _typeChange(declared, found, dialect)
    return ""


def _details(kind: str | None, type_: TypeEngine[Any], dialect: Dialect) -> list[Any]:
    # What is compared within a kind; None where a side does not say.
    if kind in ("string", "text", "binary"):
        return [getattr(type_, "length", None)]
    if kind == "integer":
        return [_intWidth(type_)]
    if kind == "numeric":
        return [getattr(type_, "precision", None), getattr(type_, "scale", None)]
    if kind == "datetime" and dialect.name == "postgresql":
        return [bool(getattr(type_, "timezone", False))]
    return []


def _typeChange(
    declared: TypeEngine[Any], found: TypeEngine[Any], dialect: Dialect
) -> str:
    return f"type: declared {_show(declared, dialect)}, found {_show(found, dialect)}"


def _show(type_: TypeEngine[Any], dialect: Dialect) -> str:
    try:
        return str(type_.compile(dialect=dialect))
    except Exception:
        return repr(type_)


#: SQLite's rules for a column's type affinity, in order (its docs, 3.1).
def sqliteAffinity(typeText: str) -> str:
    """
    SQLite's type affinity of a declared column type.
    """
    text = typeText.upper()
    if "INT" in text:
        return "INTEGER"
    if "CHAR" in text or "CLOB" in text or "TEXT" in text:
        return "TEXT"
    if "BLOB" in text or not text:
        return "BLOB"
    if "REAL" in text or "FLOA" in text or "DOUB" in text:
        return "REAL"
    return "NUMERIC"


def _sqliteTypes(connection: Connection, table: SA.Table) -> dict[str, str]:
    # The column types as written in SQLite's schema (any text goes there).
    preparer = connection.dialect.identifier_preparer
    where = f"{preparer.quote_schema(table.schema)}." if table.schema else ""
    rows = connection.exec_driver_sql(
        f"PRAGMA {where}table_info({preparer.quote(table.name)})"
    )
    return {row[1]: str(row[2] or "") for row in rows}


def _columnDifferences(
    column: SA.Column[Any], there: Any, dialect: Dialect, raw: dict[str, str]
) -> list[str]:
    differences = []
    name = repr(column.name)
    typeText = raw.get(column.name)
    if typeText is not None and _looseSQLiteType(typeText, dialect):
        mine = sqliteAffinity(_show(resolved(column.type, dialect), dialect))
        theirs = sqliteAffinity(typeText)
        if mine != theirs:
            differences.append(
                f"column {name}: type affinity: declared {mine}, found {theirs}"
                f" ({typeText!r})"
            )
    else:
        difference = typeDifference(column.type, there["type"], dialect)
        if difference:
            differences.append(f"column {name}: {difference}")
    if not column.primary_key and bool(there["nullable"]) != bool(column.nullable):
        declared = "NULL" if column.nullable else "NOT NULL"
        found = "NULL" if there["nullable"] else "NOT NULL"
        differences.append(f"column {name}: declared {declared}, found {found}")
    return differences


def _looseSQLiteType(typeText: str, dialect: Dialect) -> bool:
    # A type name SQLAlchemy does not know: it reflects only its affinity.
    base = typeText.split("(")[0].strip().upper()
    names = getattr(dialect, "ischema_names", {})
    return base not in names


def _indexDifferences(index: SA.Index, there: Any) -> list[str]:
    differences = []
    declared = [getattr(c, "name", None) for c in index.expressions]
    found = list(there.get("column_names") or [])
    if None not in declared and None not in found and declared != found:
        differences.append(
            f"index {index.name!r}: declared on {_cols(declared)}, found on"
            f" {_cols(found)}"
        )
    if bool(index.unique) != bool(there.get("unique")):
        differences.append(
            f"index {index.name!r}: declared {_uniqueness(index.unique)}, found"
            f" {_uniqueness(there.get('unique'))}"
        )
    return differences


def _uniqueness(unique: Any) -> str:
    return "unique" if unique else "not unique"


def _cols(names: Sequence[Any]) -> str:
    return "(" + ", ".join(str(n) for n in names) + ")"


# Applying ---------------------------------------------------------------------


def firstDuplicate(
    connection: Connection, index: SA.Index, added: Sequence[SA.Column[Any]]
) -> str:
    """
    Worker thread: an example of existing rows that unique C{index} would
    reject (C{""}: none), before any of its C{added} columns exist: those
    hold NULL (never a duplicate) or their one server default.
    """
    table = index.table
    assert table is not None
    addedNames = {c.name for c in added}
    columns = [c for c in index.columns if isinstance(c, SA.Column)]
    new = [c for c in columns if c.name in addedNames]
    if any(c.server_default is None for c in new):
        return ""
    old = [c for c in columns if c.name not in addedNames]
    count = SA.func.count().label("n")
    if not old:
        many = connection.execute(SA.select(count).select_from(table)).scalar_one()
        return f"{many} rows would share one value" if many > 1 else ""
    query = (
        SA.select(*old, count)
        .where(*[c.is_not(None) for c in old])
        .group_by(*old)
        .having(SA.func.count() > 1)
        .limit(1)
    )
    row = connection.execute(query).first()
    if row is None:
        return ""
    values = ", ".join(f"{c.name}={v!r}" for c, v in zip(old, row, strict=False))
    return f"{row[-1]} rows have {values}"


def apply(connection: Connection, table: SA.Table, todo: Plan) -> None:
    """
    Worker thread, inside a transaction: carry out C{todo}, the unique
    indexes checked first, so that none of it starts when one of them
    could not be built.

    @raise SchemaMismatch: existing rows violate a unique index to add.
    """
    if todo.create:
        table.create(connection, checkfirst=True)
        for index in table.indexes:
            index.create(connection, checkfirst=True)
        return
    refused = []
    for index in todo.indexes:
        if index.unique:
            example = firstDuplicate(connection, index, todo.columns)
            if example:
                refused.append(unbuildable(index, example))
    if refused:
        raise SchemaMismatch(table.name, refused)
    for column in todo.columns:
        if isinstance(column.type, SA.types.SchemaType):
            # A PostgreSQL ENUM type, say: CREATE TABLE would make it too.
            column.type.create(connection, checkfirst=True)
        connection.execute(AddColumn(column))
    for index in todo.indexes:
        index.create(connection, checkfirst=True)


def unbuildable(index: SA.Index, why: str) -> str:
    """
    The difference for unique C{index}, which the existing rows violate.
    """
    return (
        f"unique index {index.name!r} on {_cols([c.name for c in index.columns])}"
        f" can't be built: existing rows violate it ({why}); remove the"
        f" duplicates, or {MIGRATE_HINT}"
    )


__all__ = [
    "EVOLVE_KEY",
    "AddColumn",
    "Plan",
    "apply",
    "evolves",
    "firstDuplicate",
    "kindOf",
    "plan",
    "resolved",
    "sqliteAffinity",
    "typeDifference",
    "unbuildable",
]
