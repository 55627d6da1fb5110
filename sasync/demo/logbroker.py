"""
The demo's broker: web-server log entries in a database, through sAsync.

This is the seed application's broker (a logfile-to-database parser) on
SQLAlchemy 2.x: one C{entries} table, one row per request, and an
indexed-value table for each of the long, repetitive values (virtual host,
URL, referrer, user agent) holding each distinct value once with its id.
An entry refers to them by id.

Every database access is a L{transact} method: the call returns a Deferred at
once, and the body runs in a worker thread inside C{BEGIN ... COMMIT}.
Queries that return rows hand back a L{Deferator} (or write to a consumer)
so big results stream with bounded memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as SA
from sqlalchemy.dialects import mysql

from sasync import AccessBroker, transact

from .logparse import VALUE_LENGTH, Record

#: The indexed-value tables, and the entries column that refers to each.
INDEXED_VALUES = ("vhost", "url", "referrer", "useragent")

#: The fields of an entry spelled out, in the order of L{LogBroker.entriesSince}.
ENTRY_FIELDS = (
    "id", "dt", "ip", "method", "status", "size",
    "vhost", "url", "referrer", "useragent",
)  # fmt: skip

#: The databases whose JSON functions L{LogBroker.entryLines} uses.
JSON_DATABASES = ("sqlite", "postgresql", "mysql", "mariadb")

#: Values looked up in one statement.
LOOKUP_CHUNK = 500


def _valueType() -> SA.types.TypeEngine[str]:
    """
    The type of an indexed value: a string compared byte for byte everywhere
    (MySQL's default collation would call C{/A} and C{/a} the same value).
    """
    return SA.String(VALUE_LENGTH).with_variant(
        mysql.VARCHAR(VALUE_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"),
        "mysql",
        "mariadb",
    )


def _primaryKey(result: SA.CursorResult[Any]) -> int:
    """
    The primary key of the row an INSERT added.
    """
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


class LogBroker(AccessBroker):
    """
    Stores access-log entries and reads reports back.

    The ids of indexed values are cached in memory (L{idTable}, reactor
    thread only), so a value already seen costs no database round trip.
    """

    indexedValues = INDEXED_VALUES

    # Tables, set by startup() through table().
    entries: SA.Table
    vhost: SA.Table
    url: SA.Table
    referrer: SA.Table
    useragent: SA.Table
    ingests: SA.Table

    def __init__(self, url: str | None = None, **engineKw: Any) -> None:
        """
        @param url: The database's SQLAlchemy URL.
        @param engineKw: For C{create_engine} and the broker.
        """
        #: value -> id, one dict per indexed-value table; reactor thread only.
        self.idTable: dict[str, dict[str, int]] = {n: {} for n in INDEXED_VALUES}
        super().__init__(url, **engineKw)

    async def startup(self) -> None:
        """
        Create the tables and their indexes, if missing. A database made by
        an older demo is upgraded in place: C{table()} adds what this
        version declares beyond it (C{ix_entries_status}, new in 0.20, for
        L{statusMix}); see C{docs/schema.md}.
        """
        await self.table(
            "entries",
            # The id tells the order of requests within one second.
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("dt", SA.DateTime, nullable=False),
            SA.Column("ip", SA.String(45), nullable=False),
            SA.Column("method", SA.String(16), nullable=False),
            SA.Column("status", SA.SmallInteger, nullable=False),
            SA.Column("size", SA.Integer, nullable=False),
            *[
                SA.Column(f"id_{name}", SA.Integer, nullable=False)
                for name in INDEXED_VALUES
            ],
            index_dt=["dt"],
            index_ip=["ip"],
            index_status=["status"],
        )
        for name in INDEXED_VALUES:
            await self.table(
                name,
                SA.Column("id", SA.Integer, primary_key=True),
                SA.Column("value", _valueType(), nullable=False),
                unique_value=["value"],
            )
        # Unfinished ingestions: how many records of each source (a log
        # file, a generated log) are committed, so the next run carries on.
        await self.table(
            "ingests",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("source", _valueType(), nullable=False),
            SA.Column("records", SA.Integer, nullable=False),
            unique_source=["source"],
        )

    def first(self) -> None:
        """
        The first transaction. On SQLite: write-ahead logging, so that
        C{sasync serve} can read while C{sasync demo} writes and a commit
        costs no disk flush (the database stays consistent after a crash;
        only a power cut could lose the last commits). PostgreSQL and MySQL
        need nothing.
        """
        if self.conn.dialect.name == "sqlite":
            # Both must run outside a transaction, which the SQLite driver
            # begins only at the first write.
            self.conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            self.conn.exec_driver_sql("PRAGMA synchronous=NORMAL")

    def _valueTable(self, name: str) -> SA.Table:
        """
        The indexed-value table called C{name}; only those, never a name
        from outside turned into SQL.
        """
        if name not in INDEXED_VALUES:
            raise ValueError(f"no indexed-value table {name!r}")
        table: SA.Table = getattr(self, name)
        return table

    # Writing (the @transact bodies run in a worker thread) -----------------

    def _getOrInsert(self, table: SA.Table, value: str) -> int:
        """
        The id of C{value} in C{table}, inserting it if new. Runs inside a
        transaction, on its connection.
        """
        conn = self.conn
        ID = conn.execute(
            SA.select(table.c.id).where(table.c.value == SA.bindparam("v")),
            {"v": value},
        ).scalar()
        if ID is None:
            ID = _primaryKey(conn.execute(table.insert().values(value=value)))
        return int(ID)

    @transact
    def setNameValue(self, name: str, value: str) -> int:
        """
        The unique id of C{value} in the indexed-value table C{name}, adding
        it there if necessary (the seed's own transaction).
        """
        return self._getOrInsert(self._valueTable(name), value)

    @transact
    def setNameValues(self, name: str, values: Sequence[str]) -> dict[str, int]:
        """
        The ids of many values of one indexed-value table, adding the new
        ones, in one transaction and a few statements (not two a value).

        @return: value -> id for every value given.
        """
        table = self._valueTable(name)
        unique = list(dict.fromkeys(values))
        found = self._lookUp(table, unique)
        missing = [v for v in unique if v not in found]
        if missing:
            self.conn.execute(table.insert(), [{"value": v} for v in missing])
            found.update(self._lookUp(table, missing))
        return {v: found[v] for v in unique}

    def _lookUp(self, table: SA.Table, values: list[str]) -> dict[str, int]:
        """
        value -> id for those of C{values} in C{table}; the values are bound
        parameters (an expanding C{IN}), a few hundred at a time.
        """
        found: dict[str, int] = {}
        select = SA.select(table.c.value, table.c.id).where(
            table.c.value.in_(SA.bindparam("values", expanding=True))
        )
        for n in range(0, len(values), LOOKUP_CHUNK):
            chunk = values[n : n + LOOKUP_CHUNK]
            for value, ID in self.conn.execute(select, {"values": chunk}):
                found[value] = int(ID)
        return found

    @transact
    def setEntry(self, entry: Mapping[str, Any]) -> int:
        """
        Add one entry: C{dt}, C{ip}, C{method}, C{status}, C{size} and the ids
        C{id_vhost}, C{id_url}, C{id_referrer}, C{id_useragent}.

        @return: The new entry's id.
        """
        return _primaryKey(self.conn.execute(self.entries.insert().values(**entry)))

    @transact
    def setEntries(
        self,
        entries: Sequence[dict[str, Any]],
        newValues: Mapping[str, Sequence[str]] | None = None,
        progress: tuple[str, int] | None = None,
    ) -> dict[str, dict[str, int]]:
        """
        Add many entries in one transaction (one C{executemany}).

        Each entry has C{dt}, C{ip}, C{method}, C{status}, C{size} and, for
        each indexed value, its id (C{id_url}) or, when the caller does not
        know the id yet, the value itself (C{url}), listed in C{newValues}.
        Those get their ids first, in this same transaction: the entries and
        the values they refer to commit together or not at all.

        @param entries: Made for this call; the ids are filled in here.
        @param newValues: Table name -> values whose ids are not known.
        @param progress: C{(source, records)}: how many records of that
            source are committed with this batch (see L{resumePoint}),
            written in the same transaction as the entries.
        @return: Table name -> value -> id for the C{newValues}, for the
            caller's cache.
        """
        found: dict[str, dict[str, int]] = {}
        for name, values in (newValues or {}).items():
            # A @transact method called from inside a transaction runs inline,
            # in that transaction, and returns its plain value.
            found[name] = cast("dict[str, int]", self.setNameValues(name, values))
        if found:
            for entry in entries:
                for name, ids in found.items():
                    if name in entry:
                        entry[f"id_{name}"] = ids[entry.pop(name)]
        if entries:
            self.conn.execute(self.entries.insert(), list(entries))
        if progress is not None:
            self._setProgress(*progress)
        return found

    def _setProgress(self, source: str, records: int) -> None:
        # Inside a transaction (worker thread).
        t = self.ingests
        updated = self.conn.execute(
            t.update().where(t.c.source == source).values(records=records)
        )
        if not updated.rowcount:
            self.conn.execute(t.insert().values(source=source, records=records))

    @transact
    def resumePoint(self, source: str) -> int:
        """
        How many records of C{source} an unfinished ingestion committed (0:
        none, or it finished).
        """
        t = self.ingests
        found = self.conn.execute(
            SA.select(t.c.records).where(t.c.source == source)
        ).scalar()
        return int(found or 0)

    @transact
    def finishIngest(self, source: str) -> None:
        """
        The ingestion of C{source} is complete: a later run starts it over
        (adding its entries again).
        """
        t = self.ingests
        self.conn.execute(t.delete().where(t.c.source == source))

    @transact
    def clear(self) -> None:
        """
        Delete every entry and every indexed value.
        """
        self.conn.execute(self.entries.delete())
        self.conn.execute(self.ingests.delete())
        for name in INDEXED_VALUES:
            self.conn.execute(self._valueTable(name).delete())

    # The id cache (reactor thread) -----------------------------------------

    def rememberIDs(self, found: Mapping[str, Mapping[str, int]]) -> None:
        """
        Add ids to the cache: table name -> value -> id.
        """
        for name, ids in found.items():
            self.idTable[name].update(ids)

    def forgetIDs(self) -> None:
        """
        Empty the cache (after L{clear}).
        """
        for ids in self.idTable.values():
            ids.clear()

    async def setRecord(self, record: Record) -> int:
        """
        Add one parsed request, the seed's way: each indexed value's id from
        the cache, or from L{setNameValue} (ahead of other queued work), then
        L{setEntry}. L{setEntries} does the same for a whole batch in one
        transaction.

        @return: The new entry's id.
        """
        entry: dict[str, Any] = {
            "dt": record.dt,
            "ip": record.ip,
            "method": record.method,
            "status": record.status,
            "size": record.size,
        }
        for name in INDEXED_VALUES:
            value = getattr(record, name)
            ID = self.idTable[name].get(value)
            if ID is None:
                # niceness -15: ahead of queued work.
                ID = await self.setNameValue(name, value, niceness=-15)
                self.idTable[name][value] = ID
            entry[f"id_{name}"] = ID
        return await self.setEntry(entry)

    # Reading ----------------------------------------------------------------

    @transact
    def summary(self) -> dict[str, Any]:
        """
        Totals: entries, distinct IPs, bytes sent, first and last time.
        """
        e = self.entries
        row = self.conn.execute(
            SA.select(
                SA.func.count(),
                SA.func.count(SA.distinct(e.c.ip)),
                SA.func.coalesce(SA.func.sum(e.c.size), 0),
                SA.func.min(e.c.dt),
                SA.func.max(e.c.dt),
            )
        ).one()
        return {
            "entries": int(row[0]),
            "ips": int(row[1]),
            "bytes": int(row[2]),
            "first": row[3],
            "last": row[4],
        }

    @transact
    def topValues(self, name: str, n: int) -> SA.CursorResult[Any]:
        """
        The C{n} most requested values of an indexed-value table, as rows of
        (value, requests), most first.
        """
        table = self._valueTable(name)
        e = self.entries
        count = SA.func.count().label("requests")
        return self.conn.execute(
            SA.select(table.c.value, count)
            .select_from(e.join(table, table.c.id == e.c[f"id_{name}"]))
            .group_by(table.c.value)
            .order_by(count.desc(), table.c.value)
            .limit(n)
        )

    @transact
    def topIPs(self, n: int) -> SA.CursorResult[Any]:
        """
        The C{n} busiest client addresses, as rows of (ip, requests).
        """
        e = self.entries
        count = SA.func.count().label("requests")
        return self.conn.execute(
            SA.select(e.c.ip, count)
            .group_by(e.c.ip)
            .order_by(count.desc(), e.c.ip)
            .limit(n)
        )

    @transact
    def requestsPerHour(self) -> SA.CursorResult[Any]:
        """
        Requests in each hour with any, as rows of (year, month, day, hour,
        requests) in time order.
        """
        dt = self.entries.c.dt
        parts = [SA.extract(f, dt) for f in ("year", "month", "day", "hour")]
        return self.conn.execute(
            SA.select(*parts, SA.func.count()).group_by(*parts).order_by(*parts)
        )

    @transact
    def statusMix(self) -> SA.CursorResult[Any]:
        """
        Requests by HTTP status, as rows of (status, requests).
        """
        e = self.entries
        return self.conn.execute(
            SA.select(e.c.status, SA.func.count())
            .group_by(e.c.status)
            .order_by(e.c.status)
        )

    @transact
    def databaseKind(self) -> str:
        """
        The database's dialect name: C{sqlite}, C{postgresql}, C{mysql}, ...
        """
        return str(self.conn.dialect.name)

    def _entriesSelect(
        self,
        columns: list[SA.ColumnElement[Any]] | None,
        since: datetime | None,
        limit: int | None,
    ) -> SA.Select[Any]:
        """
        Entries joined to their indexed values, oldest first: the columns
        given, or all of them spelled out. C{since} and C{limit} are bound
        parameters.
        """
        e = self.entries
        joined: SA.FromClause = e
        values = {}
        for name in INDEXED_VALUES:
            table = self._valueTable(name)
            values[name] = table.c.value
            joined = joined.outerjoin(table, table.c.id == e.c[f"id_{name}"])
        if columns is None:
            columns = [e.c.id, e.c.dt, e.c.ip, e.c.method, e.c.status, e.c.size]
            columns += [values[name].label(name) for name in INDEXED_VALUES]
        select = SA.select(*columns).select_from(joined).order_by(e.c.dt, e.c.id)
        if since is not None:
            select = select.where(e.c.dt >= SA.bindparam("since", since))
        if limit is not None:
            select = select.limit(SA.bindparam("limit", limit))
        return select

    @transact
    def entriesSince(
        self, since: datetime | None = None, limit: int | None = None
    ) -> SA.CursorResult[Any]:
        """
        Entries from C{since} on (all of them without it), oldest first, at
        most C{limit}, with their indexed values spelled out: rows of (id,
        dt, ip, method, status, size, vhost, url, referrer, useragent).
        """
        return self.conn.execute(self._entriesSelect(None, since, limit))

    @transact
    def entryLines(
        self, since: datetime | None = None, limit: int | None = None
    ) -> SA.CursorResult[Any]:
        """
        The same entries as L{entriesSince}, each as one line of JSON text
        made by the database (a one-column row), for streaming: the reactor
        thread then only copies text, it encodes nothing.

        The objects have the keys of L{ENTRY_FIELDS}, C{dt} as
        C{2024-03-04T13:55:36} (UTC); the order of the keys and the spacing
        depend on the database.

        @raise NotImplementedError: the database has no JSON functions that
            this knows (SQLite, PostgreSQL and MySQL/MariaDB have).
        """
        e = self.entries
        dialect = self.conn.dialect.name
        dt: SA.ColumnElement[Any]
        if dialect == "sqlite":
            build: Any = SA.func.json_object
            dt = SA.func.strftime("%Y-%m-%dT%H:%M:%S", e.c.dt)
        elif dialect == "postgresql":
            build = SA.func.json_build_object
            dt = SA.func.to_char(e.c.dt, 'YYYY-MM-DD"T"HH24:MI:SS')
        elif dialect in ("mysql", "mariadb"):
            build = SA.func.json_object
            dt = SA.func.date_format(e.c.dt, "%Y-%m-%dT%H:%i:%s")
        else:
            raise NotImplementedError(f"no JSON lines from {dialect}")
        # (Only constants go into these functions: the format strings and the
        # keys are bound parameters, like since and limit.)
        values = {
            "id": e.c.id, "dt": dt, "ip": e.c.ip, "method": e.c.method,
            "status": e.c.status, "size": e.c.size,
        }  # fmt: skip
        for name in INDEXED_VALUES:
            values[name] = self._valueTable(name).c.value
        pairs: list[Any] = []
        for key in ENTRY_FIELDS:
            # The keys are bound parameters too.
            pairs += [SA.literal(key, SA.String), values[key]]
        line = SA.cast(build(*pairs), SA.Text)
        return self.conn.execute(self._entriesSelect([line], since, limit))
