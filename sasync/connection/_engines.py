"""
Engines and their queues, shared by every broker with the same URL and
options.

An L{EngineHandle} is one SQLAlchemy engine plus one L{TaskQueue} whose
workers are L{ConnectionWorker}s, each owning one connection for its whole
life. Brokers with the same URL and keywords share a handle (SQLite: the
same database file, whatever the keywords, because SQLite has one writer and
iterations interleave on its single connection). The last broker to let go
of a handle closes it: queued work finishes, each connection is closed in its
own thread, the engine is disposed.

Broker options, taken out of the keywords before C{create_engine} sees them:

  - C{connections}: how many connections (worker threads). SQLite: always 1.
    Server databases: L{DEFAULT_CONNECTIONS} unless given.
  - C{overflowConnections}: how many extra connections may be added, for as
    long as every worker is held by an open iteration while transactions
    wait. Default L{DEFAULT_OVERFLOW}. Open iterations hold at most
    C{connections + overflowConnections - 1} workers; beyond that the
    oldest lets go of its own (see L{EngineHandle.maxHeld}), so that a
    transaction started inside an iteration loop never deadlocks.
  - C{batchSize}: rows fetched per hop between worker and reactor
    (default L{DEFAULT_BATCH_SIZE}).
  - C{createWorker}: makes the connection workers (see
    L{sasync._protocols.CreateWorker}); L{ConnectionWorker} by default.
    Unit tests pass one making fake workers, so that a broker runs with
    no database; a handle made with another one is never shared with
    brokers that use the default.
  - C{idleTimeout}: seconds after which a connection left idle is closed
    (in its worker thread), to be opened again by the next transaction
    (default C{None}: kept open). See L{ConnectionWorker}.
  - C{pool_size}, C{max_overflow}: SQLAlchemy's names for C{connections}
    and C{overflowConnections}; other pool keywords are refused unless a
    pool is named (see L{sasync.connection._pooloptions}).
  - C{pooled} (PostgreSQL): the URL is a transaction-mode pooler
    (PgBouncer, pgcat), and C{poolerConnections}: how many server
    connections the pooler has for this database and user (its pool size;
    default: C{connections}). See
    L{sasync.connection._pooler}.

Call policies, per broker (brokers sharing an engine may differ in them),
also taken out of the keywords (see C{docs/reliability.md}):

  - C{retries}: the default of the call-time keyword C{retries}: how many
    times a transaction that failed in a way that allows it runs again (see
    L{sasync.retry}). The default, C{None}, runs a transaction again (up to
    L{sasync.retry.CONFLICT_RETRIES} times) only after the conflicts of
    serializable transactions; C{0} never.

Server databases run every transaction SERIALIZABLE unless the keyword
C{isolation_level} (SQLAlchemy's) says otherwise: the outcome is as if
transactions ran one at a time (see C{docs/concepts/transactions.md}).
  - C{timeout}: the default of the call-time keyword C{timeout}, in
    seconds (default C{None}: none).
  - C{maxPending}: refuse a new transaction at once, with
    L{sasync.errors.Overloaded}, while this many wait for a connection on
    the broker's engine (default C{None}: no bound).
  - C{backoff}: a L{sasync.retry.Backoff}, the waits between attempts.
  - C{startupTimeout}: seconds for which the broker's start-up waits for
    its database to accept connections (default: L{DEFAULT_STARTUP_TIMEOUT}
    for server databases, 0 for SQLite; C{0}: not at all). See
    L{sasync.startup}.
  - C{writers}: how many transactions that may write run at once at
    SERIALIZABLE, by default (C{None}) an adaptive limit; an C{int} fixes
    it, C{0} or C{False} lifts it. See C{docs/concepts/transactions.md}.

Everything here runs in the reactor thread unless a docstring says so.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as SA
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.expression import Selectable
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger

from asynqueue import checkNumber, follow, globalReactor
from asynqueue.mailbox import mailboxFor
from asynqueue.task import Task, current
from asynqueue.taskqueue import TaskQueue
from asynqueue.workers import JobThread

from .._protocols import CreateWorker, WorkQueue
from ..errors import NoEngineError
from ..retry import DEFAULT_BACKOFF, Backoff
from ._pooler import PoolerOptions
from ._pooloptions import translatePoolOptions
from ._results import keepCursor
from ._threadstate import state
from ._workers import ConnectionWorker

log = Logger()

#: Connections (worker threads) per server database unless C{connections=}.
DEFAULT_CONNECTIONS = 4
#: Extra connections allowed while every worker is held by an iteration.
DEFAULT_OVERFLOW = 4
#: Rows per batch fetched from the worker.
DEFAULT_BATCH_SIZE = 1000
#: Seconds the KILL QUERY connection (MySQL/MariaDB cancels) may wait for
#: the server at each step.
KILL_TIMEOUT = 5
#: Seconds a broker's start-up waits for its server database to accept
#: connections (SQLite: none; a file that can't be opened won't appear).
DEFAULT_STARTUP_TIMEOUT = 30.0

#: The isolation level of server databases unless C{isolation_level=}.
DEFAULT_ISOLATION = "SERIALIZABLE"
SERIALIZABLE_BACKENDS = frozenset({"postgresql", "mysql", "mariadb"})

_SELECT_RE = re.compile(r"\s*SELECT\b", re.IGNORECASE)
#: SQL text that only reads (a wrong guess costs one more attempt).
_READS_RE = re.compile(r"\s*(SELECT|SHOW)\b", re.IGNORECASE)


#: The drivers sAsync installs, for URLs that name none.
DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg2", "mysql": "mysql+pymysql"}


def withDefaultDriver(url: str | URL) -> URL:
    """
    C{url} parsed, with sAsync's driver where it names none: C{postgresql://}
    means psycopg2 and C{mysql://} PyMySQL. (SQLAlchemy 2.1 would pick
    psycopg 3 and mysqlclient, which sAsync does not install.)
    """
    parsed = make_url(url)
    driver = DEFAULT_DRIVERS.get(parsed.drivername)
    return parsed if driver is None else parsed.set(drivername=driver)


@dataclass(frozen=True)
class EngineSpec:
    """
    What a handle is made from: a URL, the broker options and the keywords
    for C{create_engine}.
    """

    url: URL
    engineKw: Mapping[str, Any] = field(default_factory=dict)
    connections: int | None = None
    overflowConnections: int = DEFAULT_OVERFLOW
    batchSize: int = DEFAULT_BATCH_SIZE
    idleTimeout: float | None = None
    pooler: PoolerOptions | None = None
    # Call policies: per broker, so not part of what makes brokers share.
    retries: int | None = field(default=None, compare=False)
    timeout: float | None = field(default=None, compare=False)
    maxPending: int | None = field(default=None, compare=False)
    backoff: Backoff = field(default=DEFAULT_BACKOFF, compare=False)
    startupTimeout: float | None = field(default=None, compare=False)
    #: How many transactions that may write run at once: C{None} adaptive,
    #: C{0} no limit (see C{sasync._writegate}).
    writers: int | None = field(default=None, compare=False)
    #: Makes the handle's connection workers (tests: fakes).
    createWorker: CreateWorker = ConnectionWorker

    @classmethod
    def fromArgs(cls, url: str | URL, kw: Mapping[str, Any]) -> EngineSpec:
        """
        Split a broker's keywords into broker options and engine keywords.

        @raise ValueError: an option has a bad value.
        """
        engineKw = dict(kw)
        parsed = withDefaultDriver(url)
        # (pool_size and max_overflow: SQLAlchemy's names for the next two.)
        translatePoolOptions(engineKw, parsed.get_backend_name() == "sqlite")
        connections = engineKw.pop("connections", None)
        overflow = engineKw.pop("overflowConnections", DEFAULT_OVERFLOW)
        batchSize = engineKw.pop("batchSize", DEFAULT_BATCH_SIZE)
        createWorker = engineKw.pop("createWorker", ConnectionWorker)
        if not callable(createWorker):
            raise ValueError(
                f"createWorker must be a callable making workers, not {createWorker!r}"
            )
        idleTimeout = _idleTimeout(engineKw.pop("idleTimeout", None), parsed)
        policies = _callPolicies(engineKw)
        pooler = PoolerOptions.take(engineKw, parsed)
        if connections is not None:
            checkNumber(
                connections,
                "connections",
                integer=True,
                positive=True,
                typeError=ValueError,
            )
            if parsed.get_backend_name() == "sqlite" and connections != 1:
                raise ValueError(
                    "SQLite has one writer: a broker on SQLite uses exactly one"
                    f" connection, not connections={connections}"
                )
        checkNumber(
            overflow, "overflowConnections", integer=True, low=0, typeError=ValueError
        )
        checkNumber(
            batchSize, "batchSize", integer=True, positive=True, typeError=ValueError
        )
        return cls(
            parsed,
            engineKw,
            connections,
            overflow,
            batchSize,
            **policies,
            idleTimeout=idleTimeout,
            pooler=pooler,
            createWorker=createWorker,
        )

    @property
    def backend(self) -> str:
        """
        The database kind: C{sqlite}, C{postgresql}, C{mysql}, ...
        """
        return self.url.get_backend_name()

    @property
    def isSQLite(self) -> bool:
        """
        Whether this is SQLite (one connection, interleaved iterations).
        """
        return self.backend == "sqlite"

    @property
    def startupWait(self) -> float:
        """
        Seconds the start-up waits for the database: C{startupTimeout}, or
        its default (L{DEFAULT_STARTUP_TIMEOUT}, SQLite 0).
        """
        if self.startupTimeout is not None:
            return self.startupTimeout
        return 0.0 if self.isSQLite else DEFAULT_STARTUP_TIMEOUT

    @property
    def key(self) -> tuple[Any, ...]:
        """
        The registry key: equal for brokers that share a handle.
        """
        database = self.url.database or ""
        # Workers of another kind (a test's fakes) never share.
        workers = () if self.createWorker is ConnectionWorker else (self.createWorker,)
        if (
            self.isSQLite
            and database not in ("", ":memory:")
            and not database.startswith("file:")
        ):
            return ("sqlite", os.path.realpath(database), *workers)
        return (
            self.url.render_as_string(hide_password=False),
            _freeze(self.engineKw),
            self.connections,
            self.overflowConnections,
            self.batchSize,
            self.idleTimeout,
            self.pooler,
            *workers,
        )


def _idleTimeout(value: Any, url: URL) -> float | None:
    """
    The C{idleTimeout} option, checked.

    @raise ValueError: not a positive number of seconds or C{None}, or the
        database is SQLite's in memory (which closing its one connection
        would lose).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(
            "idleTimeout must be a positive number of seconds or None (keep"
            f" connections open), not {value!r}"
        )
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:")
        or "mode=memory" in database
        or url.query.get("mode") == "memory"
    ):
        raise ValueError(
            f"idleTimeout={value!r} on an in-memory SQLite database: closing its"
            " connection would lose the database; use a file, or no idleTimeout"
        )
    return float(value)


def _callPolicies(kw: dict[str, Any]) -> dict[str, Any]:
    """
    Take the call policies (C{retries}, C{timeout}, C{maxPending},
    C{backoff}, C{startupTimeout}, C{writers}) out of C{kw}, checked.

    @raise ValueError: a bad value.
    """
    policies: dict[str, Any] = {}
    if "retries" in kw:
        policies["retries"] = checkNumber(
            kw.pop("retries"),
            "retries",
            integer=True,
            low=0,
            noneOk=True,
            typeError=ValueError,
        )
    if "timeout" in kw:
        policies["timeout"] = checkNumber(
            kw.pop("timeout"),
            "timeout",
            positive=True,
            noneOk=True,
            typeError=ValueError,
        )
    if "maxPending" in kw:
        policies["maxPending"] = checkNumber(
            kw.pop("maxPending"),
            "maxPending",
            integer=True,
            positive=True,
            noneOk=True,
            typeError=ValueError,
        )
    if "backoff" in kw:
        backoff = kw.pop("backoff")
        if not isinstance(backoff, Backoff):
            raise ValueError(f"backoff must be a sasync.retry.Backoff, not {backoff!r}")
        policies["backoff"] = backoff
    if "startupTimeout" in kw:
        startupTimeout = kw.pop("startupTimeout")
        checkNumber(startupTimeout, "startupTimeout", low=0, typeError=ValueError)
        policies["startupTimeout"] = float(startupTimeout)
    if "writers" in kw:
        policies["writers"] = _checkWriters(kw.pop("writers"))
    return policies


def _checkWriters(writers: object) -> int | None:
    """
    The option C{writers}: C{None} (adaptive), a fixed C{int} limit, or
    C{0}/C{False} (no limit), as C{None} or an C{int}.

    @raise ValueError: anything else, named.
    """
    if writers is None or writers is False:
        return None if writers is None else 0
    if writers is True:
        raise ValueError(
            "writers=True: give None (the default, an adaptive limit), a number"
            " of transactions that may write at once, or 0/False (no limit)"
        )
    checkNumber(writers, "writers", integer=True, low=0, typeError=ValueError)
    assert isinstance(writers, int)
    return writers


def _freeze(value: Any) -> Any:
    """
    A hashable stand-in for keyword values (dicts and lists included).
    """
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


class EngineHandle:
    """
    One engine, its queue and its connection workers, shared by brokers.
    """

    def __init__(self, spec: EngineSpec, *, reactor: Any = None) -> None:
        self.spec = spec
        self._reactor = reactor
        kw = dict(spec.engineKw)
        if "poolclass" not in kw and "pool" not in kw:
            # Each worker keeps its one connection for life: no pool needed.
            kw["poolclass"] = NullPool
        if spec.pooler is not None:
            spec.pooler.engineKeywords(spec.url, kw)
        if spec.backend in SERIALIZABLE_BACKENDS:
            # As if one at a time, as the original's single connection was;
            # set per connection (psycopg2 sends it with BEGIN; PyMySQL once
            # per session): no statement of ours starts a user's transaction.
            kw.setdefault("isolation_level", DEFAULT_ISOLATION)
        self.engine: Engine = SA.create_engine(spec.url, **kw)
        self.dialectName = self.engine.dialect.name
        self.isSQLite = spec.isSQLite
        #: Whether the URL is a transaction-mode pooler (C{pooled=True}).
        self.pooled = spec.pooler is not None
        self.holdIterations = not self.isSQLite
        #: PostgreSQL at SERIALIZABLE: transactions of methods seen only
        #: reading run READ ONLY, which keeps them out of serialization
        #: conflicts (see sasync.transact.TransactionCall).
        #: Whether its transactions run SERIALIZABLE (a server database
        #: without another isolation_level).
        self.serializable = (
            spec.backend in SERIALIZABLE_BACKENDS
            and kw.get("isolation_level") == DEFAULT_ISOLATION
        )
        self.guessesReadOnly = self.dialectName == "postgresql" and self.serializable
        #: Whether a write transaction learns the WAL position its COMMIT
        #: reached (PostgreSQL primaries: C{broker.writePosition}). It costs
        #: one short query per write: off until a broker with replicas, or
        #: one whose writePosition was read, asks (L{trackWritePositions}).
        self.tracksWritePosition = False
        #: Whether server-side cursors stream results by default.
        self.streamsByDefault = self.dialectName == "postgresql"
        self.supportsStreaming = bool(self.engine.dialect.supports_server_side_cursors)
        #: Whether the driver holds a result it read whole (not streamed) as
        #: Python rows already (PyMySQL): listing them then costs little,
        #: and their transaction may commit before they are iterated.
        #: (psycopg2 keeps such a result in libpq's compact form, and makes
        #: the Python rows as they are fetched.)
        self.readsWholeAsRows = self.dialectName in ("mysql", "mariadb")
        self.connections = (
            1 if self.isSQLite else (spec.connections or DEFAULT_CONNECTIONS)
        )
        self.batchSize = spec.batchSize
        self.queue = TaskQueue(clock=reactor)
        self.users: set[int] = set()
        self.closing: Deferred[None] | None = None
        self._overflow: list[ConnectionWorker] = []
        # Overflow workers detached and not yet stopped (they still count).
        self._retiring: set[ConnectionWorker] = set()
        # The workers open iterations hold now, the oldest hold first (kept
        # by _heldChanged, so that submit needn't look at every worker).
        self._holders: dict[ConnectionWorker, None] = {}
        #: L{submit} without a timeout, for callers that make a call per
        #: transaction: the queue's own submit while no iteration holds a
        #: worker (nothing to check then: a call less per task), else
        #: L{submit} (see L{_heldChanged}).
        self.enqueue: Callable[[Task[Any]], Deferred[Any]] = self.queue.submit
        #: How many iterations let go of their connection (read the rest of
        #: their rows into memory) so far.
        self.iterationsLetGo = 0
        self._serial = 0
        #: Reactor thread: how many transactions ran again, by reason.
        self.retries: Counter[str] = Counter()
        # The thread that sends cancels to the server (started on the
        # first one, quit when the handle closes): sAsync's own, so that
        # no thread outlives shutdown.
        self._cancels = JobThread(f"{self._threadPrefix()}-cancel")
        _instrument(self.engine)
        for _ in range(self.connections):
            self.queue.attachWorker(self._newWorker(overflow=False))

    def trackWritePositions(self) -> None:
        """
        From now on, learn the WAL position of each write's COMMIT
        (PostgreSQL only).
        """
        self.tracksWritePosition = self.dialectName == "postgresql"

    def __repr__(self) -> str:
        return f"<EngineHandle {self.spec.url.render_as_string()} x{self.connections}>"

    @property
    def reactor(self) -> Any:
        """
        The reactor, resolved lazily.
        """
        if self._reactor is None:
            self._reactor = globalReactor()
        return self._reactor

    def _threadPrefix(self) -> str:
        database = self.spec.url.database or "memory"
        return f"sasync-{self.dialectName}-{os.path.basename(database)}"

    def _newWorker(self, *, overflow: bool) -> ConnectionWorker:
        self._serial += 1
        name = f"{self._threadPrefix()}-{self._serial}"
        # (A test's createWorker makes fakes that stand in for one.)
        worker = self.spec.createWorker(
            self.engine,
            holdIterations=self.holdIterations,
            batchSize=self.batchSize,
            name=name,
            overflow=overflow,
            killQuery=self._killQuery
            if self.dialectName in ("mysql", "mariadb")
            else None,
            sendCancel=None if self.isSQLite else self._cancels.do,
            onHeld=self._heldChanged,
            idleTimeout=self.spec.idleTimeout,
            clock=self._reactor,
            callFromThread=None
            if self._reactor is None
            else mailboxFor(self._reactor).post,
        )
        return cast("ConnectionWorker", worker)

    def _killQuery(self, threadID: int) -> None:
        # Cancel thread: a short DBAPI connection of its own, made past the
        # engine's pool (which may be full), never a worker's. Bounded
        # waits: a server that does not answer must not keep the thread.
        dialect = self.engine.dialect
        cargs, cparams = dialect.create_connect_args(self.engine.url)
        for name in ("connect_timeout", "read_timeout", "write_timeout"):
            cparams.setdefault(name, KILL_TIMEOUT)
        connection = dialect.connect(*cargs, **cparams)
        try:
            cursor = connection.cursor()
            cursor.execute(f"KILL QUERY {int(threadID)}")
            cursor.close()
        finally:
            connection.close()

    # Work ---------------------------------------------------------------------

    def submit(self, task: Task[Any], timeout: float | None = None) -> Deferred[Any]:
        """
        Queue C{task}; add an overflow worker if every worker is held by an
        iteration.
        """
        d = self.queue.submit(task, timeout=timeout)
        if self._holders:
            self._checkOverflow()
        return d

    def idleClosedConnections(self) -> int:
        """
        How many connections the attached workers have closed because they
        were idle for C{idleTimeout} (for tests and diagnostics).
        """
        return sum(w.idleClosed for w in self.queue.workers)

    def replacedConnections(self) -> int:
        """
        How many connections the attached workers have replaced because
        they were lost (for tests and diagnostics).
        """
        return sum(w.replaced for w in self.queue.workers)

    # Iterations and the connections they hold ---------------------------------
    #
    # An open iteration on a server database holds its worker (its
    # transaction, and so its connection) until its rows are read, and the
    # user's loop may wait for transactions of its own meanwhile. Two rules
    # make sure that such loops never deadlock, however many run or nest:
    #
    #   - a reserve: iterations hold at most connections +
    #     overflowConnections - 1 workers at once. One more makes the
    #     oldest let go (ThreadWorker.letGo: its worker reads its remaining
    #     rows, handing them over as it goes, and commits; the loop goes on
    #     from memory).
    #     So there is always a worker, or room for an overflow one, that no
    #     iteration holds: a transaction never waits for an iteration (nor,
    #     behind a transaction-mode pooler, for a server slot one holds).
    #   - overflow: while every worker is held and transactions wait, an
    #     extra worker is added (at most overflowConnections); if none may
    #     be (it should not happen, given the reserve), the oldest
    #     iteration lets go instead.
    #
    # The oldest first: it has kept its transaction open longest (and its
    # snapshot and locks, which hold back other work on the server), and a
    # rule that depends on nothing else can be stated in the docs. The
    # cost is memory: the rows that iteration had left (docs/concepts/
    # iteration.md says how much).

    @property
    def maxHeld(self) -> int:
        """
        How many workers open iterations may hold at once (see above).
        Behind a pooler (C{pooled=True}), also one less than its server
        connections (C{poolerConnections}, default C{connections}).
        """
        held = self.connections + self.spec.overflowConnections - 1
        pooler = self.spec.pooler
        if pooler is not None:
            held = min(held, (pooler.connections or self.connections) - 1)
        return held

    def _heldChanged(self, worker: ConnectionWorker, held: bool) -> None:
        if held:
            self._holders[worker] = None
            self.enqueue = self.submit
            self._keepReserve()
            self._checkOverflow()
        else:
            self._holders.pop(worker, None)
            if not self._holders:
                self.enqueue = self.queue.submit
            self._retireOverflow()

    def _keepReserve(self) -> None:
        holding = [w for w in self._holders if not w.lettingGo]
        for worker in holding[: max(0, len(holding) - self.maxHeld)]:
            self._letGo(worker, "the reserve")

    def _letGo(self, worker: ConnectionWorker, why: str) -> None:
        if worker.letGo():
            self.iterationsLetGo += 1
            log.info(
                "{n} open iterations hold connections ({why}): the oldest, on"
                " {worker}, reads its remaining rows into memory and commits",
                n=len(self._holders),
                why=why,
                worker=worker,
            )

    def _retireOverflow(self) -> None:
        # Once no regular worker is held, the extra ones go: now those that
        # no iteration holds, the others when theirs ends.
        if not self._overflow or not self.queue.isRunning():
            return
        workers = self.queue.workers
        if any(w.held for w in workers if not w.overflow):
            return
        for extra in [w for w in self._overflow if not w.held]:
            self._overflow.remove(extra)
            if extra in workers:
                self._retiring.add(extra)
                self.queue.detachWorker(extra).addBoth(self._retired, extra)

    def _retired(self, _: object, extra: ConnectionWorker) -> None:
        # Room for another overflow worker, if transactions wait for one.
        self._retiring.discard(extra)
        if self._holders:
            self._checkOverflow()

    def _checkOverflow(self) -> None:
        retiring = self._retiring
        workers = [w for w in self.queue.workers if w not in retiring]
        if not (
            workers
            and self.queue.pending()
            and self.queue.isRunning()
            and all(w.held for w in workers)
        ):
            return
        if len(self._overflow) + len(retiring) < self.spec.overflowConnections:
            extra = self._newWorker(overflow=True)
            self._overflow.append(extra)
            log.info(
                "All {n} connections are held by open iterations: adding"
                " overflow connection {extra}",
                n=len(workers),
                extra=extra,
            )
            self.queue.attachWorker(extra)
        elif not any(w.lettingGo for w in self._holders) and all(
            w.held for w in retiring
        ):
            # Nothing else will free a worker soon.
            self._letGo(next(iter(self._holders)), "transactions wait")

    # Closing ------------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """
        Let queued work finish, close every connection in its thread, dispose
        the engine. Idempotent.
        """
        if self.closing is None:
            self.closing = Deferred.fromCoroutine(self._close())
        return follow(self.closing)

    async def _close(self) -> None:
        _unregister(self)
        await self.queue.shutdown()
        self._cancels.quit()
        self.engine.dispose()

    def abandon(self) -> None:
        """
        The last broker's shutdown stopped waiting for this handle to close
        (its timeout ran out): log the workers still busy, which are left
        to finish by themselves (their threads are daemon threads, and a
        connection stuck on a server that does not answer is cut, see
        L{sasync.connection._cancel}), and end the cancel thread now.
        """
        busy = [w for w in self.queue.workers if w.task is not None]
        log.warn(
            "{handle}: shutdown stopped waiting for {n} busy workers ({workers});"
            " they are abandoned and end by themselves",
            handle=self,
            n=len(busy),
            workers=", ".join(repr(w) for w in busy),
        )
        self._cancels.quit()


def _executionContext(base: type[Any], closesCursors: bool = False) -> type[Any]:
    """
    The dialect's execution context, changed in three ways, decided when a
    statement's cursor is made and once its answer came (no engine events,
    which would slow every statement down):

      - the worker thread gives way to a reactor that is behind, before the
        statement and after it
        (L{ThreadWorker.giveWay<asynqueue.workers.ThreadWorker.giveWay>});
      - a task asked to stop (cancelled, timed out) starts no new statement;
      - the SELECTs of a transaction that streams get a server-side cursor.
        (The C{stream_results} option would apply to every statement,
        INSERTs too, and an event cannot change the options of the
        statement it sees.)

    With C{closesCursors}, a transaction's server-side cursors are closed
    when it ends: psycopg 3 warns when one is deleted open, even once the
    server dropped it with its transaction (one never read, one whose
    transaction failed).
    """

    class SAsyncExecutionContext(base):  # type: ignore[misc]
        def create_cursor(self) -> Any:
            # Worker thread: this transaction's thread state decides.
            worker = state.worker
            if worker is not None:
                # Between two statements, as between two tasks: a reactor
                # that is behind with its results gets the GIL first.
                worker.giveWay()
            task = current.task
            if task is not None and task.stopRequested:
                raise CancelledError(f"{task.info} was asked to stop")
            context: Any = self
            if state.connection is not context.root_connection:
                return super().create_cursor()
            compiled = context.compiled
            # What the statement is, worked out once per compiled statement
            # (SQLAlchemy caches those), or per SQL string for one that has
            # none (exec_driver_sql): the regexes cost each statement.
            if compiled is not None:
                kind = compiled.__dict__.get(_KIND)
                if kind is None:
                    kind = _statementKind(context)
                    setattr(compiled, _KIND, kind)
            else:
                kind = _driverKind(context)
            if kind is _WRITES:
                state.wrote = True
            elif kind is _SELECTS and state.stream:
                context.execution_options = context.execution_options.union(
                    {
                        "stream_results": True,
                        "max_row_buffer": worker.batchSize if worker else 1000,
                    }
                )
                cursor = super().create_cursor()
                if closesCursors and context._is_server_side:
                    keepCursor(cursor)
                return cursor
            return super().create_cursor()

        def post_exec(self) -> None:
            # The statement's answer has come, and with it the GIL back to
            # this thread, maybe ahead of a reactor that was waiting for it:
            # before the rows are processed, the reactor may go first.
            worker = state.worker
            if worker is not None:
                worker.giveWay()
            super().post_exec()

    return SAsyncExecutionContext


def _isSelect(context: Any) -> bool:
    compiled = context.compiled
    if compiled is not None and not isinstance(compiled.statement, SA.TextClause):
        return isinstance(compiled.statement, Selectable)
    statement = context.unicode_statement
    return bool(statement and _SELECT_RE.match(statement))


#: What a statement is, for the execution context: a SELECT (it may
#: stream), another statement that only reads (SHOW), or one that may
#: write. Kept on SQLAlchemy's compiled statement, as its attribute _KIND.
_SELECTS, _READS, _WRITES = "selects", "reads", "writes"
_KIND = "_sasyncStatementKind"


def _statementKind(context: Any) -> str:
    if _isSelect(context):
        return _SELECTS
    if _READS_RE.match(context.unicode_statement or ""):
        return _READS
    return _WRITES


#: The kinds of the SQL strings run without a compiled statement, shared
#: by every worker thread (a dict's get and set are atomic); emptied when
#: full, so that SQL made up per call cannot grow it without bound.
_driverKinds: dict[str, str] = {}
_DRIVER_KINDS_MAX = 512


def _driverKind(context: Any) -> str:
    statement = context.unicode_statement
    kind = _driverKinds.get(statement)
    if kind is not None:
        return kind
    kind = _statementKind(context)
    if isinstance(statement, str):
        if len(_driverKinds) >= _DRIVER_KINDS_MAX:
            _driverKinds.clear()
        _driverKinds[statement] = kind
    return kind


def _instrument(engine: Engine) -> None:
    # This engine's dialect only: other engines keep their own.
    dialect = engine.dialect
    dialect.execution_ctx_cls = _executionContext(
        dialect.execution_ctx_cls, closesCursors=dialect.driver == "psycopg"
    )


# The registry (reactor thread only) -----------------------------------------

_handles: dict[tuple[Any, ...], EngineHandle] = {}
_globalSpec: list[tuple[str | URL, dict[str, Any]]] = []


def setup(url: str | URL, **kw: Any) -> None:
    """
    Set the global engine: brokers made without a URL use C{url} and C{kw}
    (the same keywords as L{sasync.AccessBroker}). Brokers made later with
    the same URL and keywords share its engine and queue.

    @raise TypeError: C{processes} was given: worker processes belong to
        one broker, not to the engine that brokers share.
    """
    if "processes" in kw:
        raise TypeError(
            f"sasync.setup() takes no processes= (got processes={kw['processes']!r}):"
            " give it to the broker instead, MyBroker(url, processes=N); each such"
            " broker has worker processes of its own"
        )
    EngineSpec.fromArgs(url, kw)  # Check the options now, not at first use.
    _globalSpec[:] = [(url, dict(kw))]


def resolveSpec(url: str | URL | None, kw: Mapping[str, Any]) -> EngineSpec:
    """
    The spec for a broker made with C{url} (or the global one) and C{kw}.

    @raise NoEngineError: no URL, and L{setup} was never called.
    """
    if url is None:
        if not _globalSpec:
            raise NoEngineError(
                "no database URL: give the broker one (AccessBroker('sqlite:///x.db'))"
                " or set a global engine first with sasync.setup(url, **kw)"
            )
        globalURL, globalKw = _globalSpec[0]
        return EngineSpec.fromArgs(globalURL, {**globalKw, **kw})
    return EngineSpec.fromArgs(url, kw)


def acquire(spec: EngineSpec, user: object, *, reactor: Any = None) -> EngineHandle:
    """
    The handle for C{spec}, made if needed, with C{user} counted as one of
    its users.
    """
    key = spec.key
    handle = _handles.get(key)
    if handle is None or handle.closing is not None:
        handle = _handles[key] = EngineHandle(spec, reactor=reactor)
    elif handle.spec != spec:
        log.warn(
            "{url} is already open with other options; sharing its one"
            " connection (SQLite allows one writer per file)",
            url=spec.url.render_as_string(),
        )
    handle.users.add(id(user))
    return handle


def release(handle: WorkQueue, user: object) -> Deferred[None]:
    """
    C{user} is done with C{handle}; the last user closes it.
    """
    handle.users.discard(id(user))
    if handle.users:
        return succeed(None)
    return handle.close()


def _unregister(handle: EngineHandle) -> None:
    key = handle.spec.key
    if _handles.get(key) is handle:
        del _handles[key]


def openHandles() -> list[EngineHandle]:
    """
    The handles in use now (for tests and diagnostics).
    """
    return list(_handles.values())


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONNECTIONS",
    "DEFAULT_OVERFLOW",
    "DEFAULT_STARTUP_TIMEOUT",
    "EngineHandle",
    "EngineSpec",
    "acquire",
    "openHandles",
    "release",
    "resolveSpec",
    "setup",
]
