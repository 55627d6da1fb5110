"""
Interrupting a running transaction at the driver, for cancellation and
timeouts.

When a running transaction's Deferred is cancelled (or its timeout runs
out), the task's interrupter, registered here, is called in the reactor
thread. It must not block, so the driver-level cancel is sent from a thread
sAsync owns (one per engine, see L{sasync.connection._engines}), never from the
reactor's thread pool, which would keep its threads after the broker shut
down:

  - PostgreSQL: a cancel request on a separate socket (psycopg2's
    C{connection.cancel()}; psycopg 3's C{cancel_safe()}, libpq 17's
    cancel, which keeps the connection's SSL settings);
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
L{sasync.connection}) refuses new statements of a task asked to stop.

A server that does not answer (a frozen backend, a network cut) would keep
the worker blocked forever. So if the task still runs L{CUT_AFTER} seconds
after the first cancel, its connection's socket is shut down
(C{shutdown(SHUT_RDWR)}, from the reactor thread): the driver's blocked
read returns at once with a lost-connection error, and the worker replaces
the connection.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from asynqueue.task import Task, TaskState, currentTask

log = Logger()

#: Seconds between repeated cancels of a task that has not stopped yet.
RESEND_INTERVAL = 0.5

#: Seconds after the first cancel before the connection of a task that
#: still runs is cut. A cancel takes effect within 30 ms (PostgreSQL,
#: pg_sleep) to 0.5 s (PostgreSQL, a big sort; MariaDB's KILL QUERY, its
#: connection included) on a loaded 2-CPU machine: 2 s leaves a wide margin,
#: and a cut made in error only costs a new connection (the statement was
#: being cancelled anyway). The drivers have no better means: libpq has no
#: read timeout, TCP keepalives and C{tcp_user_timeout} never fire for a
#: stopped server process (its kernel still acknowledges), and PyMySQL's
#: C{read_timeout} would bound every long statement too.
CUT_AFTER = 2.0

#: SQLite virtual machine instructions between checks for a stop request.
SQLITE_PROGRESS_STEPS = 4000

#: Seconds psycopg 3's cancel_safe() may take before it gives up (a server
#: that does not answer is cut anyway, see CUT_AFTER).
CANCEL_TIMEOUT = 5.0

#: Runs a job (a blocking call) in a thread sAsync owns.
Send = Callable[[Callable[[], object]], object]


def _sqliteProgress() -> int:
    # Worker thread, inside sqlite3_step: nonzero aborts the statement.
    task = currentTask()
    return 1 if task is not None and task.stopRequested else 0


def socketFD(dbapiConnection: Any) -> int | None:
    """
    The file descriptor of a DBAPI connection's socket (psycopg2's
    C{fileno()}, PyMySQL's C{_sock}), or C{None} if it has none (SQLite).
    """
    fileno: Any = getattr(dbapiConnection, "fileno", None)
    if fileno is None:
        sock = getattr(dbapiConnection, "_sock", None)  # PyMySQL
        fileno = getattr(sock, "fileno", None)
    if not callable(fileno):
        return None
    try:
        fd = fileno()
    except Exception:
        return None
    if not isinstance(fd, int) or fd < 0:
        return None
    return fd


def _cancelPostgreSQL(dbapiConnection: Any) -> None:
    # Cancel thread: psycopg 3 has cancel_safe() (its cancel() is the
    # deprecated PQcancel); psycopg2 only cancel().
    cancelSafe = getattr(dbapiConnection, "cancel_safe", None)
    if cancelSafe is not None:
        cancelSafe(timeout=CANCEL_TIMEOUT)
    else:
        dbapiConnection.cancel()


class Canceller:
    """
    Sends driver-level cancels to one connection. Made and set up in the
    worker thread that owns the connection; L{interrupt} and L{cut} are
    called in the reactor thread, L{sendCancel} in sAsync's cancel thread.
    """

    def __init__(
        self,
        dialectName: str,
        killQuery: Callable[[int], None] | None,
        send: Send | None = None,
    ) -> None:
        """
        @param dialectName: SQLAlchemy's dialect name (C{postgresql},
            C{mysql}, C{sqlite}, ...).
        @param killQuery: For MySQL: runs C{KILL QUERY n} on a separate
            connection (blocking; called from the cancel thread).
        @param send: Runs a blocking job in the thread that sends cancels
            (C{None}: cancels are not sent, only the socket is cut).
        """
        self.dialectName = dialectName
        self._killQuery = killQuery
        self._send = send
        # Guards activeTask while a cancel is sent (held for as long as
        # sending takes).
        self._lock = threading.Lock()
        # Guards activeTask and _socket while the socket is cut (held only
        # for a system call, so the reactor thread may take it).
        self._cutLock = threading.Lock()
        self.activeTask: Task[Any] | None = None
        self._target: Any = None
        # A duplicate of the connection's socket: shutting it down shuts
        # the driver's down, and it never names another socket (a closed
        # descriptor number may be reused), until it is closed by detach().
        self._socket: socket.socket | None = None

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
        fd = socketFD(dbapiConnection) if name != "sqlite" else None
        duplicate = None
        if fd is not None:
            try:
                duplicate = socket.socket(fileno=os.dup(fd))
            except OSError:
                duplicate = None
        self.detach()
        with self._cutLock:
            self._socket = duplicate

    def detach(self) -> None:
        """
        Worker thread: the connection is about to be closed (or replaced):
        let go of its socket.
        """
        with self._cutLock:
            duplicate, self._socket = self._socket, None
        if duplicate is not None:
            duplicate.close()

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
        cancel being sent right now (or a cut being made), so that it
        cannot hit the next task.

        A cancel or cut is only ever sent for a task whose
        C{stopRequested} was set first (L{interrupt} is its interrupter,
        which L{Task.requestStop} calls after setting it); each checks
        C{activeTask} under its lock. So the locks are taken only for a
        task asked to stop: C{activeTask} is cleared before the flag is
        read, and a stop that sets the flag after that read finds no task
        of its own here to cancel or cut. (No lock per transaction.)
        """
        task = self.activeTask
        self.activeTask = None
        if task is not None and task.stopRequested:
            self.settle()

    def settle(self) -> None:
        """
        Worker thread, once C{activeTask} was cleared, for a task that was
        asked to stop (the rest of L{leave}, for a caller that clears
        C{activeTask} itself): a cancel (or cut) may be on its way for it,
        so wait until it is done, or has seen that the task left.
        """
        with self._lock, self._cutLock:
            pass

    def interrupt(self, task: Task[Any], clock: IReactorTime) -> None:
        """
        Reactor thread: ask the driver to stop what C{task} runs, again
        every L{RESEND_INTERVAL} seconds while it runs, and cut the
        connection if it still runs after L{CUT_AFTER} seconds. Never
        blocks. Only for a task asked to stop (its C{stopRequested} set
        already; see L{leave}).
        """
        if self.dialectName == "sqlite":
            # The progress handler sees task.stopRequested; nothing to send,
            # and no server to wait for.
            return
        if self._target is None and self._socket is None:
            return
        started = clock.seconds()
        self._sendTo(task)

        def again() -> None:
            if task.state is not TaskState.RUNNING or self.activeTask is not task:
                return
            if clock.seconds() - started >= CUT_AFTER:
                self.cut(task)
                return
            self._sendTo(task)
            clock.callLater(RESEND_INTERVAL, again)

        clock.callLater(RESEND_INTERVAL, again)

    def _sendTo(self, task: Task[Any]) -> None:
        if self._send is None or self._target is None:
            return
        try:
            self._send(functools.partial(self.sendCancel, task))
        except Exception:
            # (The cancel thread has quit: the engine is closing.)
            log.info("Could not send a cancel for {task}", task=task)

    def sendCancel(self, task: Task[Any]) -> None:
        """
        Cancel thread: send the cancel, if C{task} still runs on the
        connection.
        """
        with self._lock:
            if self.activeTask is not task:
                return
            try:
                if self.dialectName == "postgresql":
                    _cancelPostgreSQL(self._target)
                elif self._killQuery is not None:
                    self._killQuery(self._target)
            except Exception:
                log.failure("Could not cancel {task}", task=task)

    def cut(self, task: Task[Any]) -> bool:
        """
        Reactor thread (never blocks): shut down the connection's socket if
        C{task} still runs on it. The driver's blocked call then fails with
        a lost-connection error, and the worker replaces the connection.

        @return: Whether the socket was shut down.
        """
        with self._cutLock:
            if self.activeTask is not task or self._socket is None:
                return False
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                return False
        log.warn(
            "The server did not stop {task} within {seconds:g} s of the cancel:"
            " cut its connection (the worker replaces it)",
            task=task,
            seconds=CUT_AFTER,
        )
        return True


__all__ = ["CANCEL_TIMEOUT", "CUT_AFTER", "RESEND_INTERVAL", "Canceller", "socketFD"]
