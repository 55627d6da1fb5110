"""
What a worker thread knows about itself: its worker, and the transaction it
is running right now; and whether a caller is in the reactor thread.

Every attribute here is thread-local: each worker thread sees only its own
connection and transaction, which is what makes C{self.conn} on a shared
broker object safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.base import ReactorBase
from twisted.python import threadable

from ..errors import NotInTransaction, WrongThread

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from .._protocols import WorkerThread


class _ThreadState(threading.local):
    """
    The per-thread state. Class attributes are the defaults every new
    thread starts with.
    """

    #: The sAsync worker this thread belongs to (None: not a worker thread).
    worker: WorkerThread | None = None
    #: The connection of the transaction running now (None: no transaction).
    connection: Connection | None = None
    #: The engine handle of that transaction, to recognize nested calls.
    handle: Any = None
    #: The ORM session of that transaction, made on first use.
    session: Session | None = None
    #: Whether row-returning SELECTs of this transaction use server-side
    #: cursors (read by the engine's before_execute hook).
    stream: bool = False
    #: The server-side cursors this transaction opened, on a driver that
    #: wants them closed even after their transaction ended (psycopg 3):
    #: closed once it ends (see L{sasync.connection._results.closeCursors}).
    serverCursors: list[Any] | None = None
    #: Whether the current transaction ran a statement other than a SELECT
    #: (learned per method: see L{sasync.transact.TransactionCall}).
    wrote: bool = False
    #: Which cached statement C{s()} refers to, per broker (id -> name).
    statementNames: dict[int, str] | None = None


state = _ThreadState()


def currentConnection() -> Connection:
    """
    The connection of the transaction running in this thread.

    @raise NotInTransaction: no transaction runs in this thread.
    """
    connection = state.connection
    if connection is None:
        raise NotInTransaction(
            "self.conn (self.connection) is only available inside a transaction:"
            " in a method decorated with @transact, while it runs in its worker"
            " thread. Call the @transact method and use its Deferred instead."
        )
    return connection


def currentSession() -> Session:
    """
    The ORM session of the transaction running in this thread, bound to its
    connection and joined to its transaction (made on first use).

    @raise NotInTransaction: no transaction runs in this thread.
    """
    session = state.session
    if session is None:
        from sqlalchemy.orm import Session

        connection = state.connection
        if connection is None:
            raise NotInTransaction(
                "self.session is only available inside a transaction: in a"
                " method decorated with @transact, while it runs in its worker"
                " thread."
            )
        if connection.get_transaction() is None:
            # Begun lazily (see sasync.transact.TransactionCall): begun now,
            # so that the session joins it (as a transaction it did not
            # begin, which it neither commits nor ends).
            connection.begin()
        # Same connection, same transaction: flushed before COMMIT by the
        # transaction runner; objects stay usable after it.
        session = state.session = Session(bind=connection, expire_on_commit=False)
    return session


def checkReactorThread(reactor: object, what: Callable[[], str]) -> None:
    """
    Refuse a call from a thread other than the reactor's, while a real
    reactor runs (its thread is known only once it runs; a fake reactor of
    a unit test has none, and the test's thread drives it).

    @param what: Names the call (called only to build the error).
    @raise WrongThread: the call came from another thread.
    """
    # The common case first, and cheap: we are in the reactor thread.
    ioThread = threadable.ioThread  # (Registered by the reactor as it starts.)
    if ioThread is None or ioThread == threading.get_ident():
        return
    if not (isinstance(reactor, ReactorBase) and reactor.running):
        return
    raise WrongThread(
        f"{what()}() was called from thread {threading.current_thread().name!r},"
        " not the reactor's: Deferreds live in the reactor thread. From another"
        " thread use twisted.internet.threads.blockingCallFromThread(reactor,"
        " method, *args), which runs the call in the reactor thread and waits"
        " for its result."
    )


def inTransaction() -> bool:
    """
    Whether a transaction runs in this thread now.
    """
    return state.connection is not None


__all__ = [
    "checkReactorThread",
    "currentConnection",
    "currentSession",
    "inTransaction",
    "state",
]
