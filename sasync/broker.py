"""
L{AccessBroker}: asynchronous access to one database, to be subclassed.

A broker's life: made (in the reactor thread, or before the reactor runs);
on the next reactor turn its L{startup} runs, then L{first} as the first
transaction; then it is L{running}. Transactions called before that wait
for it (except the ones L{startup} itself makes). L{shutdown} refuses new
work, lets accepted work finish, and lets go of the engine.

The broker's own attributes all start with C{_} (besides its methods and
the few public properties), so that tables can be plain words: the table
C{url} is C{self.url}.

Its jobs are done by parts of their own, each handed what it needs (values
and callables, never the broker): L{sasync._lifecycle} (phases, start-up,
shutdown), L{sasync._admission} (refusals, retries, routing: what
C{@transact} calls), L{sasync._schema} (L{table}, L{migrate}) and
L{sasync._conveniences}.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as SA
from sqlalchemy.engine import Connection, Row
from twisted.internet.defer import Deferred, fail

from asynqueue import checkNumber, globalReactor

from . import _conveniences, _stats, multicore, notifications, tables
from . import _originals as originals
from ._admission import Admission
from ._lifecycle import Lifecycle, Phase
from ._protocols import WorkQueue
from ._schema import Schema
from .connection import _engines as engines
from .connection import _positions as positions
from .connection import _replicas as replicas
from .connection import currentConnection, currentSession
from .errors import BrokerStopped, NotSupported
from .statements import SelectHolder, StatementCache, selectHolder
from .transact import ALWAYS_STREAM, CallOptions, checkOptions, transact

if TYPE_CHECKING:
    # (The ORM loads when a transaction first asks for self.session.)
    from sqlalchemy.orm import Session


class AccessBroker:
    """
    Asynchronous access to a database through SQLAlchemy: subclass me,
    set up tables in L{startup}, and write transactions as methods decorated
    with L{transact}.

    Made with a URL (C{AccessBroker("sqlite:///x.db")}) or, without one,
    with the global engine of L{sasync.setup}. Brokers with the same URL and
    keywords share one engine and one queue of connection workers.

    Reliability options, also keywords, for every call of this broker:
    C{retries} and C{timeout} (the defaults of the call-time keywords),
    C{maxPending} (refuse calls with L{sasync.errors.Overloaded} while that
    many wait), C{backoff}, C{startupTimeout} (how long the start-up
    waits for a database that is not up yet; see L{sasync.startup}), and
    C{writers} (how many transactions that may write run at once at
    SERIALIZABLE: C{None}, the default, an adaptive limit; C{N} a fixed
    one; C{0} none; see C{docs/concepts/transactions.md}). See
    L{sasync.connection} and C{docs/reliability.md}. C{slowTransaction}
    (seconds): a call that takes longer is logged (C{docs/observability.md}).

    Keywords go to C{sqlalchemy.create_engine}, except the broker options
    C{connections}, C{overflowConnections} and C{batchSize} (see
    L{sasync.connection}), and C{processes}: with C{processes=N} (server
    databases only) transactions run in N worker processes, each with its
    own instance of the broker's class (see L{sasync.multicore}).
    """

    #: False for a worker process's broker (processes=N): first() runs once,
    #: sent by the parent.
    _runsFirst = True
    _madeWith: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})

    def __init_subclass__(cls, **kw: Any) -> None:
        """
        A subclass's own C{__init__} is wrapped to record what each
        instance was made with (its signature and docstring stay its own).
        """
        super().__init_subclass__(**kw)
        # What it was made with: under processes=N each worker process makes
        # its own instance the same way (see sasync.multicore).
        multicore.recordArgsOfSubclass(cls)

    @multicore.recordsArgs
    def __init__(
        self, url: str | SA.URL | None = None, *, reactor: Any = None, **engineKw: Any
    ) -> None:
        """
        Make a broker on the database at C{url}; its start-up begins on
        the next reactor turn.

        @param url: The database URL; C{None} for the global engine.
        @param reactor: The reactor (the global one by default, resolved
            lazily).
        @param engineKw: Keywords for C{sqlalchemy.create_engine}, and the
            broker's options (see the class docstring and
            C{docs/concepts/broker.md}).
        @raise NoEngineError: no URL and no global engine.
        @raise ValueError: a broker option has a bad value.
        """
        originals.takeOptions(engineKw)  # the original's verbose=, spew=
        processes = engineKw.pop("processes", None)
        slowTransaction = _stats.checkSlowTransaction(
            engineKw.pop("slowTransaction", None)
        )
        replicaOptions = replicas.ReplicaOptions.take(engineKw, url)
        self._reactor = reactor
        self._spec = spec = engines.resolveSpec(url, engineKw)
        name = type(self).__name__
        self._statements = StatementCache()
        self._listeners = notifications.ListenerSet()
        self._schema = Schema(
            name=name,
            checkName=functools.partial(tables.checkTableName, self),
            publish=functools.partial(setattr, self),
            refusal=self._refusal,
            run=lambda job: self._calls.setupJob(job, job.description),
            pooled=self._spec.pooler is not None,
        )
        # A worker process's own broker leaves first() to the parent's.
        self._runsFirst = not multicore.isMakingChildBroker()
        # (One process: the pool is not even imported.)
        self._pool = (
            None
            if processes is None
            else multicore.attach(
                type(self),
                self._madeWith,
                processes,
                spec,
                reactor=reactor,
                onTables=self._schema.learnTables,
            )
        )
        self._engine: engines.EngineHandle | None = None
        self._handle: WorkQueue
        if self._pool is None:
            self._engine = self._handle = engines.acquire(spec, self, reactor=reactor)
        else:
            # The pool stands in for the engine handle (submit, queue, close).
            self._handle = self._pool
        url = spec.url.render_as_string(hide_password=True)
        stats = _stats.CallStats(name, url, self._handle, slowTransaction)
        self._replicas = replicas.attach(
            replicaOptions, spec, self, processes, reactor=reactor
        )
        if self._replicas is not None:
            # broker.stats().servers: each replica's calls, health and lag.
            stats.describeServers = self._replicas.describe
            if self._engine is not None:
                # Session consistency needs each write's position.
                self._engine.trackWritePositions()
        self._life = Lifecycle(
            name=name,
            url=url,
            startupTimeout=spec.startupWait,
            describe=self.__repr__,
            getReactor=self._getReactor,
            runStartup=self._runStartup,
            submit=self._handle.submit,
        )
        self._calls = Admission(
            name=name,
            spec=spec,
            handle=self._handle,
            engine=self._engine,
            replicaSet=self._replicas,
            lifecycle=self._life,
            stats=stats,
            getReactor=self._getReactor,
        )
        r = self._getReactor()
        self._triggerID = r.addSystemEventTrigger("before", "shutdown", self.shutdown)
        # Next turn: a subclass's __init__ finishes before startup() runs.
        r.callLater(0, self._life.start)

    def __repr__(self) -> str:
        url = self._spec.url.render_as_string()
        life = getattr(self, "_life", None)  # (None while __init__ runs.)
        phase = Phase.NEW if life is None else life.phase
        return f"<{type(self).__name__} {url} {phase.value}>"

    def _getReactor(self) -> Any:
        if self._reactor is None:
            self._reactor = globalReactor()
        return self._reactor

    def _refusal(self, what: str) -> Deferred[Any] | None:
        # Work of the broker's own (tables, ...) refused now, if it is.
        if self._life.refusing():
            return fail(BrokerStopped(f"{what} was called after shutdown()"))
        if self._life.phase is Phase.FAILED:
            return fail(self._life.startupError())
        return None

    @classmethod
    def setup(cls, url: str | SA.URL, **kw: Any) -> None:
        """
        Set the global engine used by brokers made without a URL; see
        L{sasync.setup}.
        """
        engines.setup(url, **kw)

    # The engine, and the original sAsync's spellings of it --------------------

    @property
    def engine(self) -> SA.Engine:
        """
        The SQLAlchemy C{Engine} of the broker's database, read-only: its
        C{url} and C{dialect} (C{broker.engine.dialect.name}) say where the
        broker works. Brokers with the same URL and keywords share it. Run
        statements in transactions (L{transact}), not on it directly.

        @raise NotSupported: under C{processes=N}, where each worker
            process has an engine of its own and the parent none.
        """
        if self._engine is None:
            raise NotSupported(
                f"{type(self).__name__}.engine: under processes=N each worker"
                " process has its own engine; the parent has none"
            )
        return self._engine.engine

    @property
    def q(self) -> originals.OriginalQueue:
        """
        Deprecated (the original's queue): C{broker.q.engine} is
        L{engine}; nothing else is left of it.
        """
        return originals.queue(lambda: self.engine)

    @property
    def singleton(self) -> bool:
        """
        Deprecated: whether the database is SQLite; write
        C{broker.engine.dialect.name == "sqlite"}.
        """
        return originals.singleton(self._spec.isSQLite)

    # Overridables -------------------------------------------------------------

    def startup(self) -> Any:
        """
        Override: runs in the reactor thread before any transaction; may
        return a Deferred or be a coroutine function. Set up tables here
        with L{table}. Transactions it calls run at once; everybody else's
        wait until it (and L{first}) are done.
        """
        return None

    def first(self) -> Any:
        """
        Override: runs as the first transaction, after L{startup}, before any
        other (it need not be decorated with L{transact}).
        """
        return None

    # Starting and running -----------------------------------------------------

    async def _runStartup(self) -> None:
        # The start-up's body (the lifecycle runs it, in its context).
        # processes=N: startup() runs in each worker process instead.
        result = self.startup() if self._pool is None else self._pool.start()
        if inspect.isawaitable(result):
            await result
        cls = type(self)
        if cls.first is not AccessBroker.first and self._runsFirst:
            first = getattr(cls.first, "__sasyncTransaction__", cls.first)
            calls = self._calls
            options = CallOptions(doNext=True)
            await calls.attempts(
                self, first, (), {}, options, calls.startupRetries(), None
            )

    @property
    def running(self) -> bool:
        """
        True once startup (and L{first}) finished, until L{shutdown}.
        """
        return self._life.running

    def waitUntilRunning(self) -> Deferred[None]:
        """
        A Deferred that fires once the broker runs (at once if it does), or
        fails with L{sasync.errors.StartupError} if its startup failed.

        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._calls.checkThread("waitUntilRunning")
        return self._life.waitUntilRunning()

    def callWhenRunning(
        self, f: Callable[..., Any], *args: Any, **kw: Any
    ) -> Deferred[Any]:
        """
        Call C{f(*args, **kw)} once the broker runs.

        @return: A Deferred firing with C{f}'s result (waited for if it is a
            Deferred or coroutine).
        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._calls.checkThread("callWhenRunning")

        def call(_: None) -> Any:
            result = f(*args, **kw)
            if inspect.iscoroutine(result):
                return Deferred.fromCoroutine(result)
            return result

        return self.waitUntilRunning().addCallback(call)

    def stats(self) -> _stats.BrokerStats:
        """
        A snapshot of this broker: its queue, connections and call counts;
        cheap (a few counters read). See L{sasync._stats.BrokerStats}.
        """
        calls = self._calls
        gate = calls.gate
        return calls.stats.snapshot(
            calls.waiting(), None if gate is None else gate.places
        )

    @property
    def writePosition(self) -> str | None:
        """
        The WAL position (C{"0/16B3740"}) of the last write this broker
        committed, or C{None} (none yet, or not PostgreSQL). Hand it to a
        read-only call elsewhere as C{after=} to read this write there.

        Learning it costs one short query per write transaction, so a
        broker without replicas learns it only from the first time this is
        read (C{None} until a write commits after that).
        """
        if self._engine is not None and not self._engine.tracksWritePosition:
            self._engine.trackWritePositions()
        p = self._calls.writePosition
        return None if p is None else positions.formatLSN(p)

    # Inside a transaction -----------------------------------------------------

    @property
    def conn(self) -> Connection:
        """
        The current transaction's C{Connection} (worker thread only).

        @raise NotInTransaction: outside a transaction.
        """
        return currentConnection()

    connection = conn

    @property
    def session(self) -> Session:
        """
        An ORM C{Session} on the current transaction's connection and
        transaction (worker thread only): flushed before COMMIT, its objects
        not expired by it.

        @raise NotInTransaction: outside a transaction.
        """
        return currentSession()

    def s(self, *args: Any) -> Any:
        """
        The statement cache: C{s(name)} selects C{name} and says whether a
        statement is cached under it; C{s([cols], *where)} or
        C{s(statement)} caches one under the selected name; C{s()} returns
        it, to C{.execute(**params)} in the current transaction. See
        L{sasync.statements}.
        """
        return self._statements.s(*args)

    # Tables -------------------------------------------------------------------

    def table(self, name: str, *columns: Any, **kw: Any) -> Deferred[SA.Table]:
        """
        Create table C{name} with C{columns} if it is missing, with the
        indexes named by C{index_NAME=[cols]} and C{unique_NAME=[cols]}
        keywords (database names C{ix_<table>_<NAME>} and
        C{ux_<table>_<NAME>}), and set C{self.<name>} to the C{Table}.
        Other keywords go to C{sqlalchemy.Table}.

        Idempotent: an existing table or index is left alone, and losing a
        race with another broker creating them is no error. An existing
        table is compared with the declaration: missing nullable or
        server-defaulted columns and missing indexes are added (not with
        C{evolve=False}); any other difference fails with
        L{SchemaMismatch<sasync.errors.SchemaMismatch>} (see
        C{docs/schema.md}).

        @return: A Deferred firing with the C{Table}.
        @raise TableNameError: C{name} would shadow a method or attribute.
        @raise WrongThread: called from a thread other than the reactor's.
        @raise SchemaMismatch: (in the Deferred) the database's table
            differs from the declaration in a way not added by itself.
        """
        self._calls.checkThread("table")
        return self._schema.table(name, columns, kw)

    def migrate(
        self, scriptLocation: str | os.PathLike[str], revision: str = "head"
    ) -> Deferred[str]:
        """
        Upgrade the database with Alembic (extra C{sAsync[migrations]}) to
        C{revision}, with the script directory at C{scriptLocation}: in a
        worker thread, on the broker's engine, the worker's connection
        passed to C{env.py} as C{config.attributes["connection"]}. Brokers
        and processes migrating at once take turns on a database lock: one
        migrates, the others then find it done. Usually called from
        L{startup} before its L{table} calls; see C{docs/schema.md} and
        L{sasync.migrations}.

        @return: A Deferred firing with the revision now current (several
            heads joined with C{","}; C{""} if none).
        @raise MigrationFailed: (in the Deferred) a migration failed; it
            names the revision.
        """
        return self._schema.migrate(scriptLocation, revision)

    # Conveniences -------------------------------------------------------------

    def select(self, *args: Any, **kw: Any) -> SA.Select[Any]:
        """
        C{sqlalchemy.select(*args, **kw)}, at once (no Deferred).
        """
        return SA.select(*args, **kw)

    @contextmanager
    def selex(self, *args: Any, **kw: Any) -> Iterator[SelectHolder]:
        """
        A context manager yielding a placeholder for C{select(*args)}: call
        its generative methods (C{where}, C{order_by}, ...) inside the
        block, then call it for the result. C{args} may also be a ready
        statement, or a callable making one and its arguments:
        C{selex(table.delete)}. Inside a transaction that is the
        C{Result}; outside, a Deferred from a transaction run with the
        call-time keywords C{kw}::

            with self.selex(t.c.id) as sh:
                sh.where(t.c.value > 10)
            rows = yield sh(asList=True)
        """
        yield from selectHolder(self.execute, args, kw)

    @transact
    def _selectRows(self, statement: Any) -> Any:
        return self.conn.execute(statement)

    def selectorator(
        self,
        statement: Any,
        consumer: Any = None,
        de: Deferred[None] | None = None,
        N: int = 1,
    ) -> Deferred[Any]:
        """
        Run C{statement} as a transaction and iterate its rows: the Deferred
        fires with a L{Deferator} of rows (of lists of C{N} rows if C{N} >
        1), or, given a C{consumer}, with the consumer once every row was
        written to it. C{de}, if given, fires once the statement has run,
        before the iteration.
        """
        self._calls.checkThread("selectorator")
        _conveniences.checkGroupSize(N)
        options = CallOptions(consumer=consumer, groupSize=N)
        if consumer is not None:
            checkOptions("selectorator", options)
        fn = type(self)._selectRows.__sasyncTransaction__  # type: ignore[attr-defined]
        d = self._calls.transact(self, fn, (statement,), {}, options)
        if de is not None:
            d.addCallback(_conveniences.fireFirst, de)
        return d

    @transact
    def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        """
        A transaction running C{statement} (a string is taken as SQL text)
        with parameters C{args} (a dict or a list of dicts) or keywords;
        the result is handled as any transaction's (a L{Deferator} of rows,
        a list with C{asList=True}, ...).
        """
        if isinstance(statement, str):
            statement = _conveniences.sqlText(statement)
        if kw:
            return self.conn.execute(statement, kw)
        return self.conn.execute(statement, *args)

    def sql(self, text: str, **params: Any) -> Deferred[list[Row[Any]]]:
        """
        Run SQL text (with C{:name} parameters from C{params}) as a
        transaction; fires with the list of rows (call-time keywords such as
        C{niceness} may be given too).
        """
        if "consumer" not in params and "raw" not in params:
            params.setdefault("asList", True)
        return self.execute(_conveniences.sqlText(text), **params)

    @transact
    def produceRows(
        self,
        /,
        f: Callable[[Any], Any] | None,
        iterator: Any,
        table: SA.Table | str,
        colName: str,
        **constants: Any,
    ) -> list[Any]:
        """
        One transaction inserting a row for each item of C{iterator} into
        C{table} (a C{Table} or a table name): column C{colName} gets
        C{f(item)} (the item itself if C{f} is C{None}), and the other
        columns the C{constants}. Fires with the new rows' primary keys, in
        order. C{f} runs in the transaction's worker thread and returns the
        value itself: a Deferred or coroutine from it is refused with
        C{TypeError} (the original sAsync took one; resolve those values
        first and pass C{f=None}).
        """
        if isinstance(table, str):
            table = getattr(self, table)
        assert isinstance(table, SA.Table)
        return _conveniences.insertRows(
            self.conn, f, iterator, table, colName, constants
        )

    def listen(
        self, channel: str, callback: Callable[[str], object]
    ) -> Deferred[notifications.Listener]:
        """
        PostgreSQL: call C{callback(payload)} in the reactor thread for each
        notification sent on C{channel}, in the order sent, from a
        connection and thread of the listener's own. After a lost
        connection it listens again by itself, then calls
        C{callback.onReconnect()} if there is one (notifications sent
        meanwhile are missed). Stop it with L{sasync.Listener.stop}
        or the broker's L{shutdown}. See C{docs/notifications.md}.

        @return: Fires with the L{sasync.Listener} once C{LISTEN} is
            active; fails with L{sasync.errors.NotSupported} elsewhere than
            PostgreSQL, and behind a transaction-mode pooler (C{pooled=True}).
        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._calls.checkThread("listen")
        if self._life.refusing():
            return fail(
                BrokerStopped(f"listen({channel!r}) was called after shutdown()")
            )
        if self._spec.pooler is not None:
            # LISTEN stays on the server connection it ran on, which a
            # transaction-mode pooler lends to others after each statement.
            return fail(
                NotSupported(
                    f"listen({channel!r}): LISTEN needs a connection of its own,"
                    " which a transaction-mode pooler (pooled=True) can't keep:"
                    " listen through a broker on a direct URL"
                )
            )
        return notifications.listen(
            self._spec.url,
            dict(self._spec.engineKw),
            channel,
            callback,
            backoff=self._spec.backoff,
            listeners=self._listeners,
            whenRunning=self.waitUntilRunning(),
            reactor=self._getReactor(),
        )

    @transact
    def notify(self, channel: str, payload: str = "") -> None:
        """
        PostgreSQL: send C{payload} on C{channel}. Called from the reactor
        thread it is a transaction of its own (a C{Deferred[None]});
        called inside a transaction it joins it, and the notification is
        delivered when that transaction commits, never if it rolls back.

        @raise NotSupported: Elsewhere than PostgreSQL.
        """
        notifications.notifyIn(self.conn, channel, payload)

    def deferToQueue(
        self, func: Callable[..., Any], *args: Any, niceness: int = 0, **kw: Any
    ) -> Deferred[Any]:
        """
        Run C{func(*args, **kw)} in one of the broker's worker threads (not
        in a transaction), once the broker runs, with the queue's keywords
        (C{niceness}, C{doNext}, C{timeout}, ...).

        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._calls.checkThread("deferToQueue")
        if self._life.refusing():
            return fail(
                BrokerStopped(f"deferToQueue({func!r}) was called after shutdown()")
            )
        queue = self._handle.queue

        def call(_: None) -> Deferred[Any]:
            return queue.call(func, *args, niceness=niceness, **kw)

        life = self._life
        if life.phase is Phase.RUNNING or life.inStartupContext():
            d = call(None)
        else:
            d = self.waitUntilRunning().addCallback(call)
        self._calls.track(d)
        return d

    # Shutting down ------------------------------------------------------------

    def shutdown(self, timeout: float | None = None) -> Deferred[None]:
        """
        Refuse new work, wait for queued and running transactions and for
        the Deferreds of L{wait}-decorated methods, then let go of the engine
        (the last broker on it closes its connections, each in its thread,
        and disposes it). Idempotent; runs by itself before the reactor
        stops; safe before startup finished.

        @param timeout: Seconds to let accepted work finish; then whatever
            is left is cancelled: queued transactions fail with
            C{CancelledError} without running, running ones too, at once
            (they are interrupted at the driver and roll back in the
            background), except a transaction whose COMMIT was already
            sent, whose outcome is waited for. Either way each caller hears
            how its call ended; nothing is dropped silently. Then the
            workers get L{sasync._lifecycle.SHUTDOWN_GRACE} more seconds
            to close; any still busy (in code of yours that never returns
            to the database, or on a server that does not answer) is left
            to end by itself, and logged. A later call with a timeout may
            shorten the wait of an earlier one.
        @raise ValueError: C{timeout} is not a number >= 0.
        @raise WrongThread: called from a thread other than the reactor's.
        """
        self._calls.checkThread("shutdown")
        checkNumber(
            timeout, "shutdown()'s timeout", low=0, noneOk=True, typeError=ValueError
        )
        return self._life.stop(
            timeout,
            before=self._stopListening,
            close=self._close,
            abandon=self._abandon,
        )

    async def _stopListening(self) -> None:
        with (
            contextlib.suppress(ValueError, KeyError, TypeError),
            warnings.catch_warnings(),
        ):
            # (Already fired or removed: Twisted warns of the former.)
            warnings.simplefilter("ignore", DeprecationWarning)
            self._getReactor().removeSystemEventTrigger(self._triggerID)
        await self._listeners.stopAll()

    def _close(self) -> Deferred[None]:
        # Every call has ended: let go of the engine (and the replicas').
        closing = engines.release(self._handle, self)
        if self._replicas is not None:
            closing = replicas.closeBoth(closing, self._replicas)
        return closing

    def _abandon(self) -> None:
        # shutdown(timeout=) stopped waiting for busy workers (see
        # EngineHandle.abandon).
        abandon = getattr(self._handle, "abandon", None)
        if abandon is not None:
            abandon()


for _method in (AccessBroker.execute, AccessBroker._selectRows):
    ALWAYS_STREAM.add(_method.__sasyncTransaction__)  # type: ignore[attr-defined]
del _method

__all__ = ["AccessBroker"]
