"""
Multicore brokers: C{processes=N} runs a broker's transactions in N worker
processes, so that SQLAlchemy's Python work (the ORM above all) uses more
than one core.

Each worker process (L{sasync.multicore._child}) makes its own instance of
the broker's class, imported by name, with the arguments the broker was
made with: its own engine, its own connections, its own C{startup()}. A
C{@transact} call travels to it as (method name, arguments, call options);
the parent's L{TaskQueue} keeps the priorities, and hands each process at
most as many calls at once as it has connections. Results come back
pickled; a row-returning result streams back in batches (a L{Deferator}, or
rows written to a C{consumer}); an exception keeps its type.

Cancelling a running call (or its timeout) sends the process a cancel,
which its broker turns into a driver-level cancel, exactly as in one
process; a process that ignores it for C{CANCEL_GRACE} seconds is killed. A
process that dies fails the calls it held with L{WorkerError}, and a new
one starts with the next call. Shutdown stops every process.

Everything here runs in the reactor thread: the processes' output arrives
through Twisted's process support, never through a thread of ours.
"""

from __future__ import annotations

import contextlib
import copyreg
import dataclasses
import importlib
import os
import pickle
import types
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from asynqueue import checkNumber, follow, globalReactor
from asynqueue.process import PROTOCOL, dumps, pickleCall
from asynqueue.task import Task
from asynqueue.taskqueue import TaskQueue

from .._schema import SetupJob
from .._stats import CallRecord
from ..connection import DEFAULT_CONNECTIONS
from ..transact import CallOptions, TransactionCall
from ._wire import CALL, HEADER, RUN
from ._workerprocess import CANCEL_GRACE, QUIT_GRACE, Outbox, Slot, WorkerProcess

if TYPE_CHECKING:
    from ..connection import EngineSpec

log = Logger()

_pack = HEADER.pack
# A reducer registered for bound methods (see asynqueue.process.dumps) means
# a pickle made by dumps().
_METHOD = types.MethodType
_REDUCERS = copyreg.dispatch_table

#: The environment variable that says whether each worker process is kept
#: on one CPU (see L{workerCPUs}): C{"auto"} (or unset), C{"1"}, C{"0"}.
PIN_ENV = "SASYNC_PIN_PROCESSES"

#: Distinct call options whose pickles the parent keeps (see
#: L{ProcessPool._wireOptions}); beyond that it starts again.
_OPTIONS_KEPT = 64

# Set by the child while it makes its broker: that broker runs in this
# process (it makes no processes of its own) and leaves first() to the parent.
_makingChildBroker = False


def isMakingChildBroker() -> bool:
    """
    Whether the broker being made now is a worker process's own: it runs in
    this process, and leaves first() to the parent's broker.
    """
    return _makingChildBroker


@contextlib.contextmanager
def makingChildBroker() -> Iterator[None]:
    """
    For the worker process: the broker made in this block is a worker
    process's own.
    """
    global _makingChildBroker
    _makingChildBroker = True
    try:
        yield
    finally:
        _makingChildBroker = False


def workerCPUs(
    processes: int, setting: str | None, allowed: Collection[int]
) -> list[int | None]:
    """
    The CPU each worker process is kept on (C{None}: wherever the kernel
    puts it), of the CPUs C{allowed} to this process.

    A worker process's threads (its reactor's and its connections') take
    turns at one GIL, so the process never uses more than about one core;
    left to roam, its threads are moved between the cores as they wake, and
    every hand-off of the GIL then moves its working set from one core's
    caches to the other's. Kept on one CPU each, the processes ran the ORM
    benchmark about 15% faster on 2 cores (see C{docs/multicore.md}). The
    cost: a process can't leave its CPU for an idle one when other work
    crowds it.

    @param setting: C{"auto"} or C{None}: keep them when they are at least
        as many as the allowed CPUs (they fill every core anyway, so no
        core is left for them to move to); C{"1"}: keep them, process I{i}
        on the I{i}-th allowed CPU (round and round); C{"0"}: never.
    @raise ValueError: another C{setting}.
    """
    if setting is None:
        setting = "auto"
    if setting not in ("auto", "0", "1"):
        raise ValueError(
            f"{PIN_ENV} must be auto, 1 or 0 (not {setting!r}): whether each"
            " worker process is kept on one CPU"
        )
    cpus = sorted(allowed)
    if setting == "0" or len(cpus) < 2 or (setting == "auto" and processes < len(cpus)):
        return [None] * processes
    return [cpus[i % len(cpus)] for i in range(processes)]


def _allowedCPUs() -> set[int]:
    # The CPUs this process may run on (none known off Linux).
    getAffinity = getattr(os, "sched_getaffinity", None)
    return set() if getAffinity is None else set(getAffinity(0))


@dataclass(frozen=True, slots=True)
class ResultSummary:
    """
    What comes back, under C{processes=N}, of a transaction that returned
    a result without rows (an INSERT's, an UPDATE's): its C{Result} can't
    cross a process boundary, these facts about it can.

    @ivar rowcount: The rows matched (C{Result.rowcount}), or C{None}.
    @ivar inserted_primary_key: The new row's primary key (a C{Row}) of a
        single-row INSERT, else C{None}.
    @ivar lastrowid: The driver's C{lastrowid}, or C{None}.
    """

    rowcount: int | None
    inserted_primary_key: Any
    lastrowid: Any
    returns_rows: bool = False


def _checkProcesses(processes: object, spec: EngineSpec) -> int:
    checkNumber(
        processes, "processes", integer=True, positive=True, typeError=ValueError
    )
    assert isinstance(processes, int)
    if spec.isSQLite:
        raise ValueError(
            "processes=N needs a server database (PostgreSQL, MySQL/MariaDB):"
            " SQLite has one writer, so worker processes would only wait for"
            " each other"
        )
    return processes


def brokerRecipe(cls: type, made: tuple[tuple[Any, ...], dict[str, Any]]) -> bytes:
    """
    How a worker process makes its own instance of the broker class C{cls}:
    the class's module and name, and the arguments C{made} it was made with,
    pickled.

    @raise TypeError: the class can't be imported by name (it is defined in
        C{__main__}, or in a function), or the arguments can't be pickled.
    """
    name = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__module__ == "__main__":
        raise TypeError(
            f"{cls.__qualname__} is defined in __main__, which a worker process"
            " can't import: with processes=N, define the broker class in a module"
        )
    if "<locals>" in cls.__qualname__:
        raise TypeError(
            f"{name} is defined inside a function, which a worker process can't"
            " import: with processes=N, define the broker class at the top level"
            " of a module"
        )
    found: Any = importlib.import_module(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is not cls:
        raise TypeError(
            f"{name} can't be imported by that name, so a worker process can't"
            " make one: with processes=N, the broker class must be reachable"
            " by its module and name"
        )
    args, kw = made
    kw = {k: v for k, v in kw.items() if k != "reactor"}
    try:
        return dumps((cls.__module__, cls.__qualname__, args, kw))
    except Exception as e:
        raise TypeError(
            f"the arguments {name} was made with can't be pickled for its worker"
            f" processes: {e}"
        ) from e


def attach(
    cls: type,
    made: tuple[tuple[Any, ...], dict[str, Any]],
    processes: object,
    spec: EngineSpec,
    *,
    reactor: Any,
    onTables: Callable[[dict[str, Any]], None],
) -> ProcessPool | None:
    """
    For C{AccessBroker.__init__}: the pool of worker processes of a broker
    of class C{cls} made with C{made} (its arguments), if it was made with
    C{processes=N} (and is not itself a worker process's broker), else
    C{None}.

    @param onTables: See L{ProcessPool}.

    @raise ValueError: a bad C{processes}, or SQLite.
    @raise TypeError: see L{brokerRecipe}.
    """
    if _makingChildBroker:
        # A worker process's own broker: one process.
        return None
    if processes is None:
        return None
    n = _checkProcesses(processes, spec)
    recipe = brokerRecipe(cls, made)
    return ProcessPool(
        cls.__name__,
        n,
        spec.connections or DEFAULT_CONNECTIONS,
        recipe,
        reactor=reactor,
        onTables=onTables,
    )


class _PoolQueue(TaskQueue):
    """
    The parent's queue: pickles each call when it is made, so that what
    can't cross to a worker process fails at once, naming the call.
    """

    def __init__(self, pool: ProcessPool, *, clock: Any) -> None:
        super().__init__(clock=clock)
        self._pool = pool

    def submit(self, task: Task[Any], *, timeout: float | None = None) -> Deferred[Any]:
        """
        Queue C{task} with its call pickled.

        @raise TypeError: the call can't be pickled.
        """
        if self.isRunning() and task.payload is None:
            self._pool.prepare(task)
        return super().submit(task, timeout=timeout)

    #: L{submit} of a task whose call the pool has pickled already.
    submitPrepared = TaskQueue.submit


class ProcessPool:
    """
    The worker processes of one broker made with C{processes=N}, and the
    queue that feeds them. It stands in for the broker's engine handle: the
    broker submits its tasks here, and lets go of it at shutdown.
    """

    def __init__(
        self,
        name: str,
        processes: int,
        connections: int,
        recipe: bytes,
        *,
        reactor: Any = None,
        onTables: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """
        @param name: The broker class's name, for messages.
        @param connections: Connections per process: how many calls each
            process is given at once.
        @param recipe: See L{brokerRecipe}.
        @param onTables: Called with the tables (name -> C{Table}) each
            worker process's broker made, once that process runs.
        """
        self.name = name
        self.recipe = recipe
        self.connections = connections
        self._onTables = onTables
        self._reactor = reactor
        self._names: dict[Callable[..., Any], str] = {}
        self._optionsSent: dict[int, tuple[CallOptions, bytes]] = {}
        # Per transaction function: (its last shared options, its method's
        # name, those options as they travel); see message().
        self._sent: dict[Callable[..., Any], tuple[CallOptions, str, bytes]] = {}
        #: Never anybody's but this broker's: L{sasync.connection.release} closes it.
        self.users: set[int] = set()
        self.closing: Deferred[None] | None = None
        self.queue = _PoolQueue(self, clock=reactor)
        #: The requests to the processes, and their IDs.
        self.outbox = Outbox()
        self._rids = self.outbox.rids
        self._interruptBound = self._interrupt
        self.processes = [WorkerProcess(self, i, self.outbox) for i in range(processes)]
        cpus = workerCPUs(processes, os.environ.get(PIN_ENV), _allowedCPUs())
        for process, cpu in zip(self.processes, cpus, strict=True):
            process.cpu = cpu
        # Interleaved: calls spread over the processes before doubling up.
        for _ in range(connections):
            for process in self.processes:
                self.queue.attachWorker(Slot(process))

    def __repr__(self) -> str:
        return f"<ProcessPool {self.name} x{len(self.processes)}>"

    @property
    def reactor(self) -> Any:
        """
        The reactor, resolved lazily.
        """
        if self._reactor is None:
            self._reactor = globalReactor()
        return self._reactor

    def pids(self) -> list[int]:
        """
        The process IDs of the worker processes running now.
        """
        return [p.pid for p in self.processes if p.pid is not None]

    # Starting -----------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Start every process and wait until each one's broker runs (the
        broker's own startup, in the parent).

        @return: fails with the first process's startup error.
        """
        ds = [p.whenReady() for p in self.processes]
        d = DeferredList(ds, fireOnOneErrback=True, consumeErrors=True)

        def firstError(failure: Failure) -> Failure:
            return failure.value.subFailure  # type: ignore[no-any-return,union-attr]

        return d.addCallbacks(lambda _: None, firstError)

    def learnTables(self, pickled: bytes | None) -> None:
        """
        The tables a process's broker made: handed to C{onTables} (the
        parent's broker sets them too, for building statements in the
        reactor thread).
        """
        if pickled is None or self._onTables is None:
            return
        try:
            tables = pickle.loads(pickled)
        except Exception:
            log.failure("Could not read the tables of {pool}", pool=self)
            return
        self._onTables(tables)

    # Calls --------------------------------------------------------------------

    def _methodName(self, cls: type, f: Callable[..., Any]) -> str:
        name = self._names.get(f)
        if name is not None:
            return name
        for klass in cls.__mro__:
            for key, value in vars(klass).items():
                if value is f or getattr(value, "__sasyncTransaction__", None) is f:
                    self._names[f] = key
                    return key
        raise TypeError(
            f"{cls.__name__}.{f.__name__} is not a method of {cls.__name__}, so a"
            " worker process can't call it"
        )

    def submitTransaction(
        self,
        owner: object,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        options: CallOptions,
        record: CallRecord | None,
        onEnded: Callable[[Task[Any], Any], Any],
        hold: Callable[[Deferred[Any]], object],
    ) -> Deferred[Any]:
        """
        Queue a transaction, C{f(owner, *args, **kw)}, whose C{options} set
        no timeout (the broker's admission of calls, per call: L{submit}
        in fewer steps). Its task runs the request only: its callable is
        C{f}, never called here.

        @param record: The call's record, if it is timed or traced.
        @param onEnded: The task's L{Task.onEnded}.
        @param hold: Called with the task's Deferred before it can fire.
        @return: The task's Deferred; it fails with C{TypeError} if the call
            can't be pickled.
        """
        task = options.task(f, args, kw)
        task.onEnded = onEnded
        hold(task.d)
        # (_callMessage and prepare, inlined.)
        known = self._sent.get(f)
        try:
            if known is None or known[0] is not options or record is not None:
                known = self._learnFor(type(owner), f, options, record)
            message = (known[1], args, kw, known[2])
            try:
                # (asynqueue's dumps, inlined: the common case.)
                if _METHOD in _REDUCERS:
                    body = dumps(message)
                else:
                    body = pickle.dumps(message, PROTOCOL)
            except Exception as e:
                raise TypeError(
                    f"the arguments of {type(owner).__name__}.{f.__name__} can't"
                    f" be pickled for a worker process: {e}"
                ) from e
        except Exception:
            # (Held already: it must fire.)
            task.fail(Failure())  # type: ignore[no-untyped-call]
            return task.d
        rid = next(self._rids)
        task.payload = rid, _pack(len(body), rid, CALL) + body
        task.interruptWith(self._interruptBound)
        return self.queue.submitPrepared(task)

    def message(self, task: Task[Any]) -> tuple[int, bytes]:
        """
        The request that runs C{task} in a worker process, framed (see
        L{sasync.multicore._wire}), and its request ID: a transaction
        travels as (method name, arguments) and its call options, pickled
        apart (see L{_wireOptions}); anything else
        (L{AccessBroker.deferToQueue}) as a pickled call.

        @raise TypeError: it can't be pickled.
        """
        call = task.f
        if not isinstance(call, TransactionCall):
            return self._runMessage(task)
        return self._callMessage(call, task.args, task.kw)

    def _callMessage(
        self, call: TransactionCall, args: tuple[Any, ...], kw: dict[str, Any]
    ) -> tuple[int, bytes]:
        # message() of a transaction. (Per call: what the method's calls
        # share is looked up once.)
        known = self._sent.get(call.f)
        if known is None or known[0] is not call.options or call.record is not None:
            known = self._learn(call)
        try:
            body = dumps((known[1], args, kw, known[2]))
        except Exception as e:
            raise TypeError(
                f"the arguments of {call.__qualname__} can't be pickled for a"
                f" worker process: {e}"
            ) from e
        rid = next(self._rids)
        return rid, _pack(len(body), rid, CALL) + body

    def _runMessage(self, task: Task[Any]) -> tuple[int, bytes]:
        # message() of a plain call.
        call = task.f
        if isinstance(call, SetupJob):
            raise TypeError(
                f"{call.description}: under processes=N, each worker"
                " process's broker makes its tables (and migrates) in its"
                " startup(); table() and migrate() can't be called in the parent"
            )
        body = pickle.dumps((pickleCall(call, task.args, task.kw), task.raw), PROTOCOL)
        rid = next(self._rids)
        return rid, _pack(len(body), rid, RUN) + body

    def _learn(self, call: TransactionCall) -> tuple[CallOptions, str, bytes]:
        # What a call of call.f sends besides its arguments (see _learnFor).
        return self._learnFor(type(call.broker), call.f, call.options, call.record)

    def _learnFor(
        self,
        cls: type,
        f: Callable[..., Any],
        options: CallOptions,
        record: CallRecord | None,
    ) -> tuple[CallOptions, str, bytes]:
        # What a call of method f of class cls sends besides its arguments:
        # (its options, the method's name, the options as they travel),
        # kept per method for the next call if the options are shared (see
        # _wireOptions).
        name = self._names.get(f)
        if name is None:
            name = self._methodName(cls, f)
        known = (options, name, self._wireOptions(options, record))
        if record is None and options.consumer is None and options.timeout is None:
            self._sent[f] = known
        return known

    def _wireOptions(self, options: CallOptions, record: CallRecord | None) -> bytes:
        # The call options as they travel. Most calls share one options
        # object (no call-time keywords, or a method's readOnly default):
        # its pickle is made once, and the worker process unpickles it once.
        # The parent keeps the timeout, the consumer and the call's record;
        # the rest goes along, and the record's trace context.
        if options.consumer is None and options.timeout is None and record is None:
            known = self._optionsSent.get(id(options))
            if known is not None and known[0] is options:
                return known[1]
            if len(self._optionsSent) >= _OPTIONS_KEPT:
                self._optionsSent.clear()
            pickled = dumps(options)
            # (Kept with the object, so that its id isn't reused.)
            self._optionsSent[id(options)] = (options, pickled)
            return pickled
        return dumps(
            dataclasses.replace(
                options,
                consumer=None,
                timeout=None,
                record=None if record is None else record.sendable(),
            )
        )

    def prepare(self, task: Task[Any]) -> None:
        """
        Make C{task} ready for a worker process: its request (see
        L{message}) as its C{payload}, and its interrupter, which asks the
        process running it to cancel it.

        @raise TypeError: it can't be pickled.
        """
        call = task.f
        if isinstance(call, TransactionCall):
            payload = self._callMessage(call, task.args, task.kw)
        else:
            payload = self._runMessage(task)
        task.payload = payload
        # (Replacing any interrupter the broker gave it: in the parent
        # only a process can stop a call. And taking no lock: no thread but
        # the reactor's knows the task here.)
        task.interruptWith(self._interruptBound)

    def _interrupt(self, task: Task[Any], reason: BaseException) -> None:
        # A running call was cancelled or timed out (its task's
        # interrupter: one bound method for every task).
        self.cancel(task.payload[0])

    def cancel(self, rid: int, reason: BaseException | None = None) -> None:
        """
        Ask the process running call C{rid} to cancel it (see
        L{WorkerProcess.cancel}); nothing if none runs it.
        """
        for process in self.processes:
            if rid in process.calls:
                process.cancel(rid)
                return

    def submit(self, task: Task[Any], timeout: float | None = None) -> Deferred[Any]:
        """
        Queue a transaction; see L{sasync.connection.EngineHandle.submit}. A
        call that can't be pickled fails its Deferred with C{TypeError}.
        """
        try:
            self.prepare(task)
        except TypeError:
            task.fail(Failure())  # type: ignore[no-untyped-call]
            return task.d
        if timeout is None:
            return self.queue.submitPrepared(task)
        return self.queue.submitPrepared(task, timeout=timeout)

    # Closing ------------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """
        Let queued calls finish, then stop every process. Idempotent.
        """
        if self.closing is None:
            self.closing = Deferred.fromCoroutine(self._close())
        return follow(self.closing)

    async def _close(self) -> None:
        await self.queue.shutdown()
        await DeferredList([p.stop() for p in self.processes], consumeErrors=True)


__all__ = [
    "CANCEL_GRACE",
    "PIN_ENV",
    "QUIT_GRACE",
    "ProcessPool",
    "ResultSummary",
    "workerCPUs",
]
