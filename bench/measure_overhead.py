"""
What observability costs a call (issue 17), counted in CPU instructions of
the client process by valgrind's callgrind (the PostgreSQL server is not
under valgrind), so that the figure does not depend on what else this
shared machine runs::

    python -m bench.measure_overhead [--calls 100,400] [--orm-calls 30,120]
        [--workloads select1,orm] [--modes plain,metrics,tracing,sdk]
        [--repeat 2] [--database sasync_overhead] [--out FILE]

(C{./scripts/bench --only overhead} runs it too, as the variant
C{overhead-callgrind}.)

One process, under callgrind, makes sequential calls of a broker on one
connection: C{SELECT 1} transactions, or the ORM workload's first ops on
freshly reset tables, in phases of a small and a big number of calls
(after a warm-up), in each mode:

  - C{plain}: no collector, no tracer provider (counters only);
  - C{metrics}: a L{sasync.metrics.PrometheusCollector} registered (calls
    timed, two histograms observed per call);
  - C{tracing}: OpenTelemetry's no-op tracer provider set (last: a
    provider is set for good);
  - C{sdk} (for information, in a process of its own): the OpenTelemetry
    SDK's C{TracerProvider}, no exporter (every call makes a real span).

The process calls C{os.getppid()} just before and just after each phase's
calls, and callgrind (C{--dump-before=getppid}) writes the instructions
counted since the previous call as a part of its own: start-up, resets and
mode changes fall outside the phases. Instructions per call are the
difference between a big and a small phase of a mode over the difference
of their calls, so what a phase costs once cancels too. Before each phase
the garbage collector runs and freezes what is alive, so that every phase
starts from the same collector state. The overhead of a mode is its
instructions per call over C{plain}'s, minus one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from statistics import median
from typing import Any

from bench.config import BenchConfig

MODES = ("plain", "metrics", "tracing", "sdk")
MODE_LABELS = {
    "plain": "no collector, no tracer provider",
    "metrics": "Prometheus collector registered",
    "tracing": "OpenTelemetry no-op tracer provider",
    "sdk": "OpenTelemetry SDK TracerProvider, no exporter (information)",
}
#: The modes issue 17's 3% limit applies to.
TARGET_MODES = ("metrics", "tracing")
WORKLOADS = ("select1", "orm")
#: (small, big) calls per phase: under callgrind a SELECT 1 call takes
#: about 15 ms, and start-up about two minutes.
CALLS = {"select1": (100, 400), "orm": (30, 120)}
#: Calls before the first phase (caches, compiled statements, the writer
#: gate's first guesses).
WARM_UP = 20
#: Calls per phase of a C{--smoke} run (natively: no callgrind).
SMOKE_CALLS = (2, 3)

Phase = tuple[str, str, int]  # workload, mode, calls

_PART = re.compile(rb"^part:\s*(\d+)", re.MULTILINE)
_TOTAL = re.compile(rb"^summary:\s*(\d+)", re.MULTILINE)


def valgrindMissing() -> str | None:
    """
    Why callgrind can't count here, or C{None} if it can.
    """
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (apt-get install valgrind)"
    return None


def sdkMissing() -> str | None:
    """
    Why the C{sdk} mode can't run here, or C{None}.
    """
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return "opentelemetry-sdk is not installed"
    return None


def plans(
    workloads: tuple[str, ...],
    modes: tuple[str, ...],
    calls: dict[str, tuple[int, int]],
    repeat: int,
) -> list[list[Phase]]:
    """
    The phases of each process to run: C{plain} and C{metrics} alternate,
    then C{tracing}; C{sdk} in a process of its own.
    """
    main: list[Phase] = []
    sdk: list[Phase] = []
    for group, plan in (
        (("plain", "metrics"), main),
        (("tracing",), main),
        (("sdk",), sdk),
    ):
        for workload in workloads:
            for _ in range(repeat):
                for mode in (m for m in group if m in modes):
                    plan += [(workload, mode, n) for n in calls[workload]]
    return [plan for plan in (main, sdk) if plan]


class _Mode:
    """
    The child's observability mode: what it set up, kept alive.
    """

    def __init__(self) -> None:
        self.registry: Any = None
        self.provider: str | None = None

    def enter(self, mode: str) -> None:
        import gc

        from sasync._stats import CallStats

        if mode != "metrics" and self.registry is not None:
            self.registry = None
            gc.collect()  # (The collector's finalizer stops the timings.)
        if mode == "metrics" and self.registry is None:
            from bench.observability_variants import collectorRegistered

            self.registry = collectorRegistered()
        elif mode in ("tracing", "sdk") and self.provider is None:
            self._setProvider(mode)
        if mode != self.provider and mode in ("tracing", "sdk"):
            raise RuntimeError(f"{mode} after {self.provider}: one provider a process")
        if mode == "plain" and (self.provider or CallStats._timingUsers):
            raise RuntimeError("plain after a collector or a tracer provider")

    def _setProvider(self, mode: str) -> None:
        if mode == "tracing":
            from bench.observability_variants import noOpTracing

            noOpTracing()
        else:
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider

            trace.set_tracer_provider(TracerProvider())
        self.provider = mode


def runPhases(phases: list[Phase], config: BenchConfig) -> list[int]:
    """
    In this process: each phase's calls on a broker of one connection,
    between two C{os.getppid()} calls (callgrind's marks).

    @return: How many calls of each phase the broker counted as committed.
    """
    import gc

    from bench.database import resetOps
    from bench.harness import runTwisted
    from bench.sasync_variants import BenchBroker
    from bench.workload import opPlan

    mode = _Mode()
    workloads = {w for w, _, _ in phases}

    async def calls(broker: BenchBroker, workload: str, n: int) -> None:
        if workload == "select1":
            for _ in range(n):
                await broker.selectOne()
        else:
            for op in opPlan(n, config.seed):
                await broker.ormOp(op)

    async def main(reactor: Any) -> list[int]:
        broker = BenchBroker(config.url("psycopg2"), connections=1)
        counted = []
        try:
            await broker.waitUntilRunning()
            for workload in sorted(workloads):
                await calls(broker, workload, WARM_UP)
            for workload, name, n in phases:
                mode.enter(name)
                if workload == "orm":
                    resetOps(config)
                gc.collect()
                gc.freeze()
                before = broker.stats().committed
                os.getppid()  # (callgrind: the phase starts)
                await calls(broker, workload, n)
                os.getppid()  # (and ends)
                counted.append(broker.stats().committed - before)
            return counted
        finally:
            await broker.shutdown()

    return runTwisted(main)


def _child(phases: list[Phase], config: BenchConfig, tmp: Path) -> list[str]:
    path = tmp / "phases.json"
    path.write_text(json.dumps({"phases": phases, "config": config.toJson()}))
    return [sys.executable, "-m", "bench.measure_overhead", "--child", str(path)]


def _checkCounted(phases: list[Phase], output: str) -> None:
    counted = json.loads(output.strip().splitlines()[-1])
    wanted = [n for _, _, n in phases]
    if counted != wanted:
        raise RuntimeError(f"committed {counted}, wanted {wanted}")


def countPhases(phases: list[Phase], config: BenchConfig, tmp: Path) -> list[int]:
    """
    Instructions the client process (every thread) ran in each phase,
    under callgrind.
    """
    out = tmp / "callgrind.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--dump-before=getppid",
        "--dump-line=no",
        f"--callgrind-out-file={out}",
        *_child(phases, config, tmp),
    ]
    # The same hash seed every run: the same dict layouts, the same work.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"exit {done.returncode} under callgrind:\n"
            + done.stderr.decode(errors="replace")[-3000:]
        )
    _checkCounted(phases, done.stdout.decode())
    parts: dict[int, int] = {}
    for path in tmp.glob("callgrind.out*"):
        text = path.read_bytes()
        part, total = _PART.search(text), _TOTAL.search(text)
        if part is None or total is None:
            raise RuntimeError(f"no part or summary in {path}")
        parts[int(part.group(1))] = int(total.group(1))
        path.unlink()
    # Part 1: start-up; then each phase's calls, and what came after them.
    if sorted(parts) != list(range(1, 2 * len(phases) + 2)):
        raise RuntimeError(
            f"{len(parts)} callgrind parts for {len(phases)} phases:"
            " did something else call getppid()?"
        )
    return [parts[2 * i + 2] for i in range(len(phases))]


def measure(
    config: BenchConfig,
    workloads: tuple[str, ...] = WORKLOADS,
    modes: tuple[str, ...] = MODES,
    calls: dict[str, tuple[int, int]] | None = None,
    repeat: int = 2,
) -> dict[str, Any]:
    """
    Instructions per call of each workload in each mode (the median over
    C{repeat} pairs of phases), and each mode's overhead in percent over
    C{plain}. The database of C{config} must exist.

    @return: workload -> C{{"calls": [small, big], "instructions": {mode:
        per call}, "overheadPct": {mode: %}, "pairs": {mode: [per call of
        each pair]}, "skipped": {mode: why}}}.
    """
    calls = calls or CALLS
    skipped: dict[str, str] = {}
    if "sdk" in modes and (why := sdkMissing()):
        skipped["sdk"] = why
        modes = tuple(m for m in modes if m != "sdk")
    perCall: dict[str, dict[str, list[float]]] = {w: {} for w in workloads}
    with tempfile.TemporaryDirectory(prefix="overhead-") as name:
        for phases in plans(workloads, modes, calls, repeat):
            counts = countPhases(phases, config, Path(name))
            # Phases come in pairs: the small, then the big.
            for i in range(0, len(phases), 2):
                (workload, mode, small), (_, _, big) = phases[i : i + 2]
                perCall[workload].setdefault(mode, []).append(
                    (counts[i + 1] - counts[i]) / (big - small)
                )
    return {
        w: {
            **summarise(
                {m: median(v) for m, v in perCall[w].items()},
                list(calls[w]),
                skipped,
            ),
            "pairs": {m: [round(x) for x in v] for m, v in perCall[w].items()},
        }
        for w in workloads
    }


def summarise(
    instructions: dict[str, float],
    calls: list[int] | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, Any]:
    """
    One workload's figures: instructions per call per mode, and each mode's
    overhead in percent over C{plain}'s.
    """
    plain = instructions.get("plain")
    return {
        "calls": calls,
        "instructions": {m: round(v) for m, v in instructions.items()},
        "overheadPct": {
            m: round(100.0 * (v - plain) / plain, 2)
            for m, v in instructions.items()
            if plain and m != "plain"
        },
        "skipped": dict(skipped or {}),
    }


def summariseRuns(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    The figures of a variant's runs (each record's C{"overhead"}): per
    workload and mode, the median of the runs' instructions per call; or
    why none was measured (C{"why"}).
    """
    measured = [r for r in runs if "why" not in r]
    if not measured:
        return {"why": next((r["why"] for r in runs if r.get("why")), "not run")}
    figures: dict[str, Any] = {}
    for workload in WORKLOADS:
        mine = [r[workload] for r in measured if workload in r]
        if not mine:
            continue
        figures[workload] = summarise(
            {
                m: median(r["instructions"][m] for r in mine if m in r["instructions"])
                for m in MODES
                if any(m in r["instructions"] for r in mine)
            },
            mine[0]["calls"],
            mine[0]["skipped"],
        )
        figures[workload]["runs"] = len(mine)
    return figures


def describe(figures: dict[str, Any]) -> str:
    """
    The figures in a line, for the terminal.
    """
    if "why" in figures:
        return f"not measured: {figures['why']}"
    parts = []
    for workload, f in figures.items():
        plain = f["instructions"].get("plain", 0)
        modes = " ".join(f"{m} {pct:+.2f}%" for m, pct in f["overheadPct"].items())
        parts.append(f"{workload}: plain {plain:,} instructions/call, {modes}")
    return "; ".join(parts)


def overheadCallgrind(config: BenchConfig) -> dict[str, Any]:
    """
    The bench variant C{overhead-callgrind}: instructions per call of each
    workload in each mode (once each: the runner repeats the variant).
    """
    began = time.perf_counter()
    if config.smoke:
        # Proves every phase runs; callgrind would take minutes.
        modes = ("plain", "metrics", "tracing")
        phases = plans(WORKLOADS, modes, dict.fromkeys(WORKLOADS, SMOKE_CALLS), 1)[0]
        with tempfile.TemporaryDirectory(prefix="overhead-") as name:
            done = subprocess.run(
                _child(phases, config, Path(name)),
                capture_output=True,
                text=True,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        _checkCounted(phases, done.stdout)
        count = sum(n for _, _, n in phases)
        figures: dict[str, Any] = {"why": "smoke run: callgrind not run"}
    elif why := valgrindMissing():
        figures, count = {"why": why}, 0
    else:
        figures = measure(config, repeat=1)
        count = sum(sum(CALLS[w]) * len(f["instructions"]) for w, f in figures.items())
    seconds = time.perf_counter() - began
    return {
        "unit": "calls",
        "count": count,
        "seconds": seconds,
        "rate": count / seconds if seconds > 0 else 0.0,
        "overhead": figures,
    }


def _pair(text: str) -> tuple[int, int]:
    small, big = (int(x) for x in text.split(","))
    if not 0 < small < big:
        raise argparse.ArgumentTypeError("want SMALL,BIG with 0 < SMALL < BIG")
    return small, big


def main(argv: list[str]) -> int:
    """
    The command line (see the module's docstring).
    """
    if argv[:1] == ["--child"]:
        given = json.loads(Path(argv[1]).read_text())
        phases = [tuple(p) for p in given["phases"]]
        config = BenchConfig.fromJson(given["config"])
        print(json.dumps(runPhases(phases, config)))  # type: ignore[arg-type]
        return 0
    p = argparse.ArgumentParser(prog="bench.measure_overhead", description=__doc__)
    p.add_argument("--calls", type=_pair, default=CALLS["select1"])
    p.add_argument("--orm-calls", type=_pair, default=CALLS["orm"])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--repeat", type=int, default=2, help="pairs of phases per mode")
    p.add_argument("--database", default="sasync_overhead")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if why := valgrindMissing():
        print(f"skipped: {why}")
        return 0
    modes = tuple(args.modes.split(","))
    if "plain" not in modes:
        p.error("--modes must include plain (the reference)")
    from bench.database import createDatabase, dropDatabase

    config = replace(BenchConfig(), database=args.database)
    createDatabase(config)
    try:
        results = measure(
            config,
            tuple(args.workloads.split(",")),
            modes,
            {"select1": args.calls, "orm": args.orm_calls},
            args.repeat,
        )
    finally:
        dropDatabase(config)
    for workload, f in results.items():
        print(f"{workload} ({f['calls'][0]} and {f['calls'][1]} calls a pair):")
        for mode, n in f["instructions"].items():
            pct = f["overheadPct"].get(mode)
            extra = "" if pct is None else f" {pct:+6.2f}%"
            pairs = ", ".join(f"{x:,}" for x in f["pairs"][mode])
            print(f"  {mode:8s} {n:>10,} instructions per call{extra}  ({pairs})")
        for mode, why in f["skipped"].items():
            print(f"  {mode:8s} skipped: {why}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
