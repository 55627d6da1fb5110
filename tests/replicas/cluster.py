"""
A throwaway primary with two hot standbys (streaming replication), made by
the tests themselves with initdb and C{pg_basebackup -R} on free ports,
never touching the shared server. The second standby replays the WAL with
a delay (C{recovery_min_apply_delay}), so that staleness is observable.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import sqlalchemy as SA
from sqlalchemy.pool import NullPool

from tests.reliability.cluster import Cluster, _freePort

#: The second standby's replay delay, in milliseconds.
APPLY_DELAY_MS = 300


class Standby(Cluster):
    """
    A hot standby of C{primary}, copied from it with C{pg_basebackup -R}
    (which writes the standby's connection to the primary into its
    configuration), streaming from it.
    """

    def __init__(self, primary: Cluster, applyDelayMS: int = 0) -> None:
        self.bin = primary.bin
        self.runAs = primary.runAs
        self.dir = Path(tempfile.mkdtemp(prefix="sasync-replica-pg."))
        if self.runAs:
            shutil.chown(self.dir, self.runAs[2])
        self.port = _freePort()
        self.data = self.dir / "data"
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        if applyDelayMS:
            self.extraOptions = f" -c recovery_min_apply_delay={applyDelayMS}ms"
        self._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "--no-sync",
        )
        self.start()

    def promote(self) -> None:
        """
        Make this standby a primary (C{pg_ctl promote}), waiting for it.
        """
        self._run("pg_ctl", "-D", str(self.data), "-w", "promote")

    def on(self, url: str) -> str:
        """
        The URL of the database of C{url} (a primary's) on this standby.
        """
        return self.url.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1]


class ReplicatedCluster:
    """
    A primary and its standbys: by default two, the second one delayed.
    """

    def __init__(self, applyDelaysMS: tuple[int, ...] = (0, APPLY_DELAY_MS)) -> None:
        """
        @param applyDelaysMS: One standby for each, replaying the WAL that
            many milliseconds late.
        """
        self.primary = Cluster()
        self.standbys: list[Standby] = []
        try:
            for delay in applyDelaysMS:
                self.standbys.append(Standby(self.primary, delay))
        except BaseException:
            self.close()
            raise

    def createDatabase(self) -> tuple[str, list[str]]:
        """
        A new, empty database: its URL on the primary, and on each standby
        (once both have replayed its creation).
        """
        url = self.primary.createDatabase()
        self.waitForReplay()
        return url, [s.on(url) for s in self.standbys]

    def waitForReplay(self, timeout: float = 30.0) -> None:
        """
        Wait until every running standby has replayed what the primary has
        written so far.
        """
        engine = SA.create_engine(self.primary.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                lsn = conn.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar()
        finally:
            engine.dispose()
        deadline = time.monotonic() + timeout
        for standby in self.standbys:
            if not standby.running():
                continue
            engine = SA.create_engine(standby.url, poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    while not conn.exec_driver_sql(
                        "SELECT pg_last_wal_replay_lsn() >= %(lsn)s::pg_lsn",
                        {"lsn": lsn},
                    ).scalar():
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{standby.url} did not catch up")
                        time.sleep(0.02)
                        conn.rollback()
            finally:
                engine.dispose()

    def close(self) -> None:
        """
        Stop and remove every server.
        """
        for standby in self.standbys:
            with contextlib.suppress(Exception):
                standby.close()
        self.primary.close()
