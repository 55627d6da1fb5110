"""The targets the issues set, checked against a run's summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.measure import rssGrowthMb
from bench.variants import BY_NAME


@dataclass(frozen=True)
class Target:
    """
    C{variant}'s C{metric} compared with C{threshold}: a ratio to C{against}
    (a variant, or C{"best-peer"} of its workload), or an absolute value.
    """

    issue: int
    variant: str
    # "ratio", "rate", "peakRssMb", "rssGrowthMb", "rssSpreadMb", "lagP99Ms"
    # or "overheadPct" (against: "workload/mode", bench.measure_overhead)
    metric: str
    threshold: float
    against: str | None = None

    def describe(self) -> str:
        """
        The target as the issue states it.
        """
        if self.metric == "ratio":
            return f"{self.variant} >= {self.threshold:g}x {self.against}"
        if self.metric == "rate":
            unit = _unit(self.variant)
            return f"{self.variant} >= {self.threshold:,.0f} {unit}/s"
        if self.metric == "peakRssMb":
            return f"{self.variant} peak RSS <= {self.threshold:g} MB"
        if self.metric == "rssGrowthMb":
            return f"{self.variant} RSS growth <= {self.threshold:g} MB"
        if self.metric == "rssSpreadMb":
            return (
                f"{self.variant} peak RSS at the largest result <= the smallest's"
                f" + {self.threshold:g} MB"
            )
        if self.metric == "overheadPct":
            workload, mode = (self.against or "/").split("/")
            return (
                f"{workload}, {mode}: <= +{self.threshold:g}% instructions"
                f" per call ({self.variant})"
            )
        return f"{self.variant} reactor lag p99 <= {self.threshold:g} ms"


def _unit(variant: str) -> str:
    from bench.variants import WORKLOAD_BY_NAME

    return WORKLOAD_BY_NAME[BY_NAME[variant].workload].unit


_SASYNC_REACTOR = [
    v.name
    for v in BY_NAME.values()
    if v.needs == "sasync" and v.processes == 1 and v.workload != "overhead"
]

TARGETS = [
    Target(7, "orm-sasync", "ratio", 1.0, "best-peer"),
    Target(7, "sql-sasync", "ratio", 1.0, "sql-adbapi"),
    Target(7, "sql-sasync", "ratio", 0.9, "sql-pgbench"),
    Target(7, "stream-sasync-deferator", "ratio", 0.8, "stream-psycopg2-named"),
    Target(7, "stream-sasync-consumer", "ratio", 0.8, "stream-psycopg2-named"),
    Target(7, "stream-sasync-deferator", "peakRssMb", 64),
    Target(7, "stream-sasync-consumer", "peakRssMb", 64),
    # Bounded memory while streaming (was an assert in a unit test).
    Target(14, "stream-sasync-deferator", "rssGrowthMb", 64),
    Target(14, "stream-sasync-consumer", "rssGrowthMb", 64),
    *[Target(7, name, "lagP99Ms", 5) for name in _SASYNC_REACTOR],
    Target(3, "dispatch-threadqueue", "ratio", 1.0, "dispatch-deferToThread"),
    Target(3, "iterate-asynqueue-consumer", "rate", 500_000),
    Target(4, "select1-sasync", "ratio", 1.0, "select1-adbapi"),
    Target(9, "orm-sasync-processes", "ratio", 1.5, "best-peer"),
    Target(9, "orm-sasync-processes", "lagP99Ms", 5),
    # Serializable by default costs at most 10% against the READ COMMITTED
    # opt-out (measured in the same run).
    Target(13, "orm-sasync", "ratio", 0.9, "orm-sasync-readcommitted"),
    # Observability costs at most 3% (the collector registered, or tracing
    # with a no-op provider), against the same variant without it.
    Target(17, "orm-sasync-metrics", "ratio", 0.97, "orm-sasync"),
    Target(17, "orm-sasync-tracing", "ratio", 0.97, "orm-sasync"),
    Target(17, "select1-sasync-metrics", "ratio", 0.97, "select1-sasync"),
    Target(17, "select1-sasync-tracing", "ratio", 0.97, "select1-sasync"),
    # The same 3% in CPU instructions per call, counted by callgrind: the
    # wall-clock ratios above spread +-15% on a shared machine.
    *[
        Target(17, "overhead-callgrind", "overheadPct", 3.0, f"{workload}/{mode}")
        for workload in ("select1", "orm")
        for mode in ("metrics", "tracing")
    ],
    Target(13, "sql-sasync", "ratio", 0.9, "sql-sasync-readcommitted"),
    # Issue 21: sAsync's machinery no dearer than adbapi's; Core text() close.
    # Like with like: adbapi runs READ COMMITTED, so the machinery target is
    # on the READ COMMITTED raw-cursor variant (sql-sasync-dbapi, at the
    # default SERIALIZABLE, is measured beside it).
    Target(21, "sql-sasync-dbapi-readcommitted", "ratio", 1.0, "sql-adbapi"),
    Target(21, "sql-sasync", "ratio", 0.85, "sql-adbapi"),
    # The same, like with like: Core text() at adbapi's READ COMMITTED.
    Target(21, "sql-sasync-readcommitted", "ratio", 0.85, "sql-adbapi"),
    Target(21, "select1-sasync", "ratio", 1.0, "select1-adbapi"),
    # Two cores: Core text() under processes=2 no slower than one process.
    Target(21, "sql-sasync-processes", "ratio", 1.0, "sql-sasync"),
    Target(21, "sql-sasync-processes", "ratio", 1.3, "sql-adbapi"),
    # Two cores, and 90% of what two plain sync processes reach in the same
    # run: like with like, at their READ COMMITTED.
    Target(
        21,
        "orm-sasync-processes-readcommitted",
        "ratio",
        0.9,
        "orm-sync-2processes",
    ),
    # Issue 21, memory against result size: flat. Each size runs in a fresh
    # process, so the smallest size's peak is the fixed cost (imports, one
    # connection, one batch); a bounded stream adds only its window (at
    # most three batches of 1,000 rows, well under a MB as Python objects)
    # and the allocator's slack: measured +0.7 to +1.3 MB from 1,000 to
    # 10,000,000 rows. 4 MB is three times that, and still tells a flat
    # stream from any per-row retention at full scale: one 16-byte object
    # kept per row is 160 MB at 10M rows.
    Target(21, "streammemory-sasync-deferator", "rssSpreadMb", 4),
    Target(21, "streammemory-sasync-consumer", "rssSpreadMb", 4),
]


def _find(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    block = summary.get(BY_NAME[name].workload)
    if not block:
        return None
    found: dict[str, Any] | None = block["variants"].get(name)
    return found


def _bestPeer(summary: dict[str, Any], name: str) -> tuple[str, float] | None:
    block = summary.get(BY_NAME[name].workload, {"variants": {}})
    peers = [
        (n, v["rate"])
        for n, v in block["variants"].items()
        if BY_NAME[n].needs is None
        and BY_NAME[n].processes == 1
        and not n.endswith("pgbench")
    ]
    return max(peers, key=lambda p: p[1]) if peers else None


def _checkOverhead(target: Target, mine: dict[str, Any]) -> tuple[str, str]:
    # Issue 17: a mode's extra instructions per call (bench.measure_overhead).
    workload, mode = (target.against or "/").split("/")
    figures = mine.get("overhead", {}).get(workload, {})
    pct = figures.get("overheadPct", {}).get(mode)
    if pct is None:
        return "not measured", "-"
    return ("pass" if pct <= target.threshold else "FAIL"), f"{pct:+.2f}%"


def _checkRatio(
    target: Target, summary: dict[str, Any], mine: dict[str, Any]
) -> tuple[str, str]:
    if target.against == "best-peer":
        best = _bestPeer(summary, target.variant)
        if best is None:
            return "not measured", "-"
        otherName, otherRate = best
    else:
        other = _find(summary, target.against or "")
        if other is None:
            return "not measured", "-"
        otherName, otherRate = target.against or "", other["rate"]
    value = mine["rate"] / otherRate if otherRate else 0.0
    ok = value >= target.threshold
    shown = f"{value:.2f}"
    if (float(shown) >= target.threshold) != ok:
        # Rounded to two places it would seem to meet the bound (0.999x
        # as 1.00x): one more place shows why it fails.
        shown = f"{value:.3f}"
    return ("pass" if ok else "FAIL"), f"{shown}x {otherName}"


def check(target: Target, summary: dict[str, Any]) -> tuple[str, str]:
    """
    (C{"pass"}/C{"FAIL"}/C{"not measured"}, the measured value as text).
    """
    mine = _find(summary, target.variant)
    if mine is None:
        return "not measured", "-"
    if target.metric == "ratio":
        return _checkRatio(target, summary, mine)
    if target.metric == "rate":
        value = mine["rate"]
        return ("pass" if value >= target.threshold else "FAIL"), f"{value:,.0f}/s"
    if target.metric == "peakRssMb":
        value = mine.get("peakRssMb", 0.0)
        return ("pass" if value <= target.threshold else "FAIL"), f"{value:.0f} MB"
    if target.metric == "overheadPct":
        return _checkOverhead(target, mine)
    if target.metric == "rssGrowthMb":
        growth = rssGrowthMb(mine)
        if growth is None:
            return "not measured", "-"
        ok = growth <= target.threshold
        return ("pass" if ok else "FAIL"), f"{growth:.1f} MB"
    if target.metric == "rssSpreadMb":
        return _checkSpread(target, mine)
    lag = mine.get("lag")
    if not lag:
        return "not measured", "-"
    value = lag["p99Ms"]
    return ("pass" if value <= target.threshold else "FAIL"), f"{value:.1f} ms"


def _checkSpread(target: Target, mine: dict[str, Any]) -> tuple[str, str]:
    # The streammemory workload: each result size's point, smallest first.
    points = mine.get("sweep") or []
    if len(points) < 2:
        return "not measured", "-"
    smallest, largest = points[0], points[-1]
    spread = largest["peakRssMb"] - smallest["peakRssMb"]
    ok = spread <= target.threshold
    return ("pass" if ok else "FAIL"), (
        f"{spread:+.1f} MB ({smallest['peakRssMb']:.1f} MB at {smallest['rows']:,}"
        f" rows, {largest['peakRssMb']:.1f} MB at {largest['rows']:,})"
    )
