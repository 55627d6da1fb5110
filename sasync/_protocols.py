"""
What a part of sAsync needs from the part that owns it, as small
L{Protocol<typing.Protocol>}s: a child is handed one of these (or a
callable), never its owner's class, so every import points down.

This is the bottom of sasync: it imports no other sasync module.

  - L{WorkerThread}: what code running in a connection worker's thread
    finds as its worker (C{sasync.connection._threadstate.state.worker}).
  - L{WorkQueue}: what a broker hands its tasks to: the engine handle of
    its engine or, under C{processes=N}, its pool of worker processes.
  - L{TransactionSite}: where a C{@transact} method hands its calls, and
    L{TransactionOwner}: the object it is a method of, which has one.
  - L{CreateWorker}: how an engine handle makes its connection workers.
  - L{ProcessOwner}: what a worker process needs from its pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from twisted.internet.defer import Deferred

    from asynqueue import IWorker, Task, TaskQueue


class StatementCanceller(Protocol):
    """
    Stops the statement of a task asked to stop (worker thread side).
    """

    #: The task running on this connection (what L{enter} sets: a
    #: transaction sets it itself, per call).
    activeTask: Task[Any] | None

    def enter(self, task: Task[Any] | None) -> None:
        """
        Worker thread: C{task} starts running on this connection.
        """

    def leave(self) -> None:
        """
        Worker thread: the task running on this connection is done.
        """

    def settle(self) -> None:
        """
        Worker thread: the rest of L{leave} for a task asked to stop, once
        C{activeTask} was cleared (a transaction clears it itself, per
        call).
        """


class WorkerThread(Protocol):
    """
    A connection worker, as code running in its thread sees it. Worker
    thread only: the connection lives and dies in this thread.
    """

    @property
    def batchSize(self) -> int:
        """
        Rows per hop between the worker and the reactor.
        """

    @property
    def canceller(self) -> StatementCanceller:
        """
        Stops the running statement of a cancelled task.
        """

    def connection(self, readOnly: bool = False) -> Connection:
        """
        This worker's connection, opened or replaced as needed.
        """

    def giveWay(self) -> bool:
        """
        Between two statements: wait while the reactor is behind with the
        results handed to it (see L{asynqueue.ThreadWorker.giveWay}).
        """

    @property
    def dbapiConnection(self) -> Any:
        """
        The DB-API connection of the last connection made (C{None}: none
        yet), read after a failure too.
        """

    def serverClosed(self) -> bool:
        """
        Between statements: whether the server has closed the connection
        (known without sending anything).
        """

    @property
    def beginsLazily(self) -> bool:
        """
        Whether a transaction's SQLAlchemy transaction may begin with its
        first statement through SQLAlchemy (the driver's commit and
        rollback send nothing when none is open).
        """

    def leaveTransaction(self) -> None:
        """
        Roll back whatever transaction a job left open on the connection.
        """

    def replaceConnection(self) -> None:
        """
        Drop the connection; the next transaction opens a new one.
        """

    def readOnlyNext(self) -> None:
        """
        Make the next transaction READ ONLY (PostgreSQL).
        """

    def rowsOpened(self) -> Callable[[], None]:
        """
        A result is read on the connection after its COMMIT: keep the
        connection open until the returned callable is called.
        """


class WorkQueue(Protocol):
    """
    Where a broker's tasks go (reactor thread): an engine handle, or under
    C{processes=N} the broker's pool of worker processes.
    """

    #: The brokers (by C{id}) using it; the last one to let go closes it.
    users: set[int]

    @property
    def queue(self) -> TaskQueue:
        """
        The queue feeding its workers.
        """

    def submit(self, task: Task[Any], timeout: float | None = None) -> Deferred[Any]:
        """
        Queue C{task}; C{timeout} seconds bound its whole run.
        """

    def close(self) -> Deferred[None]:
        """
        Let queued work finish, then stop every worker. Idempotent.
        """


class TransactionSite(Protocol):
    """
    Where the methods C{@transact} and C{@wait} make hand their calls
    (reactor thread): a broker's admission of calls
    (C{sasync._admission.Admission}).
    """

    #: Call counters (a C{sasync._stats.CallStats}).
    stats: Any

    @property
    def handle(self) -> object:
        """
        Where its transactions run, to recognize a nested call (one made
        from inside a running transaction of the same engine).
        """

    def transact(
        self,
        owner: object,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: Any,
        counted: str | None = None,
        record: Any = None,
    ) -> Deferred[Any]:
        """
        Queue C{f(owner, *args, **kw)} as a transaction with the call
        options C{options} (a C{sasync.transact.CallOptions}), counted in
        C{stats} as a call of the method C{counted} (if given) where it
        ends, timed or traced by C{record} (a C{sasync._stats.CallRecord})
        if given.
        """

    def track(self, d: Deferred[Any]) -> None:
        """
        Make shutdown wait for C{d}.
        """

    def checkThread(self, method: str) -> None:
        """
        Refuse a call of C{method} from a thread other than the reactor's
        (raise C{sasync.errors.WrongThread}).
        """


class TransactionOwner(Protocol):
    """
    What C{@transact} and C{@wait} need of the object they are methods of
    (an L{AccessBroker<sasync.broker.AccessBroker>}): its
    L{TransactionSite}.
    """

    @property
    def _calls(self) -> TransactionSite:
        """
        Where its calls go.
        """


class CreateWorker(Protocol):
    """
    Makes a connection worker for an engine handle (the C{createWorker=}
    broker option; by default C{sasync.connection.ConnectionWorker}
    itself). Tests pass one making fake workers, which never connect.
    """

    def __call__(
        self,
        engine: Engine,
        *,
        holdIterations: bool,
        batchSize: int,
        name: str,
        overflow: bool = False,
        killQuery: Callable[[int], None] | None = None,
        sendCancel: Callable[..., Any] | None = None,
        onHeld: Callable[[Any, bool], None] | None = None,
        idleTimeout: float | None = None,
        clock: Any = None,
        callFromThread: Callable[..., object] | None = None,
    ) -> IWorker:
        """
        A worker for C{engine}: see C{ConnectionWorker} for the keywords.
        """


class ProcessOwner(Protocol):
    """
    What a worker process needs from its pool (reactor thread).
    """

    #: The broker class's name, for messages.
    name: str
    #: How the worker process makes its broker (pickled).
    recipe: bytes

    @property
    def reactor(self) -> Any:
        """
        The reactor, resolved lazily.
        """

    def learnTables(self, pickled: bytes | None) -> None:
        """
        The tables a worker process's broker made (pickled), if any.
        """


__all__ = [
    "CreateWorker",
    "ProcessOwner",
    "StatementCanceller",
    "TransactionOwner",
    "TransactionSite",
    "WorkQueue",
    "WorkerThread",
]
