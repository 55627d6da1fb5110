"""
A later demo version on a database made by an earlier one: table() adds
what the new version declares (the index ix_entries_status), in place,
keeping the rows.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as SA

from sasync.demo.logbroker import INDEXED_VALUES, LogBroker
from sasync.demo.logparse import VALUE_LENGTH


def buildOldLayout(url: str) -> None:
    """
    The tables of the demo before 0.20 (no index on C{entries.status}),
    with one request in them, made without sAsync.
    """
    metadata = SA.MetaData()
    entries = SA.Table(
        "entries",
        metadata,
        SA.Column("id", SA.Integer, primary_key=True),
        SA.Column("dt", SA.DateTime, nullable=False),
        SA.Column("ip", SA.String(45), nullable=False),
        SA.Column("method", SA.String(16), nullable=False),
        SA.Column("status", SA.SmallInteger, nullable=False),
        SA.Column("size", SA.Integer, nullable=False),
        *[SA.Column(f"id_{n}", SA.Integer, nullable=False) for n in INDEXED_VALUES],
        SA.Index("ix_entries_dt", "dt"),
        SA.Index("ix_entries_ip", "ip"),
    )
    values = {
        name: SA.Table(
            name,
            metadata,
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("value", SA.String(VALUE_LENGTH), nullable=False),
            SA.Index(f"ux_{name}_value", "value", unique=True),
        )
        for name in INDEXED_VALUES
    }
    engine = SA.create_engine(url)
    with engine.begin() as conn:
        metadata.create_all(conn)
        for table in values.values():
            conn.execute(table.insert().values(id=1, value="x"))
        conn.execute(
            entries.insert().values(
                dt=datetime(2024, 3, 4, 13, 55, 36),
                ip="203.0.113.9",
                method="GET",
                status=404,
                size=10,
                **{f"id_{n}": 1 for n in INDEXED_VALUES},
            )
        )
    engine.dispose()


def indexNames(url: str) -> set[str]:
    """
    The names of the indexes of C{entries}.
    """
    engine = SA.create_engine(url)
    try:
        with engine.connect() as conn:
            return {i["name"] for i in SA.inspect(conn).get_indexes("entries")}
    finally:
        engine.dispose()


async def test_oldDemoDatabaseUpgraded(tmp_path: Path) -> None:
    """
    The demo's broker starts on an sasync-demo.db of the previous layout,
    adds ix_entries_status, and reads the old request back.
    """
    url = f"sqlite:///{tmp_path / 'sasync-demo.db'}"
    buildOldLayout(url)
    assert "ix_entries_status" not in indexNames(url)
    broker = LogBroker(url)
    try:
        rows = await broker.statusMix(asList=True)
        assert [tuple(r) for r in rows] == [(404, 1)]
    finally:
        await broker.shutdown()
    assert indexNames(url) == {"ix_entries_dt", "ix_entries_ip", "ix_entries_status"}
