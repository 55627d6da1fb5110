"""
What one transaction costs the client process, machinery only: sequential
calls, each a whole transaction, through sAsync and through
C{twisted.enterprise.adbapi}, on the benchmarks' PostgreSQL. Not one of
C{./scripts/bench}'s workloads; the numbers go into notes. Run from the
repository root::

    .venv-bench/bin/python -m bench.measure_machinery [--calls 300]
        [--only select1-adbapi,select1-sasync] [--callgrind] [--strace] [--perf]
        [--bytecodes [--top 40]]

Each variant runs in a child process twice, with C{calls} and with three
times as many calls after the same warm-up, and the difference divided by
C{2 * calls} is the cost of one call, whatever start-up and shutdown cost:

  - C{--callgrind}: instructions executed (every thread; valgrind's
    callgrind), which load does not move;
  - C{--strace}: system calls (C{strace -c -f}), by kind;
  - C{--perf}: context switches (C{perf stat}; each is a thread that
    blocked, so about one per thread wake-up) and task-clock microseconds;
  - C{--bytecodes}: Python bytecodes executed per call, by function (a
    tracer counts them in every thread: deterministic, and much faster
    than callgrind; the calls run about 20 times slower meanwhile);
  - always: CPU microseconds (user + system), and C{callFromThread} calls
    (thread-to-reactor hand-offs), per call.

Variants: C{select1-adbapi} (C{runQuery("SELECT 1")}), C{select1-sasync}
(C{@transact} with C{self.conn} and C{text("SELECT 1")}, as
C{./scripts/bench}'s C{select1-sasync}), C{dbapi1-adbapi} and
C{dbapi1-sasync} (C{SELECT 1} on the raw DB-API cursor, in
C{runInteraction} and in C{@transact}), and the C{-readcommitted} forms of
the sAsync ones (C{isolation_level="READ COMMITTED"}, as adbapi runs).
The C{sqlop-} variants run the SQL workload's op (L{bench.workload.sqlOp},
the plan's mix of reads and writes, one transaction each):
C{sqlop-adbapi} on adbapi's cursor, C{sqlop-threadpool} through SQLAlchemy
Core C{text()} on plain Twisted threads (C{deferToThreadPool}), and through
the broker at READ COMMITTED in the forms of L{bench.core_ops}: C{text()}
(C{sqlop-sasync-readcommitted}), C{text().columns()} (C{-typed-}) and
C{exec_driver_sql} (C{-driversql-}), and on the raw DB-API cursor
(C{-dbapi-}).
The C{-processes} forms (C{select1-sasync-processes},
C{dbapi1-sasync-processes} and their C{-readcommitted} forms) run the broker
with C{processes=2} (half the connections each): the figures above are the
parent's (which only sends calls and reads results), and C{--callgrind},
C{--strace} and C{--bytecodes} also give the worker processes' together
(C{child...}): callgrind with C{--trace-children=yes}, a file per process;
strace's lines by process; and a bytecode tracer that
C{bench/_childtrace/sitecustomize.py} installs in the worker processes, run
with C{calls} and C{3 * calls} calls, the difference taken.
A C{burst-} prefix makes all the calls at once (every connection busy) in
place of one after another. The C{orm-} variants run the ORM workload's op
(L{bench.orm_ops.ormOp}, the plan's mix of reads and writes; the database
needs the benchmark's tables): C{orm-sync} in plain sync SQLAlchemy, one
Session after another on one connection, C{burst-orm-sync-2processes} the
same in two processes at once (as C{./scripts/bench}'s
C{orm-sync-2processes}: its processes' CPU is C{childCpuUsPerCall}), and the
others through a broker.
Every variant also reports the CPU per call of its worker processes
(C{childCpuUsPerCall}) and of the PostgreSQL backends serving its database
(C{serverCpuUsPerCall}), from C{/proc}, so that the CPU a call costs the
machine's cores in all can be compared with plain sync's. C{dispatch-threadqueue} and
C{dispatch-deferToThread} need no database: a call of a function that does
nothing, through asynqueue's C{ThreadQueue(1).call} and through Twisted's
C{deferToThread}, to see asynqueue's own cost per call.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from bench.config import BenchConfig
from bench.harness import adbapiPool

VARIANTS = (
    "select1-adbapi",
    "select1-sasync",
    "select1-sasync-readcommitted",
    "dbapi1-adbapi",
    "dbapi1-sasync",
    "dbapi1-sasync-readcommitted",
    "sqlop-adbapi",
    "sqlop-sasync-readcommitted",
    "sqlop-typed-sasync-readcommitted",
    "sqlop-driversql-sasync-readcommitted",
    "sqlop-dbapi-sasync-readcommitted",
    "sqlop-threadpool",
    "select1-sasync-processes",
    "select1-sasync-processes-readcommitted",
    "dbapi1-sasync-processes",
    "dbapi1-sasync-processes-readcommitted",
    "burst-dbapi1-adbapi",
    "burst-dbapi1-sasync-readcommitted",
    "burst-dbapi1-sasync-processes-readcommitted",
    "orm-sync",
    "burst-orm-sync-2processes",
    "orm-sasync-processes-readcommitted",
    "burst-orm-sasync-readcommitted",
    "burst-orm-sasync-processes-readcommitted",
    "dispatch-threadqueue",
    "dispatch-deferToThread",
)
WARM = 50
#: Worker processes of the C{-processes} variants.
PROCESSES = 2
#: Put on the worker processes' C{PYTHONPATH} to count their bytecodes.
_CHILD_TRACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_childtrace")


def _isProcesses(variant: str) -> bool:
    return "-processes" in variant


def _cpuSeconds() -> float:
    # Every thread of the process, user and system.
    return time.process_time()


def _countHandOffs(reactor: Any) -> list[int]:
    # Counts the reactor's callFromThread calls (from any thread): each
    # calls wakeUp (workers may hold callFromThread itself, bound already).
    counter = [0]
    original = reactor.wakeUp

    def counted() -> None:
        counter[0] += 1
        original()

    reactor.wakeUp = counted
    return counter


def _adbapi(config: BenchConfig, variant: str, calls: int) -> Any:

    def interaction(cursor: Any) -> Any:
        cursor.execute("SELECT 1")
        return cursor.fetchall()

    async def main(reactor: Any) -> dict[str, Any]:
        pool = adbapiPool(config, reactor)
        if "select1" in variant:

            def one() -> Any:
                return pool.runQuery("SELECT 1")
        elif "sqlop" in variant:
            from bench.workload import sqlOp

            nextOp = _ormPlan(calls)

            def one() -> Any:
                return pool.runInteraction(sqlOp, nextOp())
        else:

            def one() -> Any:
                return pool.runInteraction(interaction)

        try:
            return await _timed(reactor, one, calls, variant.startswith("burst"))
        finally:
            pool.close()

    return main


def _procCpu(pids: list[int]) -> float:
    # CPU seconds (user + system, every thread) of the processes pids.
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # (utime and stime: the stat line's 14th and 15th fields.)
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


#: Set by the variant: the worker processes' IDs now.
_childPids: Callable[[], list[int]] = list
#: Set by L{child}: the database's backends' process IDs now.
_serverPids: Callable[[], list[int]] = list


def _backends(config: BenchConfig) -> Callable[[], list[int]]:
    # The server processes of config's database (other than the asking one).
    def pids() -> list[int]:
        import psycopg2

        conn = psycopg2.connect(config.psycopg2Dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (config.database,),
                )
                return [row[0] for row in cur.fetchall()]
        finally:
            conn.close()

    return pids


def _ormPlan(calls: int) -> Callable[[], Any]:
    # The ORM workload's ops, one per call, round and round.
    from bench.workload import opPlan

    plan = itertools.cycle(opPlan(max(calls, 1000), 20220211))
    return lambda: next(plan)


def _ormSync(config: BenchConfig, variant: str, calls: int) -> Any:
    # Plain sync SQLAlchemy, one Session after another on one connection,
    # in the reactor thread (blocking it: nothing else runs).
    import sqlalchemy as SA
    from sqlalchemy.orm import Session

    from bench.orm_ops import ormOp

    engine = SA.create_engine(
        config.url("psycopg2"), pool_size=1, isolation_level="READ COMMITTED"
    )
    nextOp = _ormPlan(calls)

    def one() -> Any:
        from twisted.internet.defer import succeed

        with Session(engine) as session, session.begin():
            ormOp(session, nextOp())
        return succeed(None)

    async def main(reactor: Any) -> dict[str, Any]:
        try:
            return await _timed(reactor, one, calls)
        finally:
            engine.dispose()

    return main


def _sqlThreadPool(config: BenchConfig, variant: str, calls: int) -> Any:
    # The SQL workload's op through SQLAlchemy Core on plain Twisted threads
    # (the same code as sAsync's sqlOp; ./scripts/bench's
    # sql-twisted-threadpool), one call after another.
    import sqlalchemy as SA
    from twisted.internet.threads import deferToThreadPool

    from bench.core_ops import coreOp

    engine = SA.create_engine(
        config.url("psycopg2"),
        pool_size=config.concurrency,
        isolation_level="READ COMMITTED",
    )
    nextOp = _ormPlan(calls)

    def work(op: Any) -> None:
        with engine.begin() as conn:
            coreOp(conn, op)

    async def main(reactor: Any) -> dict[str, Any]:
        pool = reactor.getThreadPool()

        def one() -> Any:
            return deferToThreadPool(reactor, pool, work, nextOp())

        try:
            return await _timed(reactor, one, calls)
        finally:
            engine.dispose()

    return main


def _syncHalf(url: str, calls: int, ready: Any, go: Any, cpu: Any, done: Any) -> None:
    # A process of burst-orm-sync-2processes: after the warm-up, calls ORM
    # ops one after another; puts the CPU seconds they took.
    import sqlalchemy as SA
    from sqlalchemy.orm import Session

    from bench.orm_ops import ormOp

    engine = SA.create_engine(url, pool_size=1, isolation_level="READ COMMITTED")
    nextOp = _ormPlan(calls)
    for _ in range(WARM):
        with Session(engine) as session, session.begin():
            ormOp(session, nextOp())
    ready.release()
    go.wait()
    cpu0 = time.process_time()
    for _ in range(calls):
        with Session(engine) as session, session.begin():
            ormOp(session, nextOp())
    cpu.put(time.process_time() - cpu0)
    # (Its backend stays until the parent has read its CPU.)
    done.wait()
    engine.dispose()


def _ormSyncProcesses(config: BenchConfig, variant: str, calls: int) -> Any:
    # Plain sync SQLAlchemy in PROCESSES processes at once, calls in all.
    import multiprocessing

    async def main(reactor: Any) -> dict[str, Any]:
        context = multiprocessing.get_context("spawn")
        ready, go, cpu = context.Semaphore(0), context.Event(), context.Queue()
        done = context.Event()
        share = calls // PROCESSES
        children = [
            context.Process(
                target=_syncHalf,
                args=(config.url("psycopg2"), share, ready, go, cpu, done),
            )
            for _ in range(PROCESSES)
        ]
        for process in children:
            process.start()
        for _ in children:
            ready.acquire()
        servers = _serverPids()
        serverCpu0 = _procCpu(servers)
        t0 = time.perf_counter()
        go.set()
        childCpu = sum(cpu.get() for _ in children)
        wall = time.perf_counter() - t0
        serverCpu = _procCpu(servers) - serverCpu0
        done.set()
        for process in children:
            process.join()
        done = share * PROCESSES
        return {
            "calls": done,
            "cpuUsPerCall": 0.0,
            "wallUsPerCall": wall / done * 1e6,
            "childCpuUsPerCall": childCpu / done * 1e6,
            "serverCpuUsPerCall": serverCpu / done * 1e6,
            "handOffsPerCall": 0.0,
        }

    return main


def _sasync(config: BenchConfig, variant: str, calls: int) -> Any:
    from bench.machinery_broker import MachineryBroker

    kw: dict[str, Any] = {"connections": config.concurrency}
    if _isProcesses(variant):
        # As many connections in all as in one process.
        kw["processes"] = PROCESSES
        kw["connections"] = max(1, config.concurrency // PROCESSES)
    if variant.endswith("-readcommitted"):
        kw["isolation_level"] = "READ COMMITTED"

    async def main(reactor: Any) -> dict[str, Any]:
        global _childPids
        broker = MachineryBroker(config.url("psycopg2"), **kw)
        await broker.waitUntilRunning()
        if "orm" in variant or "sqlop" in variant:
            nextOp = _ormPlan(calls)
            method = (
                broker.ormOp
                if "orm" in variant
                else broker.sqlTypedOp
                if "-typed" in variant
                else broker.sqlDriverOp
                if "-driversql" in variant
                else broker.dbapiOp
                if "-dbapi" in variant
                else broker.sqlOp
            )

            def one() -> Any:
                return method(nextOp())
        else:
            one = broker.selectOne if "select1" in variant else broker.dbapiOne
        pool = broker._pool
        if pool is not None:
            _childPids = pool.pids
        try:
            return await _timed(reactor, one, calls, variant.startswith("burst"))
        finally:
            await broker.shutdown()

    return main


def _noop() -> None:
    pass


def _dispatch(config: BenchConfig, variant: str, calls: int) -> Any:

    async def main(reactor: Any) -> dict[str, Any]:
        if variant == "dispatch-threadqueue":
            from asynqueue import ThreadQueue

            queue = ThreadQueue(1)

            def one() -> Any:
                return queue.call(_noop)

            try:
                return await _timed(reactor, one, calls)
            finally:
                await queue.shutdown()
        from twisted.internet.threads import deferToThread

        def toThread() -> Any:
            return deferToThread(_noop)

        return await _timed(reactor, toThread, calls)

    return main


class _BytecodeCounter:
    """
    Counts the bytecodes each Python function executes (itself, not its
    callees), in every thread, while L{on}.
    """

    def __init__(self) -> None:
        self.on = False
        self.counts: collections.Counter[tuple[str, int, str]] = collections.Counter()

    def trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any]:
        if self.on:
            frame.f_trace_opcodes = True
            if event == "opcode":
                code = frame.f_code
                self.counts[code.co_filename, code.co_firstlineno, code.co_name] += 1
        return self.trace

    def install(self) -> None:
        threading.settrace(self.trace)
        sys.settrace(self.trace)


#: Set by L{child} when counting bytecodes.
_counter: _BytecodeCounter | None = None


async def _timed(
    reactor: Any, one: Any, calls: int, burst: bool = False
) -> dict[str, Any]:
    from twisted.internet.defer import gatherResults

    for _ in range(WARM):
        await one()
    if burst:
        # Every connection open before the clock (and its backend counted).
        await gatherResults([one() for _ in range(WARM)])
    handOffs = _countHandOffs(reactor)
    if _counter is not None:
        _counter.on = True
    children, servers = _childPids(), _serverPids()
    childCpu0, serverCpu0 = _procCpu(children), _procCpu(servers)
    cpu0, t0 = _cpuSeconds(), time.perf_counter()
    if burst:
        # All at once: every connection busy, the queue never empty.
        await gatherResults([one() for _ in range(calls)])
    else:
        for _ in range(calls):
            await one()
    cpu, wall = _cpuSeconds() - cpu0, time.perf_counter() - t0
    childCpu = _procCpu(children) - childCpu0
    # (A backend started meanwhile counts from its start.)
    serverCpu = _procCpu(list(set(_serverPids()) | set(servers))) - serverCpu0
    if _counter is not None:
        _counter.on = False
    return {
        "calls": calls,
        "cpuUsPerCall": cpu / calls * 1e6,
        "wallUsPerCall": wall / calls * 1e6,
        "childCpuUsPerCall": childCpu / calls * 1e6,
        "serverCpuUsPerCall": serverCpu / calls * 1e6,
        "handOffsPerCall": handOffs[0] / calls,
    }


def child(config: BenchConfig, variant: str, calls: int, top: int = 0) -> None:
    """
    Run C{calls} calls of C{variant} after the warm-up; print the figures
    as JSON (with C{top}, count bytecodes and print the C{top} functions
    that execute most of them first).
    """
    global _counter, _serverPids
    from bench.harness import runTwisted

    if top:
        _counter = _BytecodeCounter()
        _counter.install()
    if not variant.startswith("dispatch"):
        _serverPids = _backends(config)
    if "orm" in variant or "sqlop" in variant:
        from bench.database import resetOps

        # (The reads' cost grows with the rows the writes leave.)
        resetOps(config)
    make = (
        _dispatch
        if variant.startswith("dispatch")
        else _adbapi
        if variant.endswith("adbapi")
        else _ormSync
        if variant == "orm-sync"
        else _ormSyncProcesses
        if variant == "burst-orm-sync-2processes"
        else _sqlThreadPool
        if variant == "sqlop-threadpool"
        else _sasync
    )
    result = runTwisted(make(config, variant, calls))
    result["pid"] = os.getpid()
    if _counter is not None:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
        counts = _counter.counts
        result["bytecodesPerCall"] = sum(counts.values()) / calls
        for key, n in counts.most_common(top):
            print(f"{n / calls:8.1f}  {_shortName(key)}")
    print(json.dumps(result))


def _run(
    prefix: list[str],
    config: BenchConfig,
    variant: str,
    calls: int,
    env: dict[str, str] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    # A prefix starting with an option is the child's own (--bytecodes):
    # its output is printed as it is.
    options = prefix if prefix[:1] == ["--bytecodes"] else []
    command = [
        *([] if options else prefix),
        sys.executable,
        "-m",
        "bench.measure_machinery",
        *options,
        "--database",
        config.database,
        "--concurrency",
        str(config.concurrency),
        "child",
        variant,
        str(calls),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    if options and not quiet:
        print(out.stdout, end="", flush=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["stderr"] = out.stderr
    return result


def _instructions(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    # (A process killed before it exited writes none: under valgrind on a
    # loaded machine, a worker process can outlast the pool's QUIT_GRACE.)
    raise RuntimeError(f"no totals in {path} (the process was killed?)")


def _syscalls(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]):
            counts[fields[-1]] = int(fields[3])
    return counts


_PERF_EVENTS = "task-clock,context-switches,cpu-migrations"


def _perfCounts(text: str) -> dict[str, float]:
    # perf stat -x, lines: value,unit,event,... (task-clock in msec).
    counts: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in _PERF_EVENTS.split(","):
            value = float(fields[0])
            counts[fields[2]] = value * 1000 if fields[2] == "task-clock" else value
    return counts


def _childEnv(bytecodes: str | None = None) -> dict[str, str]:
    # The environment of a -processes variant: its worker processes count
    # their bytecodes into the directory C{bytecodes}, if given.
    env = dict(os.environ)
    if bytecodes is not None:
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _CHILD_TRACE + (os.pathsep + path if path else "")
        env["BENCH_CHILD_BYTECODES"] = bytecodes
    return env


def _perProcess(out: str, parent: int) -> tuple[int, int]:
    # Callgrind's files out.<pid>: the instructions of the parent process
    # and those of all the others (the worker processes) together.
    mine = others = 0
    directory, name = os.path.split(out)
    for entry in os.listdir(directory):
        if entry.startswith(name + "."):
            n = _instructions(os.path.join(directory, entry))
            if entry == f"{name}.{parent}":
                mine += n
            else:
                others += n
    return mine, others


_STRACE_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")


def _straceByProcess(text: str, parent: int) -> dict[str, dict[str, int]]:
    """
    System calls by kind, of the process C{parent} (C{"parent"}) and of all
    its child processes together (C{"children"}), from C{strace -f}'s output
    (a line per call, each starting with its thread's ID). A thread belongs
    to the process whose thread cloned it with C{CLONE_THREAD}; any other
    clone starts a process.
    """
    process: dict[int, int] = {parent: parent}
    cloning: dict[int, str] = {}
    counts: dict[str, dict[str, int]] = {"parent": {}, "children": {}}
    for line in text.splitlines():
        match = _STRACE_LINE.match(line)
        if match is None:
            continue
        tid = int(match[1])
        owner = process.setdefault(tid, tid)
        name = match[3] or match[2]
        rest = match[4]
        if match[3]:
            side = "parent" if owner == parent else "children"
            counts[side][name] = counts[side].get(name, 0) + 1
        if name in ("clone", "clone3", "fork", "vfork"):
            call = cloning.pop(tid, "") + rest
            if "<unfinished ...>" in rest:
                cloning[tid] = call
                continue
            result = re.search(r"= (\d+)", call)
            if result is not None:
                new = int(result[1])
                process[new] = owner if "CLONE_THREAD" in call else new
    return counts


def _perCall(
    small: dict[str, int], big: dict[str, int], calls: int
) -> tuple[float, dict[str, float]]:
    # System calls per call, in all and by kind, from two runs' counts.
    perKind = {
        k: (big.get(k, 0) - small.get(k, 0)) / (2 * calls)
        for k in set(small) | set(big)
    }
    total = perKind.pop("total", sum(perKind.values()))
    return total, {k: round(v, 2) for k, v in perKind.items() if v >= 0.05}


def _prefix(tool: str, out: str, processes: bool) -> list[str]:
    # The command line a run is made under, for a tool.
    if tool == "callgrind":
        if processes:
            # Each process (the workers too) in its own file, out.<pid>.
            return [
                "valgrind",
                "--tool=callgrind",
                "--trace-children=yes",
                f"--callgrind-out-file={out}.%p",
            ]
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if tool == "strace":
        # Of a multicore variant, every call, to tell the processes apart.
        return (
            ["strace", "-f", "-o", out]
            if processes
            else ["strace", "-c", "-f", "-o", out]
        )
    if tool == "perf":
        return ["perf", "stat", "-x,", "-o", out, "-e", _PERF_EVENTS]
    return []


def measure(config: BenchConfig, variant: str, calls: int, tool: str) -> dict[str, Any]:
    """
    One variant's per-call figures: C{tool} is C{"cpu"}, C{"callgrind"},
    C{"strace"} or C{"perf"}. Of a C{-processes} variant, the callgrind
    and strace figures are the parent process's, and the C{child...} ones
    those of its worker processes together.
    """
    processes = _isProcesses(variant)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (calls, 3 * calls):
            out = os.path.join(tmp, f"out.{n}")
            result = _run(_prefix(tool, out, processes), config, variant, n)
            if tool == "callgrind" and processes:
                result["instructions"], result["childInstructions"] = _perProcess(
                    out, result["pid"]
                )
            elif tool == "callgrind":
                result["instructions"] = _instructions(out)
            elif tool == "strace":
                with open(out) as f:
                    text = f.read()
                if processes:
                    byProcess = _straceByProcess(text, result["pid"])
                    result["syscalls"] = byProcess["parent"]
                    result["childSyscalls"] = byProcess["children"]
                else:
                    result["syscalls"] = _syscalls(text)
            elif tool == "perf":
                with open(out) as f:
                    result["perf"] = _perfCounts(f.read())
            runs.append(result)
    small, big = runs
    per: dict[str, Any] = {
        "cpuUsPerCall": big["cpuUsPerCall"],
        "childCpuUsPerCall": big["childCpuUsPerCall"],
        "serverCpuUsPerCall": big["serverCpuUsPerCall"],
        "wallUsPerCall": big["wallUsPerCall"],
        "handOffsPerCall": big["handOffsPerCall"],
    }
    if tool == "callgrind":
        per["instructionsPerCall"] = (big["instructions"] - small["instructions"]) / (
            2 * calls
        )
        if processes:
            per["childInstructionsPerCall"] = (
                big["childInstructions"] - small["childInstructions"]
            ) / (2 * calls)
    if tool == "strace":
        per["syscallsPerCall"], per["syscallKinds"] = _perCall(
            small["syscalls"], big["syscalls"], calls
        )
        if processes:
            per["childSyscallsPerCall"], per["childSyscallKinds"] = _perCall(
                small["childSyscalls"], big["childSyscalls"], calls
            )
    if tool == "perf":
        a, b = small["perf"], big["perf"]
        per["perfPerCall"] = {k: (b[k] - a[k]) / (2 * calls) for k in a}
    return per


def _childBytecodes(directory: str) -> collections.Counter[tuple[str, int, str]]:
    # The bytecodes the worker processes wrote (see bench._childtrace).
    counts: collections.Counter[tuple[str, int, str]] = collections.Counter()
    for entry in os.listdir(directory):
        if entry.startswith("bytecodes."):
            with open(os.path.join(directory, entry)) as f:
                for path, line, name, n in json.load(f):
                    counts[path, line, name] += n
    return counts


def _shortName(key: tuple[str, int, str]) -> str:
    path, line, name = key
    short = path.split("site-packages/")[-1].split("python3.11/")[-1]
    return f"{os.path.relpath(short)}:{line}({name})"


def bytecodesOfProcesses(
    config: BenchConfig, variant: str, calls: int, top: int
) -> None:
    """
    Print a C{-processes} variant's bytecodes per call: the parent's (its
    timed calls, as for the other variants) and then its worker
    processes' (counted from their start, in runs of C{calls} and
    C{3 * calls} calls, and the difference taken).
    """
    counts = []
    parent: dict[str, Any] = {}
    for n in (calls, 3 * calls):
        with tempfile.TemporaryDirectory() as tmp:
            options = ["--bytecodes", "--top", str(top if n == calls else 0)]
            if n == calls:
                parent = _run(options, config, variant, n, env=_childEnv(tmp))
            else:
                # (Its output is the same again: not printed.)
                _run(options, config, variant, n, env=_childEnv(tmp), quiet=True)
            counts.append(_childBytecodes(tmp))
    small, big = counts
    big.subtract(small)
    print("-- worker processes, per call", flush=True)
    for key, n in big.most_common(top):
        print(f"{n / (2 * calls):8.1f}  {_shortName(key)}")
    figures = {
        "bytecodesPerCall": parent.get("bytecodesPerCall"),
        "childBytecodesPerCall": sum(big.values()) / (2 * calls),
    }
    print(json.dumps(figures), flush=True)


def main(argv: list[str] | None = None) -> None:
    """
    Measure the variants (or, with C{child}, run one: internal).
    """
    parser = argparse.ArgumentParser(prog="python -m bench.measure_machinery")
    parser.add_argument("--database", default="bench_machinery")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--only", default=",".join(VARIANTS))
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--strace", action="store_true")
    parser.add_argument("--perf", action="store_true")
    parser.add_argument("--bytecodes", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = BenchConfig(database=args.database, concurrency=args.concurrency)
    if args.rest:
        _, variant, calls = args.rest
        child(config, variant, int(calls), args.top if args.bytecodes else 0)
        return
    _ensureDatabase(config)
    if args.bytecodes:
        # One run each: the counts are deterministic, and only the timed
        # calls are counted.
        for variant in args.only.split(","):
            print(f"== {variant}", flush=True)
            if _isProcesses(variant):
                bytecodesOfProcesses(config, variant, args.calls, args.top)
            else:
                _run(
                    ["--bytecodes", "--top", str(args.top)], config, variant, args.calls
                )
        return
    tools = ["cpu"]
    if args.callgrind:
        tools.append("callgrind")
    if args.strace:
        tools.append("strace")
    if args.perf:
        tools.append("perf")
    for variant in args.only.split(","):
        for tool in tools:
            figures = measure(config, variant, args.calls, tool)
            print(variant, tool, json.dumps(figures), flush=True)


def _ensureDatabase(config: BenchConfig) -> None:
    import psycopg2

    try:
        psycopg2.connect(config.psycopg2Dsn).close()
    except psycopg2.OperationalError:
        from bench.database import createDatabase

        createDatabase(config)


if __name__ == "__main__":
    main()
