"""
L{ConnectionWorker}: a L{ThreadWorker} that owns one database connection for
its whole life.

The connection is opened in the worker's thread (on its first transaction),
used only there, replaced there if it was lost, and closed there when the
worker stops, or when it was left idle for C{idleTimeout} seconds (the next
transaction opens another). No other thread ever touches it; the reactor
thread may only ask the L{Canceller} to interrupt it.
"""

from __future__ import annotations

import ctypes
import functools
import select
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from asynqueue.errors import WorkerError
from asynqueue.workers import JobThread, MemoryJobRunner, ThreadWorker

from ._cancel import Canceller, Send, socketFD
from ._threadstate import state

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from asynqueue.task import Task

log = Logger()
#: Structured events for operators (see C{docs/observability.md}).
connectionLog = Logger(namespace="sasync.connection")

#: The drivers whose C{commit()} and C{rollback()} send nothing when no
#: transaction is open: on their connections, SQLAlchemy's transaction may
#: begin lazily (see L{ConnectionWorker.beginsLazily}).
_IDLE_SAFE_DRIVERS = frozenset({"psycopg2", "psycopg"})

#: Per dialect, the statement that makes the session's next transactions
#: read-only (True) or read-write (False).
_MODE_STATEMENTS = {
    "mysql": {
        True: "SET SESSION TRANSACTION READ ONLY",
        False: "SET SESSION TRANSACTION READ WRITE",
    },
    "mariadb": {
        True: "SET SESSION TRANSACTION READ ONLY",
        False: "SET SESSION TRANSACTION READ WRITE",
    },
    "sqlite": {True: "PRAGMA query_only = 1", False: "PRAGMA query_only = 0"},
}


class _PollFD(ctypes.Structure):
    """
    C's C{struct pollfd}.
    """

    _fields_ = [
        ("fd", ctypes.c_int),
        ("events", ctypes.c_short),
        ("revents", ctypes.c_short),
    ]


def _libcPoll() -> Any:
    # The C library's poll() through ctypes.PyDLL, which keeps the GIL
    # across the call: with a zero timeout it never blocks. None where
    # there is none to load (then select.poll serves). No argtypes: their
    # conversions cost most of a call (twice per transaction); the
    # arguments are made as ctypes objects once (see SocketWatch), bar the
    # timeout, an int (C int by default).
    try:
        poll = ctypes.PyDLL(None).poll
    except Exception:
        return None
    poll.restype = ctypes.c_int
    return poll


_LIBC_POLL = _libcPoll()


class SocketWatch:
    """
    Tells whether the server has closed (or is closing) a connection, by
    looking at its socket without sending anything: one C{poll()} system
    call, and a peek at the data only if there is some. Worker thread only.

    Between statements a database server sends nothing unasked, except
    when it closes the connection (a terminated backend, a server shutting
    down or restarting, an idle timeout): then the socket turns readable,
    with an end of file or an error message first (PostgreSQL: an
    C{ErrorResponse}, always FATAL there; MySQL/MariaDB: an error packet).
    Anything else (a PostgreSQL C{ParameterStatus} after a configuration
    reload, the rest of an unbuffered MySQL result) is left to the driver.

    The poll keeps the GIL (see L{holdsGIL}): C{select.poll} lets it go
    around the system call, and a worker thread then waits to get it back
    while other threads run Python, up to the switch interval (5 ms by
    default), twice per transaction.

    @ivar holdsGIL: Whether L{poll} keeps the GIL (the C library's
        C{poll()} could be loaded through C{ctypes}); else it is
        C{select.poll}'s.
    """

    def __init__(self, fd: int, dialectName: str) -> None:
        self.fd = fd
        self.dialectName = dialectName
        #: C{poll(0)}: true if the socket is readable (or closed): only
        #: then need L{serverClosed} look closer.
        self.poll: Callable[[int], object]
        if _LIBC_POLL is not None:
            self._pollFD = _PollFD(fd, select.POLLIN | select.POLLPRI, 0)
            self.poll = functools.partial(
                _LIBC_POLL, ctypes.pointer(self._pollFD), ctypes.c_ulong(1)
            )
            self.holdsGIL = True
        else:
            fallback = select.poll()
            fallback.register(fd, select.POLLIN | select.POLLPRI)
            self.poll = fallback.poll
            self.holdsGIL = False

    @classmethod
    def of(cls, dbapiConnection: Any, dialectName: str) -> SocketWatch | None:
        """
        A watch on a DBAPI connection's socket; C{None} if it has none
        (SQLite).
        """
        fd = socketFD(dbapiConnection)
        return None if fd is None else cls(fd, dialectName)

    def serverClosed(self) -> bool:
        """
        Whether the server has closed, or is closing, the connection.
        """
        if not self.poll(0):
            return False
        try:
            # A duplicate of the descriptor, closed right after.
            with socket.fromfd(self.fd, socket.AF_INET, socket.SOCK_STREAM) as s:
                data = s.recv(8, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if not data:
            return True
        if self.dialectName == "postgresql":
            return data[:1] == b"E"
        if self.dialectName in ("mysql", "mariadb"):
            return len(data) > 4 and data[4] == 0xFF
        return True


class ConnectionWorker(ThreadWorker):
    """
    A worker thread with a connection of its own.

    @ivar held: Reactor thread: True while the worker is held by an open
        iteration (server databases keep the transaction, and so the
        connection, until the rows are all read).
    @ivar overflow: Whether this is an extra worker added so that
        transactions queued behind held iterations can run.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        holdIterations: bool,
        batchSize: int,
        name: str,
        overflow: bool = False,
        killQuery: Callable[[int], None] | None = None,
        sendCancel: Send | None = None,
        onHeld: Callable[[ConnectionWorker, bool], None] | None = None,
        idleTimeout: float | None = None,
        clock: IReactorTime | None = None,
        callFromThread: Callable[..., object] | None = None,
        runner: JobThread | MemoryJobRunner | None = None,
    ) -> None:
        """
        @param killQuery: For MySQL, see L{Canceller}.
        @param sendCancel: Runs a cancel's blocking job in the thread that
            sends cancels, see L{Canceller}.
        @param onHeld: Called (reactor thread) with C{(worker, held)} when
            an iteration starts or stops holding the worker.
        @param idleTimeout: Seconds after which a connection that no task,
            transaction or open iteration used is closed, in the worker's
            thread; the next transaction opens a new one. C{None}: never.
        @param clock: For C{idleTimeout}; the reactor by default.
        @param runner: Where jobs run (tests pass a C{MemoryJobRunner}).
        """
        super().__init__(
            holdIterations=holdIterations,
            batchSize=batchSize,
            name=name,
            callFromThread=callFromThread,
            runner=runner,
        )
        self.engine = engine
        self.overflow = overflow
        self.held = False
        self.canceller = Canceller(engine.dialect.name, killQuery, sendCancel)
        #: Whether a transaction's SQLAlchemy transaction may begin with its
        #: first statement through SQLAlchemy, not before the body runs (see
        #: L{sasync.transact.TransactionCall}): a body on the raw DB-API
        #: cursor alone then commits on the driver's connection, and
        #: L{leaveTransaction} rolls that back too. Only on drivers whose
        #: commit and rollback send nothing when no transaction is open.
        self.beginsLazily = engine.dialect.driver in _IDLE_SAFE_DRIVERS
        self._onHeld = onHeld
        # Worker thread only.
        self._connection: Connection | None = None
        self._watch: SocketWatch | None = None
        #: Worker thread only: the DBAPI connection of the last connection
        #: made (read after a failure, even once it is closed).
        self.dbapiConnection: Any = None
        #: How many connections this worker replaced (written by its thread).
        self.replaced = 0
        # Worker thread only: whether the connection is set READ ONLY.
        self._readOnly = False
        self._closing = False
        self.idleTimeout = idleTimeout
        self._clock = clock
        # Reactor thread: when the worker last became idle, and the call
        # that looks at it idleTimeout later.
        self._idleSince = 0.0
        self._idleCall: IDelayedCall | None = None
        #: How many connections this worker closed after C{idleTimeout}
        #: (written by its thread).
        self.idleClosed = 0
        # Worker thread only: result streams still read on the connection
        # after their COMMIT (SQLite), which closing it would break.
        self._openRows = 0
        if idleTimeout is not None:
            # (Without, give stays ThreadWorker's: nothing added per task.)
            self.give = self._giveNotingIdle  # type: ignore[method-assign]
        self.runner.do(self._bind)

    def __repr__(self) -> str:
        return f"<ConnectionWorker {getattr(self.runner, 'name', '')}>"

    # Worker thread ------------------------------------------------------------

    def _bind(self) -> None:
        # Worker thread: let code running here find its worker.
        state.worker = self

    def connection(self, readOnly: bool = False) -> Connection:
        """
        Worker thread: this worker's connection, opened now if there is none
        yet, and replaced if it was invalidated (lost) or if the server has
        closed it while it was idle (see L{SocketWatch}).

        @param readOnly: Whether the next transaction is READ ONLY (see
            L{readOnlyNext}); otherwise it is read-write.
        """
        connection = self._connection
        if (
            connection is not None
            and not connection.invalidated
            and not connection.closed
        ):
            watch = self._watch
            if watch is None or not (watch.poll(0) and watch.serverClosed()):
                if connection.get_transaction() is None:
                    if self._readOnly != readOnly:
                        self._setReadOnly(readOnly or None)
                    return connection
                # Some path left a transaction open (it should not): end it
                # here, so that nobody's work starts inside another's.
                log.warn(
                    "{worker}: the connection was still in a transaction;"
                    " rolling it back",
                    worker=self,
                )
                self.leaveTransaction()
                return self.connection(readOnly)
            reason = "closed by the server while idle"
        else:
            reason = "lost"
        if connection is not None:
            self.canceller.detach()
            self._discard(connection)
            self.replaced += 1
            self._logReplaced(reason)
        self._connection = None
        self._watch = None
        self._readOnly = False
        connection = self.engine.connect()
        dbapiConnection = connection.connection.dbapi_connection
        self._connection = connection
        self.dbapiConnection = dbapiConnection
        self.canceller.attach(dbapiConnection)
        self._watch = SocketWatch.of(dbapiConnection, self.engine.dialect.name)
        if readOnly:
            self._setReadOnly(True)
        return connection

    def serverClosed(self) -> bool:
        """
        Worker thread, between statements: whether the server has closed
        this worker's connection (known without sending anything).
        """
        watch = self._watch
        if watch is None or not watch.poll(0):
            # (Nothing to read, the common case, is told by the poll alone.)
            return False
        return watch.serverClosed()

    def readOnlyNext(self) -> None:
        """
        Worker thread, between L{connection} and BEGIN: make the next
        transaction READ ONLY; the next L{connection} call undoes it.

        PostgreSQL: the driver sends it with BEGIN (no statement of
        sAsync's starts the transaction). MySQL/MariaDB: C{SET SESSION
        TRANSACTION READ ONLY}, and SQLite: C{PRAGMA query_only}, each one
        statement sent only when the mode changes from the last
        transaction's (a run of read-only transactions pays it once).
        """
        self._setReadOnly(True)

    def _setReadOnly(self, value: bool | None) -> None:
        # Only outside a transaction. None: the server's default.
        dbapiConnection = self.dbapiConnection
        dialect = self.engine.dialect.name
        if dialect in ("mysql", "mariadb", "sqlite"):
            if bool(value) != self._readOnly:
                cursor = dbapiConnection.cursor()
                try:
                    cursor.execute(_MODE_STATEMENTS[dialect][bool(value)])
                finally:
                    cursor.close()
        else:
            # psycopg2 calls it readonly, psycopg 3 read_only.
            name = "readonly" if hasattr(dbapiConnection, "readonly") else "read_only"
            setattr(dbapiConnection, name, value)
        self._readOnly = bool(value)

    def leaveTransaction(self) -> None:
        """
        Worker thread, after any job that used the connection, whatever it
        raised: roll back a transaction left open (even one whose COMMIT
        failed, which SQLAlchemy keeps as the connection's transaction until
        it is rolled back). If that fails too, the connection is replaced:
        a shared connection must never carry one job's transaction into the
        next.
        """
        connection = self._connection
        if connection is None or connection.closed:
            return
        try:
            if connection.get_transaction() is not None:
                connection.rollback()
            elif self.beginsLazily and self.dbapiConnection is not None:
                # The driver's own transaction, if any (a body that ran only
                # the raw DB-API cursor): its rollback() sends nothing when
                # none is open.
                self.dbapiConnection.rollback()
        except Exception:
            self.replaceConnection()
            return
        if connection.invalidated:
            self.replaceConnection()

    def replaceConnection(self) -> None:
        """
        Worker thread: drop the connection (it is in an unknown state); the
        next transaction opens a new one.
        """
        connection, self._connection = self._connection, None
        self._watch = None
        if connection is not None:
            self.canceller.detach()
            self._discard(connection)
            self.replaced += 1
            self._logReplaced("left in an unknown state")

    def _logReplaced(self, reason: str) -> None:
        # Worker thread (twisted.logger's publisher may be called from any).
        connectionLog.info(
            "{worker}: replacing its connection ({reason}); {replaced} so far",
            worker=repr(self),
            reason=reason,
            replaced=self.replaced,
        )

    @staticmethod
    def _discard(connection: Connection) -> None:
        try:
            connection.invalidate()
            connection.close()
        except Exception:
            log.failure("Could not discard a broken connection")

    def rowsOpened(self) -> Callable[[], None]:
        """
        Worker thread: a result is read on the connection outside any
        transaction (SQLite, after COMMIT), so an idle connection must not
        be closed until the returned callable (worker thread, once) says
        that the result is closed.
        """
        self._openRows += 1
        closed = False

        def rowsClosed() -> None:
            nonlocal closed
            if not closed:
                closed = True
                self._openRows -= 1

        return rowsClosed

    def _closeIdle(self) -> bool:
        # Worker thread, after idleTimeout seconds without a task: close the
        # connection unless something still uses it (a task queued after
        # this job opens a new one). False: it is still in use.
        connection = self._connection
        if connection is None:
            return True
        if self._openRows or connection.in_transaction():
            # An open iteration reads on it (or holds its transaction).
            return False
        self._connection = None
        self._watch = None
        self._readOnly = False
        self.canceller.detach()
        try:
            connection.close()
        except Exception:
            log.failure("Could not close {worker}'s idle connection", worker=self)
        self.idleClosed += 1
        connectionLog.info(
            "{worker}: closed its connection, idle for {idleTimeout} s;"
            " the next transaction opens another",
            worker=repr(self),
            idleTimeout=self.idleTimeout,
        )
        return True

    def _close(self) -> None:
        # Worker thread, the last job: close the connection here, where it lives.
        connection, self._connection = self._connection, None
        self.canceller.detach()
        if connection is not None:
            try:
                connection.close()
            except Exception:
                log.failure("Could not close {worker}'s connection", worker=self)
        state.worker = None

    # Reactor thread -----------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """
        Close the connection in its thread, then end the thread.
        """
        if not self._closing:
            self._closing = True
            if self._idleCall is not None:
                self._idleCall.cancel()
                self._idleCall = None
            self.runner.do(self._close)
        return super().stop()

    def _giveNotingIdle(
        self, task: Task[Any], onFreed: Callable[[Any, Task[Any]], object]
    ) -> None:
        # With idleTimeout, this is the worker's give (see __init__): the
        # worker also notes when it becomes idle.
        def freed(worker: Any, task: Task[Any]) -> None:
            onFreed(worker, task)
            self._becameIdle()

        super().give(task, freed)

    @property
    def clock(self) -> IReactorTime:
        """
        The clock of C{idleTimeout}, resolved lazily.
        """
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = cast("IReactorTime", reactor)
        return self._clock

    def _becameIdle(self) -> None:
        # Reactor thread: a task, or an iteration holding the worker, ended.
        # One delayed call at a time, pushed on when it finds work done
        # since (cheaper than one per task).
        timeout = self.idleTimeout
        if timeout is None or self.task is not None or self.held or self._closing:
            return
        self._idleSince = self.clock.seconds()
        if self._idleCall is None:
            self._idleCall = self.clock.callLater(timeout, self._idleCheck)

    def _idleCheck(self) -> None:
        # Reactor thread, idleTimeout after the worker became idle.
        self._idleCall = None
        timeout = self.idleTimeout
        if timeout is None or self.task is not None or self.held or self._closing:
            # Busy: the end of that work arms this again.
            return
        left = self._idleSince + timeout - self.clock.seconds()
        if left > 0:
            self._idleCall = self.clock.callLater(left, self._idleCheck)
            return
        d = self.call(self._closeIdle)
        # Still in use: look again idleTimeout after now. (A stopped worker
        # closes its connection anyway.)
        d.addCallbacks(lambda closed: None if closed else self._becameIdle(), _stopped)

    def holdChanged(self, held: bool) -> None:
        """
        Reactor thread: an open iteration starts or stops holding this
        worker (its transaction, and so the connection, stays busy until
        the rows are all read or the iteration stops).
        """
        self.held = held
        if self._onHeld is not None:
            self._onHeld(self, held)
        if not held:
            self._becameIdle()


def _stopped(failure: Failure) -> None:
    # An idle check that found the worker stopped (which closes its
    # connection anyway); anything else is a bug worth a log line.
    if not isinstance(failure.value, WorkerError):
        log.failure("Closing an idle connection failed", failure)


__all__ = ["ConnectionWorker", "SocketWatch"]
