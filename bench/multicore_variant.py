"""
The multicore variant of workload 1: the sAsync broker with C{processes=2},
so that the ORM's Python work runs in two worker processes while the
parent's reactor only dispatches calls and receives results; and, for
calibration, the plan split between two plain sync processes (what two
cores give the ORM on this machine right now, with no Twisted at all).

Imported only in a child process, and only when L{bench.availability}
found C{sasync} importable.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from bench.config import BenchConfig
from bench.harness import runTwisted, timedInReactor, timedSync
from bench.sasync_variants import BenchBroker
from bench.workload import Op, opPlan

#: Worker processes: one per core of the 2-core machine the suite runs on.
PROCESSES = 2
#: Connections (worker threads) per process for the ORM: fewer than the
#: peers' 8 in all, since a process's threads share its one core (on a
#: quiet machine, 2 did better than 4, and as well as 1).
CONNECTIONS = 2
#: Connections per process for the SQL workload, whose calls mostly wait
#: for the server: the peers' 8 in all. (With 2 each, 4 calls at once, it
#: reached 0.8x the one-process broker's 8; with 4 each, 1.2x to 1.5x.)
SQL_CONNECTIONS = 4


async def _allAtOnce(broker: BenchBroker, ops: list[Op], method: str) -> None:
    from twisted.internet.defer import gatherResults

    call = getattr(broker, method)
    await gatherResults([call(op) for op in ops])


def ormSasyncProcesses(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 1 through C{@transact} with C{self.session}, all ops at once,
    run by C{PROCESSES} worker processes of C{CONNECTIONS} connections each.
    """
    return _processesVariant(config, "ormOp")


def sqlSasyncProcesses(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 2 through C{@transact} with C{self.conn} (SQLAlchemy Core
    C{text()}), as L{ormSasyncProcesses} but with C{SQL_CONNECTIONS}
    connections per process.
    """
    return _processesVariant(config, "sqlOp", SQL_CONNECTIONS)


def ormSasyncProcessesReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    L{ormSasyncProcesses} at READ COMMITTED, as the peers run: what two
    processes give when no serializable conflicts make the writers wait
    for each other.
    """
    return _processesVariant(config, "ormOp", isolation_level="READ COMMITTED")


def sqlSasyncProcessesReadCommitted(config: BenchConfig) -> dict[str, Any]:
    """
    L{sqlSasyncProcesses} at READ COMMITTED, as adbapi runs.
    """
    return _processesVariant(
        config, "sqlOp", SQL_CONNECTIONS, isolation_level="READ COMMITTED"
    )


def _processesVariant(
    config: BenchConfig,
    method: str,
    connections: int = CONNECTIONS,
    isolation_level: str | None = None,
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if isolation_level is not None:
        options["isolation_level"] = isolation_level

    async def main(reactor: Any) -> dict[str, Any]:
        broker = BenchBroker(
            config.url("psycopg2"),
            processes=PROCESSES,
            connections=connections,
            **options,
        )
        await broker.waitUntilRunning()
        plan = opPlan(config.ops, config.seed)
        await _allAtOnce(broker, [None] * (2 * config.concurrency), method)
        try:
            return await timedInReactor(
                reactor, "ops", len(plan), lambda: _allAtOnce(broker, plan, method)
            )
        finally:
            await broker.shutdown()

    return runTwisted(main)


def _syncHalf(url: str, ops: list[Op], ready: Any, go: Any) -> None:
    # A child process: sequential sync ORM ops on one connection.
    import sqlalchemy as SA
    from sqlalchemy.orm import Session

    from bench.orm_ops import ormOp

    engine = SA.create_engine(url, pool_size=1)
    for _ in range(5):
        with Session(engine) as session, session.begin():
            ormOp(session, None)
    ready.release()
    go.wait()
    for op in ops:
        with Session(engine) as session, session.begin():
            ormOp(session, op)
    engine.dispose()


def ormSyncProcesses(config: BenchConfig) -> dict[str, Any]:
    """
    Calibration: sync SQLAlchemy in C{PROCESSES} processes, each running
    every C{PROCESSES}-th op of the plan in sequence (one connection each).
    """
    context = multiprocessing.get_context("spawn")
    plan = opPlan(config.ops, config.seed)
    ready, go = context.Semaphore(0), context.Event()
    children = [
        context.Process(
            target=_syncHalf,
            args=(config.url("psycopg2"), plan[i::PROCESSES], ready, go),
        )
        for i in range(PROCESSES)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.acquire()

    def work() -> None:
        go.set()
        for child in children:
            child.join()
            if child.exitcode != 0:
                raise RuntimeError(f"a sync process exited with {child.exitcode}")

    return timedSync("ops", len(plan), work)
