"""
A throwaway PostgreSQL cluster of the tests' own (initdb + pg_ctl in a temp
dir, on a free port), which the tests may stop and restart. The shared
server is never touched.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as SA
from sqlalchemy.pool import NullPool

from tests.databases import pgDriver, requireAll

T = TypeVar("T")


class NoCluster(Exception):
    """
    No PostgreSQL server binaries here (C{fatal}: the tests must fail).
    """

    def __init__(self, message: str, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


def madeOrSkipped(make: Callable[[], T]) -> T:
    """
    C{make()}, for a fixture: with no PostgreSQL binaries here the test is
    skipped (or fails, when every database is required).
    """
    import pytest  # (Here: the benchmarks import this module without it.)

    try:
        return make()
    except NoCluster as e:
        if e.fatal:
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))


def findPostgresBin() -> Path:
    """
    The folder holding C{initdb} and C{pg_ctl}.

    @raise NoCluster: there is none.
    """
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if os.access(f"{folder}/initdb", os.X_OK) and os.access(
            f"{folder}/pg_ctl", os.X_OK
        ):
            return Path(folder)
    raise NoCluster(
        "no initdb/pg_ctl for a throwaway PostgreSQL cluster (apt-get install"
        " postgresql)",
        fatal=requireAll(),
    )


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runAsServerUser(folder: Path) -> list[str]:
    """
    The command prefix that runs a server program as user C{postgres} (or
    C{nobody}) when the tests run as root (PostgreSQL and PgBouncer refuse
    to run as root), giving C{folder} to that user; C{[]} otherwise.
    """
    if os.geteuid() != 0:
        return []
    user = "postgres"
    try:
        subprocess.run(["id", user], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        user = "nobody"
    shutil.chown(folder, user)
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", user, "--"]


class Cluster:
    """
    One throwaway cluster, listening on 127.0.0.1 and a unix socket in its
    temp dir. As root, the server runs as user C{postgres} (or C{nobody}).
    """

    _serial = itertools.count(1)
    #: More C{-c name=value} server options (subclasses).
    extraOptions = ""

    def __init__(self) -> None:
        self.bin = findPostgresBin()
        self.dir = Path(tempfile.mkdtemp(prefix="sasync-reliability-pg."))
        self.port = _freePort()
        self.runAs = runAsServerUser(self.dir)
        self.data = self.dir / "data"
        # The driver the suite runs on (SASYNC_TEST_PG_DRIVER).
        self.url = f"postgresql+{pgDriver()}://postgres@127.0.0.1:{self.port}/postgres"
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--locale=C",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self.runAs, str(self.bin / tool), *args],
            # (A folder the server's user can read: not root's own.)
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode:
            log = self.dir / "server.log"
            extra = log.read_text() if log.exists() else ""
            raise RuntimeError(
                f"{tool} failed: {result.stdout}{result.stderr}\n{extra[-2000:]}"
            )

    def start(self) -> None:
        """
        Start the server and wait until it accepts connections.
        """
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            # fsync off is safe here: a server crash keeps the OS's cache.
            # synchronous_commit stays on: an acknowledged COMMIT is in the WAL.
            " -c fsync=off -c full_page_writes=off"
            " -c max_connections=100"
            f"{self.extraOptions}"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """
        Stop the server (C{fast}: connections are closed; C{immediate}: a
        crash, recovered at the next start).
        """
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """
        Stop and start again.
        """
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        """
        Whether the server runs.
        """
        result = subprocess.run(
            [*self.runAs, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            cwd=self.dir,
            capture_output=True,
        )
        return result.returncode == 0

    def ensureRunning(self) -> None:
        """
        Start the server unless it runs.
        """
        if not self.running():
            self.start()

    def _admin(self) -> SA.Engine:
        return SA.create_engine(
            self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )

    def createDatabase(self) -> str:
        """
        @return: the URL of a new, empty database on the cluster.
        """
        name = f"reliability_{next(self._serial)}"
        engine = self._admin()
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        finally:
            engine.dispose()
        return self.url.rsplit("/", 1)[0] + "/" + name

    def dropDatabase(self, url: str) -> None:
        """
        Drop the database at C{url}, closing its connections first.
        """
        name = url.rsplit("/", 1)[1]
        engine = self._admin()
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            engine.dispose()

    def close(self) -> None:
        """
        Stop the server and remove the cluster.
        """
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
