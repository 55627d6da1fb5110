"""
What the fault-injection tests share: a broker with a ledger of writes and
a counter, a backend killer, waiting helpers, and the figures each test
reports (printed at the end of the run; see C{docs/reliability.md}).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as SA
from sqlalchemy.pool import NullPool
from twisted.internet import task

from sasync import AccessBroker, transact


@dataclass
class Figures:
    """
    One fault-injection run's numbers.
    """

    name: str
    operations: int = 0
    faults: int = 0
    acknowledged: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    retried: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """
        One line for the summary table.
        """
        extra = f"  {'; '.join(self.notes)}" if self.notes else ""
        return (
            f"{self.name:<44} ops {self.operations:>5}  faults {self.faults:>4}"
            f"  acked {self.acknowledged:>5}  failed {self.failed:>4}"
            f"  retried {self.retried:>4}  lost {self.lost}"
            f"  duplicated {self.duplicated}  {self.seconds:5.1f} s{extra}"
        )


#: Filled by the tests, printed by conftest's terminal summary.
FIGURES: list[Figures] = []


def sleepSQL(url: str, seconds: float) -> str:
    """
    A query that runs for about C{seconds} (SQLite: a long recursive CTE).
    """
    if url.startswith("postgresql"):
        return f"SELECT pg_sleep({seconds})"
    if url.startswith("mysql"):
        return f"SELECT SLEEP({seconds})"
    return (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
        f" WHERE x < {int(seconds * 20_000_000)}) SELECT count(*) FROM c"
    )


class Ledger(AccessBroker):
    """
    A ledger of tokens (no unique constraint: a duplicate would show) and
    one counter row.
    """

    async def startup(self) -> None:
        await self.table(
            "ledger",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("token", SA.String(40), nullable=False),
            SA.Column("batch", SA.Integer),
            index_token=["token"],
        )
        await self.table(
            "counter",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("value", SA.Integer, nullable=False),
        )

    @transact
    def write(self, token: str) -> None:
        self.conn.execute(self.ledger.insert().values(token=token))

    @transact
    def writeBatch(self, batch: int, size: int) -> None:
        self.conn.execute(
            self.ledger.insert(),
            [{"token": f"b{batch}-{i}", "batch": batch} for i in range(size)],
        )

    @transact
    def tokens(self) -> list[str]:
        return list(self.conn.execute(SA.select(self.ledger.c.token)).scalars())

    @transact
    def sleepThenWrite(self, token: str, sql: str) -> None:
        self.conn.exec_driver_sql(sql)
        self.conn.execute(self.ledger.insert().values(token=token))

    @transact
    def writeThenSleep(self, token: str, sql: str) -> None:
        self.conn.execute(self.ledger.insert().values(token=token))
        self.conn.exec_driver_sql(sql)

    @transact
    def resetCounter(self) -> None:
        self.conn.execute(self.counter.delete())
        self.conn.execute(self.counter.insert().values(id=1, value=0))

    @transact
    def increment(self, isolation: str = "SERIALIZABLE", pause: float = 0.0) -> int:
        # The user's own SET TRANSACTION comes first: sAsync runs nothing
        # before it.
        self.conn.exec_driver_sql(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        t = self.counter
        value = self.conn.execute(SA.select(t.c.value).where(t.c.id == 1)).scalar_one()
        if pause:
            time.sleep(pause)
        self.conn.execute(t.update().where(t.c.id == 1).values(value=value + 1))
        return int(value) + 1

    @transact
    def counterValue(self) -> int:
        t = self.counter
        return int(
            self.conn.execute(SA.select(t.c.value).where(t.c.id == 1)).scalar_one()
        )

    @transact
    def backendPID(self) -> int:
        return int(self.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def retriedCount(broker: AccessBroker) -> int:
    """
    How many transactions ran again on C{broker}'s engine.
    """
    return sum(broker._handle.retries.values())


def reactorNow() -> float:
    """
    The reactor's clock, which timeouts and deadlines are set on. (It is
    the wall clock: on a fresh machine whose NTP slews it, it can differ
    from C{time.monotonic()} by milliseconds over a few seconds.)
    """
    from twisted.internet import reactor

    return float(reactor.seconds())


async def pause(seconds: float) -> None:
    """
    Let the reactor run for C{seconds}.
    """
    from twisted.internet import reactor

    await task.deferLater(reactor, seconds, lambda: None)


async def until(check: Callable[[], object], timeout: float = 20.0) -> None:
    """
    Wait (polling every 10 ms in the reactor) until C{check()} is true.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await pause(0.01)


async def settle(turns: int = 10) -> None:
    """
    Let the reactor run C{turns} iterations with nothing else to wait for:
    whatever the events so far scheduled "soon" (C{callLater(0, ...)},
    chained callbacks) has then run. No wall-clock wait.
    """
    from twisted.internet import reactor

    for _ in range(turns):
        await task.deferLater(reactor, 0, lambda: None)


def adminEngine(url: str) -> SA.Engine:
    """
    An AUTOCOMMIT engine on C{url} for looking at the server from outside.
    """
    return SA.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def activeSleeps(url: str) -> int:
    """
    How many sleep queries run in the database of C{url} (PostgreSQL: by
    wait event, as the query text may be a server-side cursor's FETCH).
    """
    engine = adminEngine(url)
    try:
        with engine.connect() as conn:
            if url.startswith("postgresql"):
                query = (
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                    " AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()"
                    " AND datname = current_database()"
                )
            else:
                query = (
                    "SELECT count(*) FROM information_schema.processlist"
                    " WHERE command = 'Query' AND info LIKE '%%SLEEP(%%'"
                    " AND id <> CONNECTION_ID() AND db = DATABASE()"
                )
            return int(conn.exec_driver_sql(query).scalar_one())
    finally:
        engine.dispose()


def killBackend(url: str, backendID: int) -> None:
    """
    End connection C{backendID} from another connection (PostgreSQL:
    C{pg_terminate_backend}; MySQL/MariaDB: C{KILL CONNECTION}), and wait
    until the server has let it go.
    """
    engine = adminEngine(url)
    try:
        with engine.connect() as other:
            if url.startswith("postgresql"):
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(backendID)})")
                gone = f"SELECT count(*) FROM pg_stat_activity WHERE pid = {backendID}"
            else:
                other.exec_driver_sql(f"KILL CONNECTION {int(backendID)}")
                gone = (
                    "SELECT count(*) FROM information_schema.processlist"
                    f" WHERE id = {int(backendID)}"
                )
            deadline = time.monotonic() + 20
            while other.exec_driver_sql(gone).scalar_one():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"connection {backendID} was not ended")
                time.sleep(0.01)
    finally:
        engine.dispose()


class BackendKiller:
    """
    A thread that terminates random connections to one database (never its
    own) every C{interval} seconds (randomized), until stopped: PostgreSQL
    backends with C{pg_terminate_backend}, MySQL/MariaDB connections with
    C{KILL CONNECTION}.

    @ivar kills: How many backends it terminated.
    @ivar killed: Their IDs.
    """

    def __init__(self, url: str, interval: float, seed: int = 8) -> None:
        self.url = url
        self.interval = interval
        self.kills = 0
        self.killed: list[int] = []
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-killer")
        self.error: BaseException | None = None

    def start(self) -> None:
        """
        Start killing.
        """
        self._thread.start()

    def stop(self) -> None:
        """
        Stop killing, and wait for the thread to end.
        """
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        engine = adminEngine(self.url)
        database = SA.make_url(self.url).database
        if self.url.startswith("postgresql"):
            find = (
                "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        else:
            find = (
                "SELECT id FROM information_schema.processlist WHERE db = %s"
                " AND id <> CONNECTION_ID()"
            )
        try:
            with engine.connect() as conn:
                while not self._stop.wait(self.interval * 2 * self._random.random()):
                    ids = list(conn.exec_driver_sql(find, (database,)).scalars())
                    if ids:
                        self._kill(conn, self._random.choice(ids))
        except BaseException as e:
            self.error = e
        finally:
            engine.dispose()

    def _kill(self, conn: Any, target: int) -> None:
        if self.url.startswith("postgresql"):
            query = f"SELECT pg_terminate_backend({int(target)})"
            if conn.exec_driver_sql(query).scalar_one():
                self.killed.append(target)
                self.kills += 1
            return
        try:
            conn.exec_driver_sql(f"KILL CONNECTION {int(target)}")
        except SA.exc.OperationalError:
            return  # (Gone already: "Unknown thread id".)
        self.killed.append(target)
        self.kills += 1

    def waitUntilGone(self, timeout: float = 30.0) -> None:
        """
        Once stopped: wait until the server has let go of every connection
        this killer ended. Their clients' sockets then hold the server's
        goodbye (or end of file), so a worker sees its connection is
        closed before it uses it again, and replaces it.
        """
        if self.url.startswith("postgresql"):
            query = "SELECT count(*) FROM pg_stat_activity WHERE pid IN ({ids})"
        else:
            query = (
                "SELECT count(*) FROM information_schema.processlist"
                " WHERE id IN ({ids})"
            )
        if not self.killed:
            return
        ids = ", ".join(str(int(i)) for i in set(self.killed))
        engine = adminEngine(self.url)
        try:
            with engine.connect() as conn:
                deadline = time.monotonic() + timeout
                while conn.exec_driver_sql(query.format(ids=ids)).scalar_one():
                    if time.monotonic() > deadline:
                        raise TimeoutError("killed connections still listed")
                    time.sleep(0.01)
        finally:
            engine.dispose()


def sasyncThreads() -> set[Any]:
    """
    The live threads that are sAsync workers.
    """
    return {t for t in threading.enumerate() if t.name.startswith("sasync-")}
