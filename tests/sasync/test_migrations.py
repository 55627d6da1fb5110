"""
broker.migrate(): Alembic upgrades on the broker's own connection, two
revisions (one in batch mode, which SQLite needs), brokers and processes
migrating at once, and a failing migration, on SQLite, PostgreSQL and
MySQL/MariaDB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from sasync import AccessBroker, MigrationFailed, StartupError, transact

ROOT = Path(__file__).resolve().parents[2]

ENV_PY = """\
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
"""

REVISIONS = {
    "a1": (
        None,
        """
        op.create_table(
            "applied", sa.Column("rev", sa.String(10), primary_key=True)
        )
        op.create_table(
            "things",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(20)),
        )
        op.execute("INSERT INTO applied (rev) VALUES ('a1')")
        """,
    ),
    "b2": (
        "a1",
        """
        import time
        time.sleep(0.3)  # a window for brokers migrating at once
        op.add_column("things", sa.Column("note", sa.String(30)))
        with op.batch_alter_table("things") as batch:
            batch.alter_column(
                "name", existing_type=sa.String(20), type_=sa.String(40)
            )
        op.execute("INSERT INTO applied (rev) VALUES ('b2')")
        """,
    ),
}

FAILING = {
    "c3": (
        "b2",
        """
        op.add_column("things", sa.Column("extra", sa.Integer))
        op.execute("INSERT INTO no_such_table (x) VALUES (1)")
        """,
    ),
}


def scriptDirectory(root: Path, revisions: dict[str, tuple[str | None, str]]) -> str:
    """
    An Alembic script directory under C{root} with C{revisions}: name ->
    (down revision, body of upgrade()).
    """
    where = root / "migrations"
    (where / "versions").mkdir(parents=True)
    (where / "env.py").write_text(ENV_PY)
    for name, (down, body) in revisions.items():
        (where / "versions" / f"{name}.py").write_text(
            f'"""Revision {name}."""\n\n'
            "from alembic import op\n"
            "import sqlalchemy as sa\n\n"
            f"revision = {name!r}\n"
            f"down_revision = {down!r}\n"
            "branch_labels = None\n"
            "depends_on = None\n\n\n"
            "def upgrade():\n"
            f"{textwrap.indent(textwrap.dedent(body), '    ')}\n\n"
            "def downgrade():\n"
            "    pass\n"
        )
    return str(where)


class Things(AccessBroker):
    """
    Migrates to C{revision} in its start-up, then declares C{things} as
    revision b2 left it.
    """

    def __init__(self, url: str, scripts: str, revision: str = "head", **kw: Any):
        self.scripts = scripts
        self.revision = revision
        self.migrated: str | None = None
        super().__init__(url, **kw)

    async def startup(self) -> None:
        self.migrated = await self.migrate(self.scripts, self.revision)
        if self.migrated == "b2":
            await self.table(
                "things",
                SA.Column("id", SA.Integer, primary_key=True),
                SA.Column("name", SA.String(40)),
                SA.Column("note", SA.String(30)),
            )

    @transact
    def applied(self) -> list[str]:
        rows = self.conn.exec_driver_sql("SELECT rev FROM applied ORDER BY rev")
        return [r[0] for r in rows]


def tablesOf(url: str) -> set[str]:
    """
    The table names of the database at C{url}.
    """
    engine = SA.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(SA.inspect(conn).get_table_names())
    finally:
        engine.dispose()


async def test_migrateTwoRevisions(dbURL: str, brokers: Any, tmp_path: Path) -> None:
    """
    A broker migrates to a1; the next one to head (b2, a batch-mode
    change); a third finds nothing to do; table() then agrees with what
    the migrations made, and the rows of each step are there once.
    """
    scripts = scriptDirectory(tmp_path, REVISIONS)
    first = brokers(Things, dbURL, scripts, "a1")
    await first.waitUntilRunning()
    assert first.migrated == "a1"
    assert await first.applied() == ["a1"]
    await first.shutdown()
    second = brokers(Things, dbURL, scripts)
    await second.waitUntilRunning()
    assert second.migrated == "b2"
    await second.shutdown()
    third = brokers(Things, dbURL, scripts)
    await third.waitUntilRunning()
    assert third.migrated == "b2"
    assert await third.applied() == ["a1", "b2"]
    assert await third.migrate(scripts) == "b2"


@pytest.mark.reactorTimeout(90)
async def test_concurrentMigrate(dbURL: str, brokers: Any, tmp_path: Path) -> None:
    """
    Four brokers (separate engines and connections on the servers) migrate
    one database at once: each revision runs once, and all see head.
    """
    scripts = scriptDirectory(tmp_path, REVISIONS)
    many = [brokers(Things, dbURL, scripts, batchSize=50 + i) for i in range(4)]
    await defer.gatherResults([b.waitUntilRunning() for b in many])
    assert [b.migrated for b in many] == ["b2"] * 4
    assert await many[0].applied() == ["a1", "b2"]


PROCESS = """\
import sys
from twisted.internet import task
from tests.sasync.test_migrations import Things

async def main(reactor):
    broker = Things(sys.argv[1], sys.argv[2])
    await broker.waitUntilRunning()
    print(broker.migrated)
    await broker.shutdown()

task.react(lambda reactor: __import__("twisted.internet.defer").internet.defer
           .Deferred.fromCoroutine(main(reactor)))
"""


@pytest.mark.reactorTimeout(120)
async def test_concurrentMigrateProcesses(
    dbURL: str, brokers: Any, tmp_path: Path
) -> None:
    """
    Three processes start a migrating broker on one database at once (on
    SQLite too, where the write lock of BEGIN IMMEDIATE is the lock): each
    revision runs once, and every process sees head.
    """
    scripts = scriptDirectory(tmp_path, REVISIONS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run() -> list[str]:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", PROCESS, dbURL, scripts],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outs = []
        for proc in procs:
            out, err = proc.communicate(timeout=100)
            assert proc.returncode == 0, err
            outs.append(out.strip())
        return outs

    assert await deferToThread(run) == ["b2"] * 3
    checker = brokers(Things, dbURL, scripts)
    await checker.waitUntilRunning()
    assert await checker.applied() == ["a1", "b2"]


async def test_failingMigration(dbURL: str, brokers: Any, tmp_path: Path) -> None:
    """
    A migration that fails fails the start-up with MigrationFailed naming
    the revision; on PostgreSQL and SQLite the upgrade's transaction is
    rolled back whole, on MySQL/MariaDB (DDL commits at once) the
    revisions before it stay.
    """
    scripts = scriptDirectory(tmp_path, {**REVISIONS, **FAILING})
    broker = brokers(Things, dbURL, scripts)
    with pytest.raises(StartupError) as info:
        await broker.waitUntilRunning()
    error = info.value.__cause__
    assert isinstance(error, MigrationFailed)
    assert error.revision == "c3"
    assert "migration c3 (Revision c3.) failed" in str(error)
    assert "migration c3" in str(info.value)
    assert isinstance(error.__cause__, SA.exc.DBAPIError)
    if dbURL.startswith("mysql"):
        assert error.current == "b2"
        assert {"applied", "things", "alembic_version"} <= tablesOf(dbURL)
    else:
        assert error.current == ""
        assert not {"applied", "things"} & tablesOf(dbURL)


async def test_badScriptLocation(sqliteURL: str, brokers: Any, tmp_path: Path) -> None:
    """
    A script directory that is not there fails the start-up clearly.
    """
    broker = brokers(Things, sqliteURL, str(tmp_path / "nowhere"))
    with pytest.raises(StartupError, match="nowhere"):
        await broker.waitUntilRunning()


async def test_twoDatabasesAtOnce(brokers: Any, tmp_path: Path) -> None:
    """
    Brokers of two databases in one process migrate at once (Alembic's
    context is process-global): both reach head.
    """
    scripts = scriptDirectory(tmp_path, REVISIONS)
    both = [brokers(Things, f"sqlite:///{tmp_path / n}.db", scripts) for n in "ab"]
    await defer.gatherResults([b.waitUntilRunning() for b in both])
    assert [b.migrated for b in both] == ["b2", "b2"]
    assert [await b.applied() for b in both] == [["a1", "b2"]] * 2
