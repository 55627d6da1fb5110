"""
Bringing a store's table from an earlier layout to the current one: the
original sAsync 0.9's C{sasync_items} and C{sasync_array}, and this
sAsync's first C{sasync_array} (int coordinates).

A store knows its earlier layouts (L{OldLayout}: the set of column names
that tells one, and how one of its rows becomes a row of the current
table). When the store starts, L{upgrade} looks at its table: if it has an
earlier layout, every row is copied, converted, into a new table of the
current layout, the old table is renamed to keep it (C{<table>_<suffix>},
e.g. C{sasync_items_sasync09}) and the new one takes its name. Values are
copied byte for byte, never unpickled: nothing is lost, even a value no
class of this process can load.

An upgrade that stops half way leaves the old table as it was. On
PostgreSQL and SQLite everything runs in one transaction. MySQL/MariaDB
commit DDL at once, so there the new table is built under a name of its
own (C{<table>_upgrading}) and the two renames are one atomic
C{RENAME TABLE}; until then the old table is untouched, and a new start
drops the half-built one and begins again.

Stores and processes starting at once take turns on the database's
migration lock (L{sasync.migrations.migrationLock}): the first upgrades,
the others find it done. Behind a transaction-mode pooler (a broker made
with C{pooled=True}) that lock is a transaction's, as for C{migrate()}: a
session's would stay on whichever server connection the pooler lent.

Worker thread only: this runs on a worker's connection, as a setup job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as SA
from sqlalchemy.engine import Connection, Row
from twisted.logger import Logger

from ..errors import SchemaMismatch
from ..migrations import migrationLock

log = Logger()

#: How many rows are converted and inserted per statement.
COPY_CHUNK: Final = 1000

#: The suffix of the table a half-done upgrade builds (MySQL/MariaDB).
BUILDING_SUFFIX: Final = "_upgrading"


@dataclass(frozen=True)
class OldLayout:
    """
    An earlier layout of a store's table.

    @ivar description: what wrote it, for logs and errors.
    @ivar columns: the names of its columns: a table with exactly these
        has this layout.
    @ivar suffix: the old table is kept as C{<table>_<suffix>}.
    @ivar convert: a row of it -> the column values of a current row.
    """

    description: str
    columns: frozenset[str]
    suffix: str
    convert: Callable[[Row[Any]], Mapping[str, Any]] = field(compare=False)


@dataclass(frozen=True)
class Import:
    """
    Fill a store's table, when it does not exist yet, from another table
    with an earlier layout (which stays as it is): the original sAsync kept
    the items of its C{PersistentDict} in C{sasync_items}.

    @ivar source: the table to read.
    @ivar layout: the layout it must have.
    """

    source: str
    layout: OldLayout


def upgrade(
    connection: Connection,
    target: SA.Table,
    layouts: Sequence[OldLayout],
    imports: Sequence[Import] = (),
    pooled: bool = False,
) -> None:
    """
    Worker thread: bring table C{target.name} to C{target}'s layout if it
    has one of C{layouts}, or create it from the first of C{imports} whose
    source exists with its layout, if it is missing. Does nothing (after
    one look) for a table that is missing with nothing to import, has the
    current layout, or another layout (L{AccessBroker.table
    <sasync.broker.AccessBroker.table>} tells about that one).

    @param connection: a connection outside any transaction.
    @param pooled: C{connection} goes through a transaction-mode pooler
        (the migration lock is then a transaction's, see
        L{sasync.migrations.migrationLock}).
    @raise SchemaMismatch: the name the old table is to be kept under is
        taken.
    """
    with connection.begin():
        try:
            if _plan(connection, target, layouts, imports) is None:
                return
        except SchemaMismatch:
            # (Outside the lock, MySQL's tables can change between two looks:
            # another store's upgrade renaming them. Decided under the lock.)
            pass
    with migrationLock(connection, pooled):
        if connection.dialect.name in ("mysql", "mariadb"):
            _upgradeMySQL(connection, target, layouts, imports)
            return
        with connection.begin():
            if connection.dialect.name == "sqlite":
                # The write lock, and DDL inside the transaction.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            plan = _plan(connection, target, layouts, imports)
            if plan is None:
                return  # (Done by someone else meanwhile.)
            building, rows = _build(connection, target, plan)
            _rename(connection, plan, building, target.name)
    _done(target.name, plan, rows)


@dataclass(frozen=True)
class _Plan:
    source: str
    layout: OldLayout
    #: The name the source is kept under, or None: it stays as it is.
    keepAs: str | None


def _plan(
    connection: Connection,
    target: SA.Table,
    layouts: Sequence[OldLayout],
    imports: Sequence[Import],
) -> _Plan | None:
    inspector = SA.inspect(connection)
    if inspector.has_table(target.name):
        there = {c["name"] for c in inspector.get_columns(target.name)}
        for layout in layouts:
            if there == layout.columns:
                keepAs = f"{target.name}_{layout.suffix}"
                if inspector.has_table(keepAs):
                    raise SchemaMismatch(
                        target.name,
                        [
                            f"it has the layout of {layout.description}, and"
                            f" would be kept as {keepAs!r} once upgraded, but a"
                            f" table of that name exists: rename or drop it",
                        ],
                    )
                return _Plan(target.name, layout, keepAs)
        return None
    for each in imports:
        if inspector.has_table(each.source):
            there = {c["name"] for c in inspector.get_columns(each.source)}
            if there == each.layout.columns:
                return _Plan(each.source, each.layout, None)
    return None


def _build(connection: Connection, target: SA.Table, plan: _Plan) -> tuple[str, int]:
    # Create the new table under a name of its own and copy every row.
    building = target.to_metadata(SA.MetaData(), name=target.name + BUILDING_SUFFIX)
    building.drop(connection, checkfirst=True)
    building.create(connection)
    source = SA.Table(plan.source, SA.MetaData(), autoload_with=connection)
    rows = 0
    select = SA.select(source)
    if connection.dialect.name == "postgresql":
        # A server-side cursor: memory stays bounded. (SQLite reads as it
        # goes; MySQL drivers read the result whole, as a streaming one
        # would block the inserts on this connection.)
        select = select.execution_options(stream_results=True)
    # Closed whatever happens: on SQLite a statement left open keeps the
    # write lock past the rollback.
    with contextlib.closing(connection.execute(select)) as result:
        while chunk := result.fetchmany(COPY_CHUNK):
            converted = [dict(plan.layout.convert(row)) for row in chunk]
            connection.execute(building.insert(), converted)
            rows += len(chunk)
    return building.name, rows


def _upgradeMySQL(
    connection: Connection,
    target: SA.Table,
    layouts: Sequence[OldLayout],
    imports: Sequence[Import],
) -> None:
    # DDL commits at once here: build aside, then one atomic RENAME TABLE.
    with connection.begin():
        plan = _plan(connection, target, layouts, imports)
    if plan is None:
        return
    with connection.begin():
        building, rows = _build(connection, target, plan)
    with connection.begin():
        _rename(connection, plan, building, target.name)
    _done(target.name, plan, rows)


def _rename(connection: Connection, plan: _Plan, building: str, name: str) -> None:
    quote = connection.dialect.identifier_preparer.quote
    moves = [(building, name)]
    if plan.keepAs is not None:
        moves.insert(0, (plan.source, plan.keepAs))
    if connection.dialect.name in ("mysql", "mariadb"):
        pairs = ", ".join(f"{quote(a)} TO {quote(b)}" for a, b in moves)
        connection.exec_driver_sql(f"RENAME TABLE {pairs}")
        return
    for a, b in moves:
        connection.exec_driver_sql(f"ALTER TABLE {quote(a)} RENAME TO {quote(b)}")


def _done(name: str, plan: _Plan, rows: int) -> None:
    kept = (
        f"the old table is kept as {plan.keepAs}"
        if plan.keepAs
        else f"{plan.source} is left as it was"
    )
    log.info(
        "Table {table}: copied {rows} rows from {source}, which has the layout of"
        " {layout}; {kept}",
        table=name,
        rows=rows,
        source=plan.source,
        layout=plan.layout.description,
        kept=kept,
    )


__all__ = ["BUILDING_SUFFIX", "Import", "OldLayout", "upgrade"]
