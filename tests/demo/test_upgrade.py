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


async def buildOldLayout(url: str) -> None:
    """
    The demo's database before 0.20, with one request in it: this
    version's tables without the index on C{entries.status}, dropped after
    they were made.
    """
    broker = LogBroker(url)
    try:
        await broker.setEntries(
            [
                {
                    "dt": datetime(2024, 3, 4, 13, 55, 36),
                    "ip": "203.0.113.9",
                    "method": "GET",
                    "status": 404,
                    "size": 10,
                    **{name: "x" for name in INDEXED_VALUES},
                }
            ],
            {name: ["x"] for name in INDEXED_VALUES},
        )
    finally:
        await broker.shutdown()
    engine = SA.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_entries_status")
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
    await buildOldLayout(url)
    assert "ix_entries_status" not in indexNames(url)
    broker = LogBroker(url)
    try:
        rows = await broker.statusMix(asList=True)
        assert [tuple(r) for r in rows] == [(404, 1)]
    finally:
        await broker.shutdown()
    assert indexNames(url) == {"ix_entries_dt", "ix_entries_ip", "ix_entries_status"}
