"""
What observability costs a call (issue 17), counted in CPU instructions of
the client process by valgrind's callgrind (the PostgreSQL server is not
under valgrind), so that the figure does not depend on what else this
shared machine runs::

    python -m bench.measure_overhead [--calls 100,300] [--orm-calls 40,120]
        [--workloads select1,orm] [--modes plain,metrics,tracing,sdk]
        [--repeat 1] [--database sasync_overhead] [--out FILE]

(Also run by C{./scripts/bench --only overhead}, as the variants
C{overhead-select1} and C{overhead-orm}.)

A child process, under callgrind, makes N sequential calls of a broker on
one connection: C{SELECT 1} transactions, or the ORM workload's first N ops
on freshly reset tables. It does so in each mode:

  - C{plain}: no collector, no tracer provider (counters only);
  - C{metrics}: a L{sasync.metrics.PrometheusCollector} registered (calls
    timed, two histograms observed per call);
  - C{tracing}: OpenTelemetry's no-op tracer provider set;
  - C{sdk} (for information): the OpenTelemetry SDK's C{TracerProvider},
    no exporter (each call makes and ends a real span).

Each mode runs with a small and a big N; instructions per call are the
difference of the two totals over the difference of the Ns, so start-up,
imports and shutdown cancel out. The overhead of a mode is its
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
#: (small N, big N) per workload: enough calls that the difference is
#: steady, few enough that a child under callgrind takes well under a
#: minute on this machine.
CALLS = {"select1": (100, 300), "orm": (40, 120)}
#: Calls of each mode in a C{--smoke} run (natively, no callgrind).
SMOKE_CALLS = 3

_TOTALS = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


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


def _setUp(mode: str) -> Any:
    # What the mode needs alive while the calls run.
    if mode == "metrics":
        from bench.observability_variants import collectorRegistered

        return collectorRegistered()
    if mode == "tracing":
        from bench.observability_variants import noOpTracing

        noOpTracing()
    elif mode == "sdk":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
    return None


def runCalls(workload: str, mode: str, n: int, config: BenchConfig) -> int:
    """
    In this process: C{n} sequential calls of C{workload} in C{mode} on a
    broker of one connection. (The ORM workload wants freshly reset
    tables.)

    @return: How many calls the broker counted as committed.
    """
    kept = _setUp(mode)
    from bench.harness import runTwisted
    from bench.sasync_variants import BenchBroker
    from bench.workload import opPlan

    plan = opPlan(n, config.seed)

    async def main(reactor: Any) -> int:
        broker = BenchBroker(config.url("psycopg2"), connections=1)
        try:
            await broker.waitUntilRunning()
            if workload == "select1":
                for _ in range(n):
                    await broker.selectOne()
            else:
                for op in plan:
                    await broker.ormOp(op)
            return broker.stats().committed
        finally:
            await broker.shutdown()

    committed = runTwisted(main)
    del kept
    return committed


def _childCommand(workload: str, mode: str, n: int, configPath: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.measure_overhead",
        "--child",
        workload,
        mode,
        str(n),
        str(configPath),
    ]


def countInstructions(
    workload: str, mode: str, n: int, config: BenchConfig, tmp: Path
) -> int:
    """
    Instructions the client process (every thread) ran, start to exit, for
    C{n} calls of C{workload} in C{mode}, under callgrind.
    """
    configPath = tmp / "config.json"
    configPath.write_text(config.toJson())
    out = tmp / f"callgrind.{workload}.{mode}.{n}"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--dump-line=no",
        *_childCommand(workload, mode, n, configPath),
    ]
    # The same hash seed every run: dict layouts, so the work, are the same.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{workload} {mode} n={n} under callgrind: exit {done.returncode}\n"
            + done.stderr.decode(errors="replace")[-3000:]
        )
    totals = [int(m) for m in _TOTALS.findall(out.read_bytes())]
    if not totals:
        raise RuntimeError(f"no totals in {out}")
    return max(totals)


def _reset(workload: str, config: BenchConfig) -> None:
    if workload == "orm":
        from bench.database import resetOps

        resetOps(config)


def measure(
    config: BenchConfig,
    workloads: tuple[str, ...] = WORKLOADS,
    modes: tuple[str, ...] = MODES,
    calls: dict[str, tuple[int, int]] | None = None,
    repeat: int = 1,
) -> dict[str, Any]:
    """
    Instructions per call of each workload in each mode (the median over
    C{repeat} pairs of runs), and each mode's overhead in percent over
    C{plain}. The database of C{config} must exist.

    @return: workload -> C{{"calls": [small, big], "instructions": {mode:
        per call}, "overheadPct": {mode: %}, "skipped": {mode: why}}}.
    """
    calls = calls or CALLS
    skipped: dict[str, str] = {}
    if why := sdkMissing():
        skipped["sdk"] = why
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="overhead-") as name:
        tmp = Path(name)
        for workload in workloads:
            small, big = calls[workload]
            perCall: dict[str, list[float]] = {}
            for _ in range(repeat):
                # Modes alternate, so any drift hits all of them alike.
                for mode in modes:
                    if mode in skipped:
                        continue
                    totals = []
                    for n in (small, big):
                        _reset(workload, config)
                        totals.append(countInstructions(workload, mode, n, config, tmp))
                    perCall.setdefault(mode, []).append(
                        (totals[1] - totals[0]) / (big - small)
                    )
            results[workload] = summarise(
                {m: median(v) for m, v in perCall.items()},
                calls=[small, big],
                skipped={m: why for m, why in skipped.items() if m in modes},
            )
    return results


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
        "skipped": skipped or {},
    }


def summariseRuns(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    The figures of a variant's runs (each record's C{"overhead"}): per
    mode, the median of the runs' instructions per call; or why none was
    measured.
    """
    measured = [r for r in runs if r.get("instructions")]
    if not measured:
        return {"why": next((r["why"] for r in runs if r.get("why")), "not run")}
    modes = {m for r in measured for m in r["instructions"]}
    figures = summarise(
        {
            m: median(r["instructions"][m] for r in measured if m in r["instructions"])
            for m in MODES
            if m in modes
        },
        calls=measured[0]["calls"],
        skipped=measured[0].get("skipped"),
    )
    figures["runs"] = len(measured)
    return figures


def describe(figures: dict[str, Any]) -> str:
    """
    A workload's figures in a line, for the terminal.
    """
    if "instructions" not in figures:
        return f"not measured: {figures.get('why')}"
    parts = [f"plain {figures['instructions'].get('plain', 0):,} instructions/call"]
    parts += [f"{m} {pct:+.2f}%" for m, pct in figures["overheadPct"].items()]
    return ", ".join(parts)


def _variant(workload: str, config: BenchConfig) -> dict[str, Any]:
    # A bench variant's record: the figures under "overhead".
    began = time.perf_counter()
    if config.smoke:
        # Proves each mode's calls run; callgrind would take minutes.
        committed = 0
        for mode in TARGET_MODES:
            _reset(workload, config)
            committed += _native(workload, mode, SMOKE_CALLS, config)
        figures: dict[str, Any] = {"why": "smoke run: callgrind not run"}
        count = SMOKE_CALLS * len(TARGET_MODES)
        if committed != count:
            raise RuntimeError(f"{committed} of {count} calls committed")
    elif why := valgrindMissing():
        figures, count = {"why": why}, 0
    else:
        figures = measure(config, (workload,))[workload]
        small, big = figures["calls"]
        count = (small + big) * (len(MODES) - len(figures["skipped"]))
    seconds = time.perf_counter() - began
    return {
        "unit": "calls",
        "count": count,
        "seconds": seconds,
        "rate": count / seconds if seconds > 0 else 0.0,
        "overhead": figures,
    }


def _native(workload: str, mode: str, n: int, config: BenchConfig) -> int:
    # Each mode in a process of its own (a tracer provider is set for good).
    with tempfile.TemporaryDirectory(prefix="overhead-") as name:
        configPath = Path(name, "config.json")
        configPath.write_text(config.toJson())
        done = subprocess.run(
            _childCommand(workload, mode, n, configPath),
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{workload} {mode}: {done.stderr[-3000:]}")
    return int(done.stdout.split()[-1])


def overheadSelect1(config: BenchConfig) -> dict[str, Any]:
    """
    The bench variant C{overhead-select1}: instructions per C{SELECT 1}
    call in each mode.
    """
    return _variant("select1", config)


def overheadOrm(config: BenchConfig) -> dict[str, Any]:
    """
    The bench variant C{overhead-orm}: instructions per ORM op in each mode.
    """
    return _variant("orm", config)


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
        workload, mode, n, configPath = argv[1:]
        config = BenchConfig.fromJson(Path(configPath).read_text())
        print(runCalls(workload, mode, int(n), config))
        return 0
    p = argparse.ArgumentParser(prog="bench.measure_overhead", description=__doc__)
    p.add_argument("--calls", type=_pair, default=CALLS["select1"])
    p.add_argument("--orm-calls", type=_pair, default=CALLS["orm"])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--repeat", type=int, default=1)
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
    for workload, figures in results.items():
        print(f"{workload} (calls {figures['calls'][0]} and {figures['calls'][1]}):")
        for mode, n in figures["instructions"].items():
            pct = figures["overheadPct"].get(mode)
            extra = "" if pct is None else f"  {pct:+.2f}%"
            print(f"  {mode:8s} {n:>12,} instructions per call{extra}")
        for mode, why in figures["skipped"].items():
            print(f"  {mode:8s} skipped: {why}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
