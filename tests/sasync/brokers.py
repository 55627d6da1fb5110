"""
Brokers the sasync tests share, starting with the seed's own example.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as SA
from twisted.internet import defer

from sasync import AccessBroker, transact


class LogBroker(AccessBroker):
    """
    The example from DESIGN.md, unchanged, plus two helpers for the tests.
    """

    indexedValues = ("vhost", "url")

    @defer.inlineCallbacks
    def startup(self):  # type: ignore[no-untyped-def]
        yield self.table(
            "entries",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("dt", SA.DateTime),
            SA.Column("ip", SA.String(15)),
            index_dt=["dt"],
            index_ip=["ip"],
        )
        for name in self.indexedValues:
            yield self.table(
                name,
                SA.Column("id", SA.Integer, primary_key=True),
                SA.Column("value", SA.String(255)),
                unique_value=["value"],
            )

    @transact
    def setNameValue(self, name, value):  # type: ignore[no-untyped-def]
        table = getattr(self, name)
        if not self.s("s_" + name):
            self.s([table.c.id], table.c.value == SA.bindparam("value"))
        ID = self.s().execute(value=value).scalar()
        if ID is None:
            ID = self.conn.execute(
                table.insert().values(value=value)
            ).inserted_primary_key[0]
        return ID

    @transact
    def entriesSince(self, dt):  # type: ignore[no-untyped-def]
        t = self.entries
        return self.conn.execute(SA.select(t).where(t.c.dt >= dt))

    # Helpers for the tests (not in the seed) ----------------------------------

    @transact
    def addEntries(self, rows: list[dict[str, Any]]) -> None:
        """
        Insert many entries in one transaction.
        """
        self.conn.execute(self.entries.insert(), rows)

    @transact
    def count(self, name: str) -> int:
        """
        How many rows table C{name} has.
        """
        table = getattr(self, name)
        query = SA.select(SA.func.count()).select_from(table)
        return int(self.conn.execute(query).scalar_one())
