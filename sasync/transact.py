"""
C{@transact}: a broker method that runs as a transaction in a worker thread
and returns a Deferred at once; and C{@wait}, for Deferreds that shutdown
must wait for.

A transaction's body runs in the worker thread that owns its connection,
between BEGIN (implicit: the driver sends it with your first statement, so a
C{SET TRANSACTION ...} of yours comes first) and COMMIT. Deferreds are never
touched there: the worker hands back plain values or raises, and AsynQueue
delivers them in the reactor thread.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import reprlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from threading import get_ident
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from sqlalchemy.engine import Connection, FilterResult, Result, RootTransaction, Row
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer
from twisted.logger import Logger
from twisted.python import threadable

from asynqueue import checkNumber
from asynqueue.deferator import Deferator
from asynqueue.task import (
    AsIs,
    Task,
    checkNiceness,
    current,
    currentTask,
    setCurrentTask,
)

from . import retry
from ._readguess import methodMix
from ._stats import CallRecord
from .connection import _outcome as outcome
from .connection import _positions as positions
from .connection import _results as results
from .connection import state
from .errors import ConnectionClosedByServer, ReadOnlyViolation
from .transactiontypes import Transaction

if TYPE_CHECKING:
    from ._protocols import TransactionOwner
    from .connection import EngineHandle

P = ParamSpec("P")
T = TypeVar("T")
B = TypeVar("B", bound="TransactionOwner")

log = Logger()

#: MySQL/MariaDB: ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION.
_READ_ONLY_MYSQL = 1792
#: SQLite: SQLITE_READONLY (PRAGMA query_only).
_READ_ONLY_SQLITE = 8

#: The keywords a call of a @transact method takes for itself.
CALL_KEYWORDS = frozenset(
    {
        "niceness",
        "doNext",
        "doLast",
        "consumer",
        "asList",
        "raw",
        "timeout",
        "retries",
        "stream",
        "readOnly",
        "after",
    }
)


@dataclass(slots=True)
class CallOptions:
    """
    The call-time keywords of one transaction call.

    @ivar stream: C{None}: stream row results on PostgreSQL when the method
        is known (or not yet known) to return rows; C{True}/C{False}: do or
        don't use a server-side cursor for this call's SELECTs.
    @ivar timeout: Seconds for the whole call (C{None}: the broker's
        default).
    @ivar retries: How many times the transaction may run again after a
        failure that allows it (C{None}: the broker's default); see
        L{sasync.retry}.
    """

    niceness: int = 0
    doNext: bool = False
    doLast: bool = False
    consumer: Any = None
    asList: bool = False
    raw: bool = False
    timeout: float | None = None
    retries: int | None = None
    stream: bool | None = None
    #: Whether the transaction is READ ONLY (C{None}: the method's default).
    readOnly: bool | None = None
    #: A WAL position a read-only call waits for (replicas).
    after: str | None = None
    #: Internal (selectorator's N): rows handed out in lists of this many.
    groupSize: int = 1
    #: Internal: the trace context of the call's span as the call travels
    #: to a worker process (C{processes=N}; see L{sasync.multicore}), or
    #: C{None}. (The call's own L{sasync._stats.CallRecord} goes along
    #: with the options, not in them: see L{TransactionCall}.)
    record: Any = None
    #: Internal: the engine handle to run on (a replica, or the primary
    #: once routing chose it); C{None}: the broker's own.
    target: Any = None

    def task(
        self, f: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]
    ) -> Task[Any]:
        """
        A task of C{f(*args, **kw)} with these options' scheduling
        (niceness, C{doNext}/C{doLast}, C{raw}, C{consumer}).
        """
        if self is _DEFAULT_OPTIONS:
            # (The common case: every one of them at Task's own default.)
            return Task.plain(f, args, kw)
        return Task(
            f,
            args,
            kw,
            niceness=self.niceness,
            doNext=self.doNext,
            doLast=self.doLast,
            raw=self.raw,
            consumer=self.consumer,
        )


_DEFAULT_OPTIONS = CallOptions()
#: The options of every call made without call-time keywords (one object,
#: never changed: a caller may tell them by identity).
DEFAULT_OPTIONS = _DEFAULT_OPTIONS

#: What a transaction's function may return that is surely not a result.
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, tuple, dict})
_RESULTS = (Result, FilterResult)

#: Methods (like C{AccessBroker.execute}) whose result is iterated whenever
#: it has rows: they stream on PostgreSQL without learning from past calls.
ALWAYS_STREAM: set[Callable[..., Any]] = set()


@dataclass(frozen=True, slots=True)
class Accepts:
    """
    Which keywords a method accepts itself: they are passed on to it even if
    they are call-time keyword names.
    """

    names: frozenset[str]
    anyKeyword: bool

    @classmethod
    def of(cls, f: Callable[..., Any]) -> Accepts:
        """
        Read them from C{f}'s signature.
        """
        names: set[str] = set()
        anyKeyword = False
        for parameter in inspect.signature(f).parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                anyKeyword = True
            elif parameter.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            ):
                names.add(parameter.name)
        return cls(frozenset(names), anyKeyword)


def splitKeywords(
    accepts: Accepts, name: str, kw: dict[str, Any]
) -> tuple[CallOptions, dict[str, Any]]:
    """
    Separate the call-time keywords from the method's own.

    A call-time keyword that the method names in its signature goes to the
    method. Any other keyword the method does not accept is an error here,
    in the caller's thread, not later in the worker.

    @raise TypeError: an unknown keyword, a bad C{consumer} or C{niceness}.
    @raise ValueError: an out-of-range value, or keywords that exclude each
        other (C{asList}, C{consumer}, C{raw}).
    """
    if not kw:
        return _DEFAULT_OPTIONS, kw
    options: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, value in kw.items():
        if key in accepts.names:
            own[key] = value
        elif key in CALL_KEYWORDS:
            options[key] = value
        elif accepts.anyKeyword:
            own[key] = value
        else:
            raise TypeError(
                f"{name}() got an unexpected keyword argument {key!r}: it is neither"
                f" a parameter of {name} nor a call-time keyword"
                f" ({', '.join(sorted(CALL_KEYWORDS))})"
            )
    if not options:
        return _DEFAULT_OPTIONS, own
    return checkOptions(name, CallOptions(**options)), own


def checkOptions(name: str, o: CallOptions) -> CallOptions:
    """
    Validate call-time keywords.
    """
    checkNiceness(o.niceness)
    if o.consumer is not None and not IConsumer.providedBy(o.consumer):
        raise TypeError(
            f"{name}(consumer={o.consumer!r}): a consumer must provide"
            " twisted.internet.interfaces.IConsumer (registerProducer,"
            " unregisterProducer, write)"
        )
    checkNumber(
        o.timeout,
        f"{name}()'s timeout",
        positive=True,
        noneOk=True,
        typeError=ValueError,
    )
    checkNumber(
        o.retries,
        f"{name}()'s retries",
        integer=True,
        low=0,
        noneOk=True,
        typeError=ValueError,
    )
    if sum(bool(x) for x in (o.asList, o.consumer is not None, o.raw)) > 1:
        raise ValueError(f"{name}(): asList, consumer and raw exclude each other")
    if o.doNext and o.doLast:
        raise ValueError(f"{name}(): doNext and doLast exclude each other")
    if o.readOnly is not None and not isinstance(o.readOnly, bool):
        raise TypeError(f"{name}(readOnly={o.readOnly!r}): readOnly is a bool")
    if o.after is not None:
        positions.parseLSN(o.after, f"{name}(after=...)")
    return o


def isReadOnlyViolation(e: DBAPIError) -> bool:
    """
    Whether C{e} is the database refusing a write in a READ ONLY (or
    C{query_only}) transaction.
    """
    if retry.errorCode(e) == retry.READ_ONLY_SQLSTATE:
        return True
    orig = e.orig
    if getattr(orig, "sqlite_errorcode", None) == _READ_ONLY_SQLITE:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] == _READ_ONLY_MYSQL


_shortRepr = reprlib.Repr()
_shortRepr.maxstring = 40
_shortRepr.maxother = 40
_shortRepr.maxlist = 4
_shortRepr.maxdict = 4


def describeCall(
    broker: object, f: Callable[..., Any], args: tuple[Any, ...], kw: Mapping[str, Any]
) -> str:
    """
    How a call is named in errors: C{LogBroker.setNameValue('url', 'x')}.
    """
    parts = [_shortRepr.repr(a) for a in args]
    parts.extend(f"{k}={_shortRepr.repr(v)}" for k, v in kw.items())
    return f"{type(broker).__name__}.{f.__name__}({', '.join(parts)})"


def noteCall(exception: BaseException, description: str) -> None:
    """
    Name the call in an exception raised by its transaction: a note (shown
    with the traceback) and, for SQLAlchemy statement errors, a detail in
    the message itself. The exception keeps its type.
    """
    note = f"in transaction {description}"
    if note in getattr(exception, "__notes__", ()):
        return
    exception.add_note(note)
    if isinstance(exception, StatementError):
        exception.add_detail(note)


class TransactionCall:
    """
    The callable a transaction's task runs: C{call(*args, **kw)} runs C{f}
    as a transaction on the worker thread's connection. Worker thread only
    (it is made in the reactor thread).
    """

    # What the broker's admission keeps for the end of the call's first
    # attempt (see sasync._admission.Admission._firstEnded), set only where
    # it differs from these: on the call, not in a partial of its own, so a
    # call waiting in the queue holds fewer objects.
    #: Made by the broker's start-up work (L{sasync.startup}).
    startedInStartup: bool = False
    #: The name its outcome is counted under in the broker's stats.
    countedAs: str | None = None
    #: Its place at the writer gate, if it passed it (until it ended).
    gateEntry: Any = None

    def __init__(
        self,
        broker: object,
        handle: EngineHandle | None,
        f: Callable[..., Any],
        options: CallOptions,
        learned: dict[Callable[..., Any], bool] | None = None,
        wrote: dict[Callable[..., Any], bool] | None = None,
        countRows: Callable[[int], object] | None = None,
        record: CallRecord | None = None,
    ) -> None:
        """
        @param broker: The object C{f} is a method of.
        @param handle: The engine handle it runs on; C{None} under
            C{processes=N}, where the parent only sends the call to a
            worker process (which runs its own).
        @param learned: Per method, whether it returned rows (streaming).
        @param wrote: Per method, whether it was seen writing; given only
            if a wrong READ ONLY guess will run the call again.
        @param countRows: Counts the rows a stream hands out, per batch
            (worker threads call it).
        @param record: The call's record while it is timed or traced (the
            same one for every attempt), else C{None}.
        """
        self.broker = broker
        self.record = record
        self._handle = handle
        self.f = f
        self.options = options
        self._learned = learned
        self._countRows = countRows
        self._wrote = wrote if handle is not None and handle.guessesReadOnly else None
        # How AsynQueue's Info names the task (in CancelledError messages),
        # with __qualname__ (made only when asked, see __getattr__).
        self.__module__ = broker.__class__.__module__

    def __getattr__(self, name: str) -> str:
        # Only what normal lookup did not find: the task's name, made when
        # a message needs it (a string per call would cost every call).
        if name == "__qualname__":
            return f"{type(self.broker).__name__}.{self.f.__name__}"
        raise AttributeError(name)

    @property
    def handle(self) -> EngineHandle:
        """
        Worker thread: the engine handle this transaction runs on.
        """
        if self._handle is None:
            raise RuntimeError(f"{self.__qualname__} runs in a worker process")
        return self._handle

    def _wantsStream(self, handle: EngineHandle | None = None) -> bool:
        o = self.options
        learned = self._learned
        if (
            o.stream is None
            and learned is not None
            and learned.get(self.f) is False
            and self.f not in ALWAYS_STREAM
        ):
            # (The common case, a method seen returning no rows: what
            # follows would say no too.)
            return False
        if handle is None:
            handle = self.handle
        if o.asList or o.raw or handle.isSQLite or not handle.supportsStreaming:
            return False
        if o.stream is not None:
            return o.stream
        if not handle.streamsByDefault:
            return False
        if learned is None or self.f in ALWAYS_STREAM:
            return True
        # Stream unless this method was seen returning something else.
        return learned.get(self.f, True)

    def __call__(self, *args: Any, **kw: Any) -> Any:
        worker = state.worker
        if worker is None:
            raise RuntimeError("a transaction must run in a sAsync worker thread")
        handle = self._handle
        if handle is None:
            handle = self.handle  # (It raises.)
        task = current.task
        canceller = worker.canceller
        declared = bool(self.options.readOnly)
        wrote = None if declared else self._wrote
        # Whether it runs READ ONLY: declared so, or (with wrote) guessed.
        readOnly = declared
        if wrote is not None:
            guess = self.guess
            if guess and not self.stillGuessed():
                # Guessed when made (it passed the writer gate by), but
                # calls that ended since show its method writing: back to
                # the gate. (The error is made elsewhere: as a local of
                # this frame, which its traceback holds, it would hold
                # itself.)
                raise _guessWithdrawn(self.__qualname__)
            # PostgreSQL SERIALIZABLE: a method seen only reading (or guessed
            # so, call by call) runs READ ONLY, so it can't take part in
            # serialization failures.
            readOnly = wrote.get(self.f) is False if guess is None else guess
            if readOnly:
                self._guessedReadOnly = True
        self._readOnlyRun = readOnly
        try:
            # (Set to the mode wanted at once: no undo-and-redo per call.)
            connection = worker.connection(readOnly)
        except BaseException as e:
            if isinstance(e, DBAPIError):
                # Nothing was sent: safe to run again.
                retry.markRetryable(e, retry.NO_CONNECTION)
            noteCall(e, describeCall(self.broker, self.f, args, kw))
            raise
        # Read now, once: after a failure the DBAPI connection may be closed.
        dbapiConnection = worker.dbapiConnection
        autocommit = getattr(dbapiConnection, "autocommit", None)
        if autocommit.__class__ is not bool:
            # (A bool there, psycopg's and most drivers', is the answer.)
            autocommit = retry.isAutocommit(dbapiConnection)
        if task is not None and (
            task.stopRequested
            or (
                # AUTOCOMMIT: each statement commits by itself, so a stop
                # must wait for the worker from the start.
                autocommit and not task.passPointOfNoReturn()
            )
        ):
            # Cancelled between dispatch and start: don't even begin.
            raise CancelledError(
                f"{describeCall(self.broker, self.f, args, kw)} was stopped"
            )
        record = self.record
        # (Timing, and the call's span made current in this thread.)
        token = None if record is None else record.start()
        # (canceller.enter(task), inline: per call.)
        canceller.activeTask = task
        try:
            return self._run(worker, handle, connection, task, autocommit, args, kw)
        except DBAPIError as e:
            if declared and isReadOnlyViolation(e):
                # The same error type on every database.
                raise ReadOnlyViolation(
                    f"{describeCall(self.broker, self.f, args, kw)} is read-only"
                    f" (readOnly=True) but tried to write: {e.orig}"
                ) from e
            if (
                readOnly
                and wrote is not None
                and retry.errorCode(e) == retry.READ_ONLY_SQLSTATE
            ):
                # It writes after all: nothing was, so run it again at once.
                wrote[self.f] = True
                retry.markRetryable(e, retry.WROTE_READ_ONLY)
            elif retry.retryReason(e) == retry.READ_ONLY_SERVER:
                # Connect again: the server may be a standby now.
                worker.replaceConnection()
            raise
        except Exception as e:
            if (
                readOnly
                and wrote is not None
                and retry.sqlState(e) == retry.READ_ONLY_SQLSTATE
            ):
                # The same from the driver itself (a raw DB-API cursor, which
                # SQLAlchemy neither wraps nor sees write): run it again.
                wrote[self.f] = True
                retry.markRetryable(e, retry.WROTE_READ_ONLY)
            raise
        finally:
            # (canceller.leave(), inline: per call. Cleared before the stop
            # is looked at: see Canceller.leave.)
            canceller.activeTask = None
            if task is not None and task.stopRequested:
                canceller.settle()
            if record is not None and token is not None:
                record.stop(token)

    def _run(
        self,
        worker: Any,
        handle: EngineHandle,
        connection: Any,
        task: Task[Any] | None,
        autocommit: bool,
        args: Any,
        kw: Any,
    ) -> Any:
        o = self.options
        f = self.f
        learned = self._learned
        if (
            o.stream is None
            and learned is not None
            and learned.get(f) is False
            and f not in ALWAYS_STREAM
        ):
            # (_wantsStream's common case, inline: per call.)
            stream = known = False
        else:
            stream = self._wantsStream(handle)
            known = None
        # SQLAlchemy's own transaction: begun here, or (where the worker
        # beginsLazily, and no echo or listener is to see BEGIN, COMMIT or
        # ROLLBACK) by SQLAlchemy itself with the body's first statement
        # through it (its autobegin). Either way the driver sends BEGIN with
        # the first statement; a body that runs only the raw DB-API cursor
        # then costs none of SQLAlchemy's bookkeeping, and COMMIT is the
        # driver's (see _commit).
        if (
            worker.beginsLazily
            and not connection._echo
            and not (
                (connection._has_events or connection.engine._has_events)
                and _listensToTransactions(connection)
            )
        ):
            transaction = None
        else:
            transaction = connection.begin()
        state.connection = connection
        state.handle = handle
        state.stream = stream
        state.wrote = False
        handedOver = False
        try:
            result = f(self.broker, *args, **kw) if kw else f(self.broker, *args)
            session = state.session
            if session is not None:
                session.flush()
            if task is not None and task.stopRequested:
                raise CancelledError(
                    f"{describeCall(self.broker, self.f, args, kw)} was stopped"
                )
            learnedWrites = self._wrote
            if learnedWrites is not None:
                # (Only calls that may be guessed READ ONLY learn it.)
                wrote = self.wroteNow = state.wrote
                if learnedWrites.get(f) is not True:
                    # One dict item set: atomic under the GIL.
                    learnedWrites[f] = wrote
            # (A plain value, the common case, needs no closer look.)
            hasRows = result.__class__ not in _PLAIN and results.returnsRows(result)
            if hasRows is not known and learned is not None and o.stream is None:
                # One dict item set (atomic under the GIL), unless it says
                # so already.
                learned[f] = hasRows
            if hasRows:
                if o.asList:
                    result = result.all()
                elif o.raw:
                    result = results.bufferedResult(result)
                else:
                    rows: Iterator[Any]
                    if not results.isCursorResult(result):
                        # An ORM result loads objects through its session,
                        # which ends with the transaction: read it all now.
                        rows = iter(result.all())
                        self._commit(
                            handle, connection, transaction, worker, task, autocommit
                        )
                    elif (
                        handle.holdIterations
                        and handle.readsWholeAsRows
                        and not results.isStreamed(result)
                    ):
                        # The driver has read every row already, as Python
                        # rows (MySQL without stream=True): commit now, and
                        # the iteration holds no connection and no
                        # transaction, nor the shared locks of SERIALIZABLE
                        # that a write in the loop would wait for. Only the
                        # list of the rows is added.
                        rows = results.rowsInMemory(
                            result, worker.batchSize, self._countRows
                        )
                        self._commit(
                            handle, connection, transaction, worker, task, autocommit
                        )
                    elif handle.holdIterations:
                        handedOver = True
                        cursors = results.takeCursors()
                        self._endTransactionState()
                        rows = results.rowsInTransaction(
                            result,
                            transaction or _sqlTransaction(connection),
                            worker.batchSize,
                            _commitPoint,
                            worker.leaveTransaction,
                            self._countRows,
                            cursors,
                        )
                    else:
                        self._commit(
                            handle, connection, transaction, worker, task, autocommit
                        )
                        rows = results.rowsAfterCommit(
                            result,
                            worker.batchSize,
                            self._countRows,
                            # (Its connection stays open while it reads.)
                            worker.rowsOpened(),
                        )
                    if o.groupSize > 1:
                        rows = results.grouped(rows, o.groupSize)
                    return rows
            elif isinstance(result, _RESULTS):
                # A result without rows (INSERT ...) is delivered as it is,
                # not iterated.
                self._commit(handle, connection, transaction, worker, task, autocommit)
                return AsIs(result)
            self._commit(handle, connection, transaction, worker, task, autocommit)
            return result
        except BaseException as e:
            handedOver = False
            if self._wrote is not None:
                # Whether a write went through SQLAlchemy before the error
                # (see CallGuess.ended: a refused write it did not see).
                self.wroteNow = state.wrote
            # Rolls back even a transaction whose COMMIT failed (SQLAlchemy
            # keeps it as the connection's until then), or replaces the
            # connection: the next begin() must find none.
            worker.leaveTransaction()
            if retry.retryReason(e) is None:
                reason = retry.classify(
                    e, commitSent=self._commitSent, autocommit=autocommit
                )
                if reason is not None:
                    retry.markRetryable(e, reason)
            noteCall(e, describeCall(self.broker, self.f, args, kw))
            raise
        finally:
            if not handedOver:
                # (_endTransactionState, inline for the common case: per
                # call. It closes what is left open, if anything is.)
                state.connection = None
                state.handle = None
                state.stream = False
                if state.serverCursors is not None or state.session is not None:
                    self._endTransactionState()

    #: Worker thread: whether it runs READ ONLY by guess.
    _guessedReadOnly = False

    #: Worker thread: whether this attempt began READ ONLY (declared, or
    #: guessed on PostgreSQL).
    _readOnlyRun = False

    #: Worker thread: set once COMMIT may have been sent (a lost connection
    #: after that is no reason to run the transaction again).
    _commitSent = False

    #: Set in the reactor thread before the call runs (with C{wrote}): run
    #: it READ ONLY by guess (C{True}), not (C{False}), or as C{wrote}
    #: says of its method (C{None}). See L{sasync._readguess}.
    guess: bool | None = None

    def stillGuessed(self) -> bool:
        """
        Worker thread, as a call made with C{guess=True} starts: whether
        the guess still holds (if not, the call fails with
        L{retry.GuessWithdrawn}, retried at once). It reads what the
        reactor thread learned (a dict item, two floats): a burst of calls
        made at once is guessed when made, and the first of them that write
        stop the guesses of the rest.
        """
        wrote = self._wrote
        return wrote is not None and methodMix.guess(self.f, wrote.get(self.f))

    #: Worker thread, once the body returned or raised, for a call that
    #: learns what its method does (one given C{wrote}): whether this call
    #: wrote (as far as SQLAlchemy saw); read in the reactor once its
    #: Deferred fired.
    wroteNow: bool | None = None

    def _commit(
        self,
        handle: EngineHandle,
        connection: Any,
        transaction: Any,
        worker: Any,
        task: Task[Any] | None,
        autocommit: bool,
    ) -> None:
        # Worker thread.
        if self._guessedReadOnly and retry.inFailedTransaction(
            getattr(worker, "dbapiConnection", None)
        ):
            # The body caught the refusal of its write and went on: COMMIT
            # would roll back in silence. Run it again, read-write.
            raise retry.SwallowedError(f"{self.__qualname__}: {retry.SWALLOWED}")
        lookUp = (
            self.options.retries  # (None or 0: no retries, no lookup.)
            and not autocommit
            and handle.dialectName == "postgresql"
            # A READ ONLY transaction has no ID to look up (the server
            # refused its writes, bar temporary tables, which die with a lost
            # connection): skip the statement, a round trip per read.
            and not (self._readOnlyRun and not state.wrote)
        )
        if lookUp:
            # PostgreSQL with retries: learn the transaction's ID first, so
            # that a COMMIT whose answer is lost can be looked up.
            state.stream = False  # (One row: no server-side cursor.)
            xid, pid = outcome.transactionID(connection, handle.pooled)
        if worker.serverClosed():
            # Known before COMMIT is sent: nothing was committed.
            raise _closedBeforeCommit(connection)
        if task is not None and not task.passPointOfNoReturn():
            # (What _commitPoint does, with the task at hand.)
            raise CancelledError(f"{task.info} was stopped before COMMIT")
        self._commitSent = True
        if transaction is None:
            # Begun lazily (see _run): SQLAlchemy's, if a statement went
            # through it (the lookup's, say), else the driver's alone.
            transaction = connection.get_transaction()
        if not lookUp:
            if transaction is None:
                # SQLAlchemy never began it (the body ran only the raw
                # DB-API cursor): the driver's COMMIT, as SQLAlchemy's own
                # would send it (Connection._commit_impl's work, bar the
                # events and echo that a lazily begun transaction has none
                # of; the dialect's do_commit is the driver's commit() on
                # the drivers that begin lazily), a failure wrapped in
                # SQLAlchemy's exceptions, the connection invalidated if it
                # was lost. (Inline: per call.) Those drivers commit
                # nothing, and send nothing, when no transaction is open.
                try:
                    worker.dbapiConnection.commit()
                except BaseException as e:
                    connection._handle_dbapi_exception(e, None, None, None, None)
            else:
                transaction.commit()
        else:
            try:
                transaction.commit()
            except DBAPIError as e:
                if not e.connection_invalidated:
                    raise
                self._lostCommit(e, xid, pid)
        if state.wrote and handle.tracksWritePosition:
            # Read by the broker in the reactor thread once the call's
            # Deferred fires (callFromThread orders it after this write).
            driverConnection: Any = getattr(worker, "dbapiConnection", None)
            self.writePosition = positions.committedPosition(driverConnection)
            if self.writePosition is None or driverConnection.autocommit:
                # The lookup failed (the connection lost right after COMMIT,
                # which succeeded): the connection may be left broken or in
                # autocommit (then the next call's failures would not be
                # retried), so the next call gets a new one.
                worker.replaceConnection()

    #: Worker thread: where the WAL ended after this call's write committed
    #: (PostgreSQL brokers that track it), else C{None}.
    writePosition: int | None = None

    def _lostCommit(self, e: DBAPIError, xid: int | None, pid: int | None) -> None:
        # Worker thread: COMMIT's answer was lost with the connection.
        # Returns if the database says the transaction committed.
        task = currentTask()
        setCurrentTask(None)  # (The lookup must run even if asked to stop.)
        try:
            verdict = outcome.lostCommitOutcome(self.handle.engine, xid, pid)
        finally:
            setCurrentTask(task)
        if verdict == outcome.COMMITTED:
            log.info(
                "The connection was lost during COMMIT of {call}; the database"
                " says it committed",
                call=self.__qualname__,
            )
            return
        if verdict in (outcome.ABORTED, outcome.NOTHING_WRITTEN):
            retry.markRetryable(e, retry.ROLLED_BACK)
        else:
            e.add_note(
                "The connection was lost while COMMIT was in flight, and the"
                " database could not be asked whether it committed: the"
                " transaction may or may not have been committed (it was not"
                " run again)"
            )
        try:
            raise e
        finally:
            # (Its traceback holds this frame, which is not to hold it.)
            del e

    @staticmethod
    def _endTransactionState() -> None:
        session = state.session
        state.connection = None
        state.handle = None
        state.stream = False
        if state.serverCursors is not None:
            # (Handed over to a stream, they were taken already.)
            results.closeCursors(results.takeCursors())
        if session is not None:
            state.session = None
            session.close()


def _guessWithdrawn(name: str) -> retry.GuessWithdrawn:
    # The error of a call whose read-only guess was withdrawn as it started.
    withdrawn = retry.GuessWithdrawn(f"{name}: {retry.GUESS_WITHDRAWN}")
    retry.markRetryable(withdrawn, retry.GUESS_WITHDRAWN)
    return withdrawn


def _commitPoint() -> None:
    """
    Worker thread, right before COMMIT is sent: from here on a stop of the
    call (cancel, timeout) waits for COMMIT's outcome. Until here, a stop
    fails the caller at once (the transaction cannot commit without
    COMMIT); the stop and this mark are decided atomically (see
    L{Task.passPointOfNoReturn}), so a stop that came first makes this
    raise, and the transaction rolls back instead.

    @raise CancelledError: the call was asked to stop.
    """
    task = currentTask()
    if task is not None and not task.passPointOfNoReturn():
        raise CancelledError(f"{task.info} was stopped before COMMIT")


def _listensToTransactions(connection: Connection) -> bool:
    """
    Whether an event listener of C{connection} (or of its engine, or of
    every engine) is to see its transactions begin, commit or roll back:
    then SQLAlchemy's transaction is begun before the body runs, so that
    it sees them whatever the body runs (see L{TransactionCall._run}).
    """
    dispatch = connection.dispatch
    return bool(dispatch.begin or dispatch.commit or dispatch.rollback)


def _sqlTransaction(connection: Connection) -> RootTransaction:
    """
    Worker thread: SQLAlchemy's transaction on C{connection}, begun now if
    it was to begin lazily and no statement went through SQLAlchemy yet
    (see L{TransactionCall._run}).
    """
    return connection.get_transaction() or connection.begin()


def _closedBeforeCommit(connection: Any) -> DBAPIError:
    """
    Worker thread: the error for a transaction whose connection the server
    closed before COMMIT was sent (the connection is invalidated).
    """
    connection.invalidate()
    return OperationalError(
        "COMMIT",
        None,
        ConnectionClosedByServer(
            "the server closed the connection before COMMIT was sent:"
            " the transaction was not committed"
        ),
        connection_invalidated=True,
    )


def runInline(
    handle: object,
    f: Callable[..., Any],
    broker: object,
    args: Any,
    kw: dict[str, Any],
    accepts: Accepts | None = None,
) -> Any:
    """
    A nested call, from inside a running transaction of the same engine:
    run C{f} right here, in that transaction, and return its plain value.

    @raise RuntimeError: the running transaction belongs to another engine.
    """
    if state.handle is not handle:
        raise RuntimeError(
            f"{type(broker).__name__}.{f.__name__}() was called from inside a"
            " transaction on another database (or outside any transaction in a"
            " sAsync worker thread): call it from the reactor thread instead"
        )
    if accepts is None:
        accepts = Accepts.of(f)
    options, own = splitKeywords(accepts, f.__name__, kw)
    result = f(broker, *args, **own)
    if options.asList and results.returnsRows(result):
        return result.all()
    return result


class _Decorator(Protocol):
    """
    What C{transact(readOnly=...)} returns: C{@transact} with a default.
    """

    @overload
    def __call__(
        self, f: Callable[Concatenate[B, P], Result[Any]]
    ) -> Transaction[B, P, Deferator[Row[Any]]]: ...

    @overload
    def __call__(self, f: Callable[Concatenate[B, P], T]) -> Transaction[B, P, T]: ...


@overload
def transact(
    f: Callable[Concatenate[B, P], Result[Any]],
) -> Transaction[B, P, Deferator[Row[Any]]]: ...


@overload
def transact(f: Callable[Concatenate[B, P], T]) -> Transaction[B, P, T]: ...


@overload
def transact(f: None = None, *, readOnly: bool) -> _Decorator: ...


def transact(
    f: Callable[Concatenate[B, P], Any] | None = None, *, readOnly: bool = False
) -> Any:
    """
    Make a broker method a transaction: calling it returns a C{Deferred} at
    once, and the method runs later in a worker thread, inside BEGIN ...
    COMMIT on that thread's connection (C{self.conn}, C{self.session}).

    Call-time keywords (taken out before the method is called, unless the
    method names them as parameters): C{niceness} (-20..20, lower first),
    C{doNext}, C{doLast}, C{consumer} (an C{IConsumer} for the rows),
    C{asList} (rows as a list), C{raw} (rows buffered in a C{Result}),
    C{timeout} (seconds for the whole call, retries included: then it fails
    with L{sasync.errors.TransactionTimeout}), C{retries} (how many times it
    may run again after a serialization failure, a deadlock or a connection
    lost before COMMIT; see L{sasync.retry}), C{stream} (server-side cursor
    or not). C{timeout} and C{retries} default to the broker's.

    An exception rolls back and fails the Deferred with that exception (a
    note names the call). A row-returning C{Result} becomes a L{Deferator}
    of rows. A call made inside a running transaction runs inline and
    returns a plain value. Any other call must come from the reactor
    thread: from another thread it raises L{sasync.errors.WrongThread}
    (use C{blockingCallFromThread} there).

    Used as C{@transact(readOnly=True)}, the method's transactions are READ
    ONLY (a write in one fails with L{sasync.errors.ReadOnlyViolation}) and
    may run on a replica (see C{docs/scaling.md}); the call-time keyword
    C{readOnly=} overrides that default either way, and C{after=} (a WAL
    position, PostgreSQL) makes a read-only call wait until the server it
    runs on has replayed that position.
    """
    if isinstance(readOnly, bool) is False:
        raise TypeError(f"@transact(readOnly={readOnly!r}): readOnly is a bool")
    if f is None:
        return functools.partial(_decorate, readOnly=readOnly)
    return _decorate(f, readOnly=readOnly)


def _decorate(
    f: Callable[Concatenate[B, P], Any], *, readOnly: bool
) -> Transaction[B, P, Any]:
    accepts = Accepts.of(f)
    name = f.__name__
    readOnlyDefault = CallOptions(readOnly=True) if readOnly else None

    @functools.wraps(f)
    def call(self: B, *args: P.args, **kw: P.kwargs) -> Deferred[Any]:
        site = self._calls
        if state.worker is not None:
            return runInline(site.handle, f, self, args, kw, accepts)  # type: ignore[no-any-return]
        ioThread = threadable.ioThread
        if ioThread is not None and ioThread != get_ident():
            # (Only off the reactor's thread is there anything to check.)
            site.checkThread(name)
        if kw:
            options, own = splitKeywords(accepts, name, kw)
        else:
            options, own = _DEFAULT_OPTIONS, kw
        if readOnlyDefault is not None and options.readOnly is None:
            if options is _DEFAULT_OPTIONS:
                options = readOnlyDefault
            else:
                options = dataclasses.replace(options, readOnly=True)
        record = site.stats.begin(name, options.niceness)
        # Counted where the call ends, whichever way (sasync._stats).
        return site.transact(self, f, args, own, options, name, record)

    call.__sasyncTransaction__ = f  # type: ignore[attr-defined]
    call.__sasyncReadOnly__ = readOnly  # type: ignore[attr-defined]
    return cast("Transaction[B, P, Any]", call)


def wait(
    f: Callable[Concatenate[B, P], Any],
) -> Callable[Concatenate[B, P], Any]:
    """
    Make the broker's L{shutdown<sasync.broker.AccessBroker.shutdown>}
    wait for the Deferred (or coroutine, returned as a Deferred) this
    method returns. Any other value is returned as it is, with nothing to
    wait for (as in the original sAsync).
    """

    @functools.wraps(f)
    def call(self: B, *args: P.args, **kw: P.kwargs) -> Any:
        result = f(self, *args, **kw)
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            self._calls.track(result)
        return result

    return cast("Callable[Concatenate[B, P], Any]", call)


__all__ = [
    "CALL_KEYWORDS",
    "DEFAULT_OPTIONS",
    "Accepts",
    "CallOptions",
    "TransactionCall",
    "splitKeywords",
    "transact",
    "wait",
]
