"""
The errors sAsync itself raises, in one small hierarchy.

Errors raised by your transactions are never wrapped: a transaction that
raises C{sqlalchemy.exc.IntegrityError} fails its Deferred with that very
C{IntegrityError} (a note naming the call is added to it), so
C{except IntegrityError} works. Cancellation and timeouts surface as
Twisted's C{CancelledError} and L{TransactionTimeout} (a kind of
AsynQueue's L{asynqueue.TaskTimeout}); both mean the transaction did not
and will not commit. A caller that stops waiting for a transaction whose
COMMIT was already sent (cancelled again, or cancelled after it timed out)
gets AsynQueue's L{asynqueue.OutcomeUnknown}: it may have committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from asynqueue.errors import QueueStopped, TaskTimeout
from asynqueue.moved import movedNames


class SAsyncError(Exception):
    """
    Base class of every error sAsync itself raises.
    """


class NoEngineError(SAsyncError):
    """
    A broker was made without a URL while no global engine was set up
    with L{sasync.setup}.
    """


class BrokerStopped(SAsyncError, QueueStopped):
    """
    A transaction (or other work) was asked of a broker that has been shut
    down or is shutting down.
    """


class NotInTransaction(SAsyncError, RuntimeError):
    """
    C{self.conn}, C{self.connection}, C{self.session} or C{self.s()} was
    used outside a transaction (that is, outside a method decorated with
    L{sasync.transact} while it runs in its worker thread).
    """


class WrongThread(SAsyncError, RuntimeError):
    """
    A broker or store method was called from a thread other than the
    reactor's while the reactor runs. Deferreds live in the reactor thread:
    from another thread, use
    C{twisted.internet.threads.blockingCallFromThread(reactor, method, ...)}.
    (Inside a transaction, in its worker thread, a call of a C{@transact}
    method runs inline instead.)
    """


class TableNameError(SAsyncError, ValueError):
    """
    A table name given to L{AccessBroker.table} would shadow a method or
    attribute of the broker (C{self.<name>} is how you reach a table).
    """


class SchemaMismatch(SAsyncError):
    """
    A table declared with L{AccessBroker.table<sasync.broker.AccessBroker.table>}
    differs from the one in the database in a way C{table()} does not
    change by itself (a column's type or nullability, a missing NOT NULL
    column without a server default, an index on other columns, a unique
    index the existing rows violate, ...). Raised from the broker's
    start-up; change the database with a migration (see C{docs/schema.md}
    and C{AccessBroker.migrate}), or declare the table as it is.

    @ivar table: The table's name.
    @ivar differences: One line per difference, each naming the column or
        index, what was declared and what the database has.
    """

    def __init__(self, table: str, differences: Sequence[str]) -> None:
        self.table = table
        self.differences = list(differences)
        lines = "".join(f"\n  - {d}" for d in self.differences)
        super().__init__(
            f"table {table!r} in the database differs from its declaration:"
            f"{lines}\nchange the database with a migration (broker.migrate(),"
            " see docs/schema.md) or declare the table as the database has it"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Across processes (processes=N) with its own arguments.
        return (type(self), (self.table, self.differences))


class MigrationFailed(SAsyncError):
    """
    An Alembic migration run by
    L{AccessBroker.migrate<sasync.broker.AccessBroker.migrate>} failed;
    the original error is the C{__cause__}. Where the database has
    transactional DDL (PostgreSQL, SQLite) nothing of that C{migrate()}
    call stayed; on MySQL/MariaDB the revisions before the failing one
    stay applied.

    @ivar revision: The revision that failed, or C{None} if the failure was
        not inside one revision's script (C{env.py}, the version table).
    @ivar current: The revision the database is at now (C{""}: none).
    """

    def __init__(self, message: str, revision: str | None, current: str) -> None:
        super().__init__(message)
        self.revision = revision
        self.current = current

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.revision, self.current))


class StartupError(SAsyncError):
    """
    The broker's C{startup()} or C{first()} failed, so it never started
    running; the original error is the C{__cause__}.
    """


class ConnectionClosedByServer(SAsyncError):
    """
    The server closed a connection while a transaction was between
    statements, before COMMIT was sent: nothing of the transaction was
    committed. It reaches you as the C{orig} of a
    C{sqlalchemy.exc.OperationalError} (whose C{connection_invalidated} is
    true), like the driver's own errors for a lost connection.
    """


class TransactionTimeout(SAsyncError, TaskTimeout):
    """
    A transaction did not finish within its C{timeout} (the call's, or the
    broker's default), retries and the waits between them included. It was
    not committed: if it was running, it is interrupted at the driver and
    rolled back in the background (this error comes at the deadline, as the
    transaction can no longer commit). Only a transaction whose COMMIT was
    already sent is waited for: it fails with this error only if that
    COMMIT failed by the timeout's interruption, else with its own outcome.
    """


class Overloaded(SAsyncError):
    """
    A transaction was refused at once because too many transactions were
    already waiting for a connection (the broker's C{maxPending} option).
    Nothing was queued: try again later, or shed the load.
    """


class ReadOnlyViolation(SAsyncError):
    """
    A read-only transaction (C{@transact(readOnly=True)}, or a call with
    C{readOnly=True}) tried to write. It was rolled back and not run again;
    the database's own error is the C{__cause__}. The same type on every
    database: PostgreSQL and MySQL/MariaDB run the transaction READ ONLY,
    SQLite with C{PRAGMA query_only}.
    """


class ReplicaError(SAsyncError, ValueError):
    """
    Bad replica options: C{replicas=} on a broker that is not PostgreSQL,
    a replica URL of another database kind, a bad C{consistency},
    C{replicaWait}, C{maxReplicaLag}, or a malformed C{after=} position.
    """


class WritesLost(SAsyncError):
    """
    Writes a persistent store had accepted (a C{PersistentDict}'s
    C{d[k] = v}, C{del d[k]}, C{clear()} ...) are not in the database: the
    server refused them, or it could not be reached for as long as the
    store retries. Raised by the store's C{deferToWrites()} and
    C{shutdown()}, again at every call, until a later write of each key
    (or a C{clear()}) is stored.

    @ivar store: C{repr} of the store.
    @ivar keys: the keys whose latest write is not stored, in the order
        they were lost.
    @ivar errors: key -> the exception that stopped its write.
    @ivar clearLost: the exception that stopped a C{clear()}, or C{None}
        if no C{clear()} was lost.
    """

    def __init__(
        self,
        store: str,
        errors: Mapping[Any, BaseException],
        clearLost: BaseException | None = None,
    ) -> None:
        self.store = store
        self.errors = dict(errors)
        self.keys = list(errors)
        self.clearLost = clearLost
        shown = [f"{key!r} ({_brief(e)})" for key, e in list(errors.items())[:10]]
        if len(errors) > 10:
            shown.append(f"and {len(errors) - 10} more")
        if clearLost is not None:
            shown.insert(0, f"clear() ({_brief(clearLost)})")
        count = len(errors) + (clearLost is not None)
        super().__init__(
            f"{count} accepted write{'s' if count != 1 else ''} of {store} not"
            f" stored: {', '.join(shown)}"
        )


class NotSupported(SAsyncError, NotImplementedError):
    """
    The database of the broker cannot do what was asked: for instance
    L{sasync.AccessBroker.listen} and L{sasync.AccessBroker.notify}
    (LISTEN/NOTIFY) on anything but PostgreSQL.
    """


def _brief(e: BaseException) -> str:
    # The first line of an error: SQLAlchemy's messages go on with the SQL.
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]


__all__ = [
    "BrokerStopped",
    "ConnectionClosedByServer",
    "MigrationFailed",
    "NoEngineError",
    "NotInTransaction",
    "NotSupported",
    "Overloaded",
    "ReadOnlyViolation",
    "ReplicaError",
    "SAsyncError",
    "SchemaMismatch",
    "StartupError",
    "TableNameError",
    "TransactionTimeout",
    "WritesLost",
    "WrongThread",
]

# The original sAsync's exceptions: gone, each lookup saying what to catch.
__getattr__ = movedNames(
    __name__,
    {},
    {
        "AsyncError": "catch sasync.WrongThread (a call from the wrong"
        " thread) or sasync.NotInTransaction",
        "TransactionError": "a failed transaction fails with the exception it"
        " raised (catch that, e.g. sqlalchemy.exc.IntegrityError)",
        "DatabaseError": "the database's errors pass through as SQLAlchemy's"
        " (catch sqlalchemy.exc.DBAPIError)",
        "TransactIterationError": "catch asynqueue.IterationStopped",
    },
)
