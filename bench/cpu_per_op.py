"""
Where the CPU of workload 1 goes: CPU milliseconds per op of each process
(and of PostgreSQL's backends together), for sequential sync SQLAlchemy,
the single-process broker, and the broker with C{processes=N}, each on
freshly reset tables::

    .venv-bench/bin/python -m bench.cpu_per_op [--ops 3000] [--processes 2]
        [--connections 2] [--database sasync_cpu]

(C{.venv-bench} is the benchmarks' venv, made by C{./scripts/bench}.)

CPU time, unlike throughput, barely depends on what else the machine runs,
so it shows what each design costs per op even on a busy machine; all the
designs share the same two cores with the server, so less CPU per op is
what more throughput takes. (The benchmark suite itself is C{./scripts/bench}.)
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psutil

from bench.config import BenchConfig
from bench.database import createDatabase, dropDatabase, resetOps
from bench.workload import opPlan


def _cpuSeconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _serverCpu() -> float:
    # Every postgres process: the backends serving the run, and the
    # server's own background work the run causes.
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("postgres", "postmaster"):
            with contextlib.suppress(psutil.Error):
                total += _cpuSeconds(process)
    return total


class Meter:
    """
    CPU seconds of this process, its children and the server, between
    L{start} and L{stop}.
    """

    def start(self) -> None:
        me = psutil.Process()
        self.processes = [me, *me.children(recursive=True)]
        self.before = [_cpuSeconds(p) for p in self.processes]
        self.serverBefore = _serverCpu()
        self.t0 = time.perf_counter()

    def stop(self, ops: int) -> dict[str, Any]:
        """
        @return: ops/s, and CPU ms per op: this process, each child, the
            server.
        """
        elapsed = time.perf_counter() - self.t0
        perOp = [
            (_cpuSeconds(p) - b) / ops * 1e3
            for p, b in zip(self.processes, self.before, strict=True)
        ]
        return {
            "rate": ops / elapsed,
            "mainMs": perOp[0],
            "childMs": perOp[1:],
            "serverMs": (_serverCpu() - self.serverBefore) / ops * 1e3,
        }


def measureSync(config: BenchConfig) -> dict[str, Any]:
    """
    Sequential sync SQLAlchemy on one connection, in this process.
    """
    import sqlalchemy as SA
    from sqlalchemy.orm import Session

    from bench.orm_ops import ormOp

    engine = SA.create_engine(config.url("psycopg2"), pool_size=1)
    for _ in range(5):
        with Session(engine) as session, session.begin():
            ormOp(session, None)
    meter = Meter()
    plan = opPlan(config.ops, config.seed)
    meter.start()
    for op in plan:
        with Session(engine) as session, session.begin():
            ormOp(session, op)
    result = meter.stop(len(plan))
    engine.dispose()
    return result


def measureBroker(config: BenchConfig, **options: Any) -> dict[str, Any]:
    """
    The broker with C{options}, all ops at once, in a reactor.
    """
    from twisted.internet import defer, task

    from bench.sasync_variants import BenchBroker

    out: dict[str, Any] = {}

    async def main(reactor: Any) -> None:
        broker = BenchBroker(config.url("psycopg2"), **options)
        await broker.waitUntilRunning()
        await defer.gatherResults([broker.ormOp(None) for _ in range(16)])
        plan = opPlan(config.ops, config.seed)
        meter = Meter()
        meter.start()
        await defer.gatherResults([broker.ormOp(op) for op in plan])
        out.update(meter.stop(len(plan)))
        await broker.shutdown()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code:
            raise
    return out


def _runInChild(f: Callable[..., dict[str, Any]], *args: Any, **kw: Any) -> Any:
    # A fresh process each: a reactor runs once per process.
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(f, args, kw)


def describe(name: str, result: dict[str, Any]) -> str:
    """
    One line of the report.
    """
    children = result["childMs"]
    total = result["mainMs"] + sum(children) + result["serverMs"]
    parts = [f"{name:<26} {result['rate']:7,.0f} ops/s   main {result['mainMs']:.3f}"]
    if children:
        parts.append("workers " + " + ".join(f"{c:.3f}" for c in children))
    parts.append(f"server {result['serverMs']:.3f}   total {total:.3f} ms CPU/op")
    return "   ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """
    Measure each design on fresh tables and print CPU per op.
    """
    p = argparse.ArgumentParser(prog="bench.cpu_per_op", description=__doc__)
    p.add_argument("--ops", type=int, default=3000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--database", default="sasync_cpu")
    args = p.parse_args(argv)
    config = replace(BenchConfig(), ops=args.ops, database=args.database)
    createDatabase(config)
    try:
        runs: list[tuple[str, Callable[..., dict[str, Any]], dict[str, Any]]] = [
            ("sync (1 connection)", measureSync, {}),
            ("broker (8 connections)", measureBroker, {"connections": 8}),
            (
                f"broker processes={args.processes}x{args.connections}",
                measureBroker,
                {"processes": args.processes, "connections": args.connections},
            ),
        ]
        for name, f, options in runs:
            resetOps(config)
            print(describe(name, _runInChild(f, config, **options)), flush=True)
    finally:
        dropDatabase(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
