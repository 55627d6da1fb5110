"""
Interrupting a running transaction at the driver, for honest cancellation.

When a running transaction's Deferred is cancelled (or its timeout runs
out), the task's interrupter, registered here, is called in the reactor
thread. It must not block, so the driver-level cancel is sent from a
reactor pool thread:

  - PostgreSQL (psycopg2): C{connection.cancel()}, a cancel request on a
    separate socket;
  - MySQL/MariaDB (PyMySQL): C{KILL QUERY <thread id>} from a separate short
    connection;
  - SQLite: a progress handler, installed when the connection is made,
    aborts the running statement once the task is asked to stop (it runs in
    the worker thread and looks at that thread's task only, so it never
    hits an unrelated iteration interleaved on the same connection).

The cancel is sent under a per-connection lock and only while the very task
it is meant for still runs on the connection, so it never hits the next
transaction. It is repeated every L{RESEND_INTERVAL} seconds until the task
ends, which closes the small window in which a statement starts just after
a cancel arrived. The engine's execution context (see
L{sasync.connection}) refuses new statements of a task asked to stop. The worker
then rolls back and only then does the caller see C{CancelledError} (or
C{TaskTimeout}).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from asynqueue.task import Task, TaskState, currentTask

log = Logger()

#: Seconds between repeated cancels of a task that has not stopped yet.
RESEND_INTERVAL = 0.5

#: SQLite virtual machine instructions between checks for a stop request.
SQLITE_PROGRESS_STEPS = 4000


def _sqliteProgress() -> int:
    # Worker thread, inside sqlite3_step: nonzero aborts the statement.
    task = currentTask()
    return 1 if task is not None and task.stopRequested else 0


class Canceller:
    """
    Sends driver-level cancels to one connection. Made and set up in the
    worker thread that owns the connection; L{interrupt} is called in the
    reactor thread, L{sendCancel} in a reactor pool thread.
    """

    def __init__(
        self, dialectName: str, killQuery: Callable[[int], None] | None
    ) -> None:
        """
        @param dialectName: SQLAlchemy's dialect name (C{postgresql},
            C{mysql}, C{sqlite}, ...).
        @param killQuery: For MySQL: runs C{KILL QUERY n} on a separate
            connection (blocking; called from a pool thread).
        """
        self.dialectName = dialectName
        self._killQuery = killQuery
        # Guards activeTask and the sending of a cancel.
        self._lock = threading.Lock()
        self.activeTask: Task[Any] | None = None
        self._target: Any = None

    def attach(self, dbapiConnection: Any) -> None:
        """
        Worker thread: learn how to cancel statements on this newly made
        DBAPI connection.
        """
        name = self.dialectName
        if name == "postgresql" and hasattr(dbapiConnection, "cancel"):
            self._target = dbapiConnection
        elif name in ("mysql", "mariadb") and hasattr(dbapiConnection, "thread_id"):
            # From the handshake: no statement is run to learn it.
            self._target = int(dbapiConnection.thread_id())
        elif name == "sqlite" and hasattr(dbapiConnection, "set_progress_handler"):
            dbapiConnection.set_progress_handler(_sqliteProgress, SQLITE_PROGRESS_STEPS)
            self._target = None
        else:
            self._target = None

    @property
    def canInterrupt(self) -> bool:
        """
        Whether a running statement can be stopped on this connection.
        """
        return self.dialectName == "sqlite" or self._target is not None

    def enter(self, task: Task[Any] | None) -> None:
        """
        Worker thread: C{task} starts running on the connection.
        """
        self.activeTask = task

    def leave(self) -> None:
        """
        Worker thread: the task is done with the connection. Waits for a
        cancel being sent right now, so that it cannot hit the next task.
        """
        with self._lock:
            self.activeTask = None

    def interrupt(self, task: Task[Any], reactor: Any) -> None:
        """
        Reactor thread: ask the driver to stop what C{task} runs. Never
        blocks.
        """
        if self.dialectName == "sqlite":
            # The progress handler sees task.stopRequested; nothing to send.
            return
        if self._target is None:
            return
        reactor.callInThread(self.sendCancel, task)

        def again() -> None:
            if task.state is TaskState.RUNNING and self.activeTask is task:
                reactor.callInThread(self.sendCancel, task)
                reactor.callLater(RESEND_INTERVAL, again)

        reactor.callLater(RESEND_INTERVAL, again)

    def sendCancel(self, task: Task[Any]) -> None:
        """
        Pool thread: send the cancel, if C{task} still runs on the
        connection.
        """
        with self._lock:
            if self.activeTask is not task:
                return
            try:
                if self.dialectName == "postgresql":
                    self._target.cancel()
                elif self._killQuery is not None:
                    self._killQuery(self._target)
            except Exception:
                log.failure("Could not cancel {task}", task=task)


__all__ = ["RESEND_INTERVAL", "Canceller"]
