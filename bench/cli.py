"""
The runner: C{python -m bench [--ops N] [--rows N] [--repeat N] [--only ...]
[--smoke] [--out FILE]}.

It creates its own database, runs the chosen variants alternately (within
a workload: A B C, A B C, ...), each once per child process, and writes
every run, the medians and the ratios to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench import availability, database, replicas
from bench.config import BenchConfig
from bench.machine import describe
from bench.stats import formatTable, summarise
from bench.variants import WORKLOADS, Variant, select
from bench.workload import opPlan

RESULTS = Path(__file__).parent / "results"


def parseArgs(argv: list[str]) -> argparse.Namespace:
    """
    The command line; scales default to the issue's (35,000 ops, 1M rows).
    """
    d = BenchConfig()
    p = argparse.ArgumentParser(prog="bench", description=__doc__)
    p.add_argument("--ops", type=int, default=d.ops, help="ops per ORM/SQL run")
    p.add_argument("--rows", type=int, default=d.rows, help="rows to stream")
    p.add_argument("--calls", type=int, default=d.calls, help="no-op dispatches")
    p.add_argument("--items", type=int, default=d.items, help="iterator items")
    p.add_argument("--selects", type=int, default=d.selects, help="SELECT 1 txns")
    p.add_argument("--idle", type=float, default=d.idle, help="idle probe, s")
    p.add_argument(
        "--open-seconds",
        type=float,
        default=d.openSeconds,
        help="seconds per offered rate (openloop)",
    )
    p.add_argument("--repeat", type=int, default=d.repeat, help="runs per variant")
    p.add_argument(
        "--concurrency",
        type=int,
        default=d.concurrency,
        help="connections/threads for every concurrent variant",
    )
    p.add_argument("--only", help="comma-separated workloads/variants/patterns")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny scale, one run each: proves every variant runs",
    )
    p.add_argument("--out", type=Path, help="JSON results file")
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--user", default=d.user)
    p.add_argument("--database", default=d.database, help="created and dropped")
    p.add_argument("--keep-db", action="store_true", help="don't drop it after")
    p.add_argument("--timeout", type=float, default=3600, help="per child, seconds")
    p.add_argument("--list", action="store_true", help="list variants and exit")
    return p.parse_args(argv)


def configFrom(args: argparse.Namespace) -> BenchConfig:
    """
    The L{BenchConfig} the arguments describe (smoke-scaled for --smoke).
    """
    config = BenchConfig(
        ops=args.ops,
        rows=args.rows,
        calls=args.calls,
        items=args.items,
        selects=args.selects,
        idle=args.idle,
        openSeconds=args.open_seconds,
        repeat=args.repeat,
        concurrency=args.concurrency,
        host=args.host,
        port=args.port,
        user=args.user,
        database=args.database,
    )
    return config.smokeScaled() if args.smoke else config


def skipped(variants: list[Variant]) -> dict[str, str]:
    """
    Variants whose package does not import yet, with the reason.
    """
    reasons: dict[str, str] = {}
    for package in sorted({v.needs for v in variants if v.needs}):
        error = availability.probe(package)
        if error:
            reasons[package] = f"{package} not importable yet: {error}"
    return {v.name: reasons[v.needs] for v in variants if v.needs in reasons}


def runChild(variant: Variant, config: BenchConfig, timeout: float) -> dict[str, Any]:
    """
    Run one variant once in a fresh interpreter; the result record, or
    C{{"error": ...}}.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        configPath, outPath = Path(tmp, "config.json"), Path(tmp, "out.json")
        configPath.write_text(config.toJson())
        command = [
            sys.executable,
            "-m",
            "bench.child",
            variant.name,
            str(configPath),
            str(outPath),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if outPath.exists():
            record: dict[str, Any] = json.loads(outPath.read_text())
        else:
            record = {"error": f"exit {done.returncode}: {done.stderr[-3000:]}"}
        return record


def checkWrites(config: BenchConfig, variant: Variant) -> str | None:
    """
    After an ORM/SQL run: did it write exactly 3 C{a} and 5 C{b} per write
    op of the plan (pgbench, with its own dice: 5 C{b} per 3 C{a})?
    """
    a, b = database.countOps(config)
    seedA, seedB = 3 * database.SEED_WRITES, 5 * database.SEED_WRITES
    if variant.name.endswith("pgbench"):
        ok = (a - seedA) * 5 == (b - seedB) * 3 and a > seedA
        writes = (a - seedA) // 3
    else:
        writes = sum(op is not None for op in opPlan(config.ops, config.seed))
        ok = (a, b) == (seedA + 3 * writes, seedB + 5 * writes)
    return None if ok else f"wrote {a} a / {b} b rows, expected {writes} writes"


def fillForStreamMemory(config: BenchConfig, workload: str) -> None:
    """
    Before the C{streammemory} workload: fill the stream table once, up to
    its largest size (every size reads C{LIMIT n} of it).
    """
    if workload == "streammemory":
        from bench.streammemory import sizes

        largest = sizes(config)[-1]
        print(f"filling stream table with {largest:,} rows", flush=True)
        database.fillStream(config, largest)


def runAll(
    config: BenchConfig, variants: list[Variant], timeout: float
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[str]]]:
    """
    Every variant C{config.repeat} times, alternating within each workload.
    """
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    errors: dict[str, list[str]] = {}
    for workload in WORKLOADS:
        group = [v for v in variants if v.workload == workload.name]
        if not group:
            continue
        if workload.name == "stream":
            print(f"filling stream table with {config.rows:,} rows", flush=True)
            database.fillStream(config, config.rows)
        fillForStreamMemory(config, workload.name)
        for rep in range(config.repeat):
            for variant in group:
                if workload.name in ("orm", "sql", "openloop", "connections"):
                    database.resetOps(config)  # fresh tables for every run
                loadBefore = os.getloadavg()[0]
                record = runChild(variant, config, timeout)
                # The machine is shared: keep its load next to every figure.
                record["load"] = [round(loadBefore, 2), round(os.getloadavg()[0], 2)]
                if workload.name in ("orm", "sql") and "error" not in record:
                    wrong = checkWrites(config, variant)
                    if wrong:
                        record["error"] = wrong
                if record.get("counted", record.get("count")) != record.get("count"):
                    record["error"] = (
                        f"counted {record['counted']:,} of {record['count']:,}"
                    )
                if record.get("error"):
                    errors.setdefault(variant.name, []).append(record["error"])
                    print(
                        f"[{rep + 1}/{config.repeat}] {variant.name}: ERROR\n"
                        f"{record['error']}",
                        flush=True,
                    )
                    continue
                runs[variant.name].append(record)
                done = f"{record['seconds']:.2f} s"
                if record["unit"] != "s":
                    done = f"{record['rate']:,.0f} {record['unit']}/s in {done}"
                print(f"[{rep + 1}/{config.repeat}] {variant.name}: {done}", flush=True)
    return runs, errors


def _replicaServers(
    config: BenchConfig, runnable: list[Variant], skips: dict[str, str]
) -> tuple[BenchConfig, replicas.Servers | None]:
    """
    Start the servers of the C{replicas} workloads if any of their
    variants runs; if they can't be made here, those join C{skips}.
    """
    wanted = [v.name for v in runnable if v.workload.startswith("replicas")]
    if not wanted:
        return config, None
    print("starting a primary and two standbys for the replicas workload", flush=True)
    config, servers, reason = replicas.startServers(config)
    if servers is None:
        for name in wanted:
            skips[name] = reason
            print(f"skipping {name}: {reason}", flush=True)
    return config, servers


def main(argv: list[str] | None = None) -> int:
    """
    Run the suite; exit status 1 if any variant failed (skips are not failures).
    """
    args = parseArgs(sys.argv[1:] if argv is None else argv)
    variants = select(args.only)
    if args.list:
        for v in variants:
            print(f"{v.workload:9s} {v.name:28s} {v.label}")
        return 0
    config = configFrom(args)
    out = args.out or RESULTS / ("smoke.json" if config.smoke else "latest.json")
    skips = skipped(variants)
    for name, reason in skips.items():
        print(f"skipping {name}: {reason}", flush=True)
    runnable = [v for v in variants if v.name not in skips]
    config, servers = _replicaServers(config, runnable, skips)
    runnable = [v for v in runnable if v.name not in skips]
    started = time.time()
    database.createDatabase(config)
    try:
        meta: dict[str, Any] = {
            "command": "./scripts/bench "
            + shlex.join(sys.argv[1:] if argv is None else argv),
            "config": asdict(replace(config)),
            "machine": describe(config),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        }
        runs, errors = runAll(config, runnable, args.timeout)
    finally:
        if servers is not None:
            servers.close()
        if not args.keep_db:
            database.dropDatabase(config)
    meta["seconds"] = round(time.time() - started, 1)
    summary = summarise(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "meta": meta,
                "skipped": skips,
                "errors": errors,
                "runs": runs,
                "summary": summary,
            },
            indent=1,
        )
    )
    print(formatTable(summary))
    print(f"\nresults: {out}")
    return 1 if errors else 0
