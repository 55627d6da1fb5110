"""
What became of a COMMIT whose answer was lost (PostgreSQL).

When the connection dies while COMMIT is in flight, the client cannot tell
whether the server committed. A transaction that may be retried learns its
transaction ID just before COMMIT (C{txid_current_if_assigned()}: C{NULL}
if it wrote nothing), and after such a loss L{lostCommitOutcome} asks the
database, on a new connection, with C{txid_status()}. Behind a
transaction-mode pooler the backend's process ID is asked in the same
statement (the one the driver knows is made up by the pooler). If the old backend
still runs the transaction (a network cut it has not noticed), it is
terminated first, which settles the outcome either way (a backend finishes
a commit it has started before it dies).

Worker thread only: everything here blocks.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import sqlalchemy as SA
from sqlalchemy.engine import Connection, Engine
from twisted.logger import Logger

log = Logger()

COMMITTED = "committed"
ABORTED = "aborted"
NOTHING_WRITTEN = "nothing written"
UNKNOWN = "unknown"

#: Seconds to keep asking before the outcome is called unknown.
CHECK_SECONDS = 10.0
#: Seconds between questions.
CHECK_INTERVAL = 0.2

#: How many lookups gave each verdict (for tests and diagnostics).
verdicts: Counter[str] = Counter()
_verdictsLock = threading.Lock()

#: Asked just before COMMIT (C{NULL}: the transaction wrote nothing).
XID_SQL = "SELECT txid_current_if_assigned()"
#: The same behind a pooler, with the server process's ID.
XID_PID_SQL = "SELECT txid_current_if_assigned(), pg_backend_pid()"
_STATUS_SQL = SA.text("SELECT txid_status(:xid)")
# Only the backend still running this very transaction (its 32-bit xid).
_TERMINATE_SQL = SA.text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE pid = :pid AND backend_xid::text::bigint = :xid % 4294967296"
)


def transactionID(
    connection: Connection, pooled: bool = False
) -> tuple[int | None, int | None]:
    """
    Worker thread, just before COMMIT: the running transaction's ID (C{None}
    if it has written nothing) and the backend's process ID.

    @param pooled: Whether the connection goes through a transaction-mode
        pooler: then the process ID is asked in the same statement; else
        the driver knows it (nothing more is asked).
    """
    if pooled:
        row = connection.exec_driver_sql(XID_PID_SQL).one()
        xid, pid = row[0], int(row[1])
    else:
        xid = connection.exec_driver_sql(XID_SQL).scalar()
        pid = backendPID(connection.connection.dbapi_connection)
    return (None if xid is None else int(xid)), pid


def backendPID(dbapiConnection: Any) -> int:
    """
    The server process ID of a PostgreSQL DBAPI connection, as its driver
    knows it (no statement is sent): psycopg2's C{get_backend_pid()},
    psycopg 3's C{info.backend_pid}.
    """
    info = getattr(dbapiConnection, "info", None)
    pid = getattr(info, "backend_pid", None)
    if pid is None:
        pid = dbapiConnection.get_backend_pid()
    return int(pid)


def lostCommitOutcome(
    engine: Engine,
    xid: int | None,
    pid: int | None,
    *,
    seconds: float = CHECK_SECONDS,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """
    Worker thread: what became of transaction C{xid}, whose COMMIT's answer
    was lost with the connection to backend C{pid}.

    @param xid: From C{txid_current_if_assigned()}, asked just before
        COMMIT; C{None} if the transaction had written nothing.
    @return: L{COMMITTED}, L{ABORTED}, L{NOTHING_WRITTEN} or, if the
        database could not be asked within C{seconds}, L{UNKNOWN}.
    """
    verdict = _lookUp(engine, xid, pid, seconds, sleep, clock)
    with _verdictsLock:
        verdicts[verdict] += 1
    return verdict


def _lookUp(
    engine: Engine,
    xid: int | None,
    pid: int | None,
    seconds: float,
    sleep: Callable[[float], object],
    clock: Callable[[], float],
) -> str:
    if xid is None:
        return NOTHING_WRITTEN
    deadline = clock() + seconds
    while True:
        status: Any = None
        try:
            with engine.connect() as connection:
                status = connection.execute(_STATUS_SQL, {"xid": xid}).scalar()
                if status == "in progress" and pid is not None:
                    connection.execute(_TERMINATE_SQL, {"pid": pid, "xid": xid})
                connection.rollback()
        except Exception as e:
            log.info(
                "Could not ask about transaction {xid} yet: {error}", xid=xid, error=e
            )
        if status in (COMMITTED, ABORTED):
            return str(status)
        if clock() >= deadline:
            return UNKNOWN
        sleep(CHECK_INTERVAL)


__all__ = [
    "ABORTED",
    "COMMITTED",
    "NOTHING_WRITTEN",
    "UNKNOWN",
    "XID_PID_SQL",
    "XID_SQL",
    "backendPID",
    "lostCommitOutcome",
    "transactionID",
    "verdicts",
]
