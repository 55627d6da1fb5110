"""
A PgBouncer in transaction mode for the tests: C{SASYNC_TEST_PGBOUNCER}
if set (a URL of a PgBouncer in transaction mode whose C{*} database entry
reaches the test PostgreSQL server, with C{default_pool_size = 2}), else a
throwaway one started here, with a generated configuration, on a free
port, in front of the test PostgreSQL server. The system's pgbouncer
service is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from tests.databases import KINDS, requireAll, withDriver
from tests.reliability.cluster import NoCluster, _freePort, runAsServerUser

#: The pooler's server connections per database and user.
POOL_SIZE = 2
#: Seconds a client may wait for a server connection before PgBouncer
#: fails its query (the issue's symptom; 120 by default).
QUERY_WAIT_TIMEOUT = 5
#: The variable naming a PgBouncer of the user's own.
ENV_VAR = "SASYNC_TEST_PGBOUNCER"


def findPgBouncer() -> str:
    """
    The C{pgbouncer} program.

    @raise NoCluster: there is none (fatal when every database is required).
    """
    found = shutil.which("pgbouncer")
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/usr/bin"):
        if os.access(f"{folder}/pgbouncer", os.X_OK):
            return f"{folder}/pgbouncer"
    raise NoCluster(
        f"no pgbouncer for the pooler tests: apt-get install pgbouncer (or set"
        f" {ENV_VAR} to the URL of a PgBouncer in transaction mode)",
        fatal=requireAll(),
    )


class Bouncer:
    """
    A PgBouncer in transaction mode in front of the PostgreSQL server at
    C{server} (an admin URL): every database of that server is reachable
    through it, under the same name.
    """

    def __init__(self, server: URL) -> None:
        self.server = server
        self.process: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        configured = os.environ.get(ENV_VAR, "")
        if configured:
            self.url = withDriver(KINDS["postgresql"], configured)
            return
        program = findPgBouncer()
        self.dir = Path(tempfile.mkdtemp(prefix="sasync-pgbouncer."))
        port = _freePort()
        self.url = server.set(host="127.0.0.1", port=port, query={})
        self._configure(port)
        runAs = runAsServerUser(self.dir)
        log = open(self.dir / "output.log", "wb")  # noqa: SIM115 (kept open)
        try:
            self.process = subprocess.Popen(
                [*runAs, program, str(self.dir / "pgbouncer.ini")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self._waitUntilListening(port)

    def _configure(self, port: int) -> None:
        assert self.dir is not None
        server = self.server
        # A unix socket folder (host=/tmp/...) or a host name.
        host = server.query.get("host") or server.host or "127.0.0.1"
        if isinstance(host, tuple):
            host = host[0]
        serverPort = server.query.get("port") or server.port or 5432
        user = server.username or "postgres"
        (self.dir / "users.txt").write_text(f'"{user}" "{server.password or ""}"\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"""[databases]
* = host={host} port={serverPort}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = transaction
default_pool_size = {POOL_SIZE}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
query_wait_timeout = {QUERY_WAIT_TIMEOUT}
server_login_retry = 1
ignore_startup_parameters = extra_float_digits
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
"""
        )

    def _waitUntilListening(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
            ):
                return
            if self.process is not None and self.process.poll() is not None:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        output = self._logs()
        self.close()
        raise RuntimeError(f"pgbouncer did not start listening on {port}:\n{output}")

    def _logs(self) -> str:
        if self.dir is None:
            return ""
        texts = []
        for name in ("output.log", "pgbouncer.log"):
            path = self.dir / name
            if path.exists():
                texts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(texts)

    def on(self, url: str) -> str:
        """
        The URL of the database of C{url} (on the test server) through the
        pooler.
        """
        database = make_url(url).database
        return self.url.set(database=database).render_as_string(hide_password=False)

    def close(self) -> None:
        """
        Stop the throwaway pooler (its server connections close with it)
        and remove its folder.
        """
        process, self.process = self.process, None
        if process is not None:
            assert self.dir is not None
            pidFile = self.dir / "pgbouncer.pid"
            # Under runuser, the process started is runuser: stop pgbouncer
            # itself (SIGTERM: at once, closing every connection).
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidFile.read_text().strip()), signal.SIGTERM)
            with contextlib.suppress(OSError):
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
