"""PNG plots for the report (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on CI or servers
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.variants import BY_NAME, WORKLOAD_BY_NAME

OURS, PEER, CEILING = "#c0392b", "#7f8c8d", "#2c3e50"


def _color(name: str) -> str:
    if BY_NAME[name].needs:
        return OURS
    return CEILING if name.endswith("pgbench") else PEER


def _bars(ax: Any, names: list[str], values: list[float], xlabel: str) -> None:
    ax.barh(names, values, color=[_color(n) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    ax.margins(x=0.2)


def _ordered(summary: dict[str, Any], workload: str) -> list[str]:
    present = summary[workload]["variants"]
    return [v.name for v in BY_NAME.values() if v.name in present]


def _save(fig: Any, path: Path) -> None:
    # Every plot's end: laid out, written at the page's resolution, freed.
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plotThroughput(summary: dict[str, Any], workload: str, path: Path) -> None:
    """
    Median throughput per variant of one workload (ours in red).
    """
    names = _ordered(summary, workload)
    rates = [summary[workload]["variants"][n]["rate"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    _bars(ax, names, rates, f"{WORKLOAD_BY_NAME[workload].unit}/s (median)")
    ax.set_title(WORKLOAD_BY_NAME[workload].title)
    _save(fig, path)


def plotStreaming(summary: dict[str, Any], path: Path) -> None:
    """
    Streaming: rows/s and peak RSS side by side.
    """
    names = _ordered(summary, "stream")
    variants = summary["stream"]["variants"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.4))
    _bars(left, names, [variants[n]["rate"] for n in names], "rows/s (median)")
    _bars(
        right, names, [variants[n].get("peakRssMb", 0.0) for n in names], "peak RSS, MB"
    )
    right.set_yticklabels([])
    fig.suptitle(WORKLOAD_BY_NAME["stream"].title)
    _save(fig, path)


def plotLag(summary: dict[str, Any], path: Path) -> bool:
    """
    p50 and p99 loop lag of every event-loop variant; False if there are none.
    """
    rows = []
    for variant in BY_NAME.values():
        v = summary.get(variant.workload, {"variants": {}})["variants"].get(
            variant.name
        )
        if v and v.get("lag"):
            # Log axis: a 0 ms lag is drawn at 0.01 ms.
            p50, p99 = (max(0.01, v["lag"][k]) for k in ("p50Ms", "p99Ms"))
            rows.append((variant.name, p50, p99))
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.2))
    ys = range(len(rows))
    ax.barh(
        [y + 0.2 for y in ys],
        [r[2] for r in rows],
        height=0.4,
        label="p99",
        color=[_color(r[0]) for r in rows],
    )
    ax.barh(
        [y - 0.2 for y in ys],
        [r[1] for r in rows],
        height=0.4,
        label="p50",
        color="#bdc3c7",
    )
    ax.set_xscale("log")  # from a fraction of a ms to seconds
    ax.set_yticks(list(ys), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.axvline(5, color=OURS, linestyle="--", linewidth=1)
    ax.set_xlabel("lag of a 10 ms periodic call, ms, log scale (dashed: 5 ms)")
    ax.legend(loc="lower right")
    _save(fig, path)
    return True


def plotOpenLoop(summary: dict[str, Any], path: Path) -> bool:
    """
    Open loop: p50 (dashed) and p99 (solid) latency against the offered
    load, one line per variant; False if the workload was not run.
    """
    block = summary.get("openloop")
    if not block:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in _ordered(summary, "openloop"):
        levels = block["variants"][name].get("levels") or []
        if not levels:
            continue
        xs = [100 * level["fraction"] for level in levels]
        color = OURS if BY_NAME[name].needs else None
        (line,) = ax.plot(
            xs, [max(0.01, lv["p99Ms"]) for lv in levels], marker="o", color=color
        )
        line.set_label(f"{name} p99")
        ax.plot(
            xs,
            [max(0.01, lv["p50Ms"]) for lv in levels],
            linestyle="--",
            color=line.get_color(),
            label=f"{name} p50",
        )
    ax.set_yscale("log")
    ax.set_xlabel("offered load, % of the variant's closed-loop maximum")
    ax.set_ylabel("latency from intended arrival, ms (log)")
    ax.set_title(WORKLOAD_BY_NAME["openloop"].title)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plotSweep(summary: dict[str, Any], path: Path) -> bool:
    """
    Connection sweep: throughput (left) and p99 latency (right) against the
    number of connections; False if the workload was not run.
    """
    block = summary.get("connections")
    if not block:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in _ordered(summary, "connections"):
        points = block["variants"][name].get("sweep") or []
        xs = [point["connections"] for point in points]
        style = {"marker": "o", "label": name}
        left.plot(xs, [point["rate"] for point in points], **style)
        right.plot(xs, [max(0.01, point["p99Ms"]) for point in points], **style)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("connections")
    left.set_ylabel("ops/s")
    right.set_ylabel("p99 latency from submission, ms (log)")
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle(WORKLOAD_BY_NAME["connections"].title)
    _save(fig, path)
    return True


# How cost grows: transaction size and result size (issue 21) ----------------


def _sweepLines(
    summary: dict[str, Any], workload: str, x: str, panels: list[tuple[Any, str]]
) -> None:
    # One line per variant on each (axes, metric) panel; peers dashed.
    block = summary[workload]
    for name in _ordered(summary, workload):
        points = block["variants"][name].get("sweep") or []
        style = {
            "marker": "o",
            "label": name,
            "linestyle": "-" if BY_NAME[name].needs else "--",
        }
        for ax, metric in panels:
            values = [max(0.01, point[metric]) for point in points]
            ax.plot([point[x] for point in points], values, **style)


def plotTxSize(summary: dict[str, Any], path: Path) -> bool:
    """
    Transaction size: statements/s, p99 latency and client CPU per
    statement against statements per transaction; False if not run.
    """
    if "txsize" not in summary:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    rate, p99, cpu = axes
    _sweepLines(
        summary,
        "txsize",
        "statements",
        [(rate, "rate"), (p99, "p99Ms"), (cpu, "cpuUsPerStatement")],
    )
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks([1, 10, 100], ["1", "10", "100"])
        ax.set_xlabel("statements per transaction")
    rate.set_ylabel("statements/s")
    p99.set_ylabel("p99 transaction latency from its call, ms (log)")
    p99.set_yscale("log")
    cpu.set_ylabel("client CPU per statement, µs (log)")
    cpu.set_yscale("log")
    for ax in (p99, cpu):
        # Plain numbers at 1, 2 and 5 of each decade, not powers of ten.
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    rate.legend(fontsize=7)
    fig.suptitle(WORKLOAD_BY_NAME["txsize"].title)
    _save(fig, path)
    return True


def plotStreamMemory(summary: dict[str, Any], path: Path) -> bool:
    """
    Memory against result size: peak RSS and its growth over RSS before
    streaming, per number of rows streamed; False if not run.
    """
    if "streammemory" not in summary:
        return False
    fig, (peak, growth) = plt.subplots(1, 2, figsize=(11, 4.2))
    _sweepLines(
        summary, "streammemory", "rows", [(peak, "peakRssMb"), (growth, "growthMb")]
    )
    for ax in (peak, growth):
        ax.set_xscale("log")
        ax.set_xlabel("rows streamed (a fresh process per size)")
        ax.set_ylim(bottom=0)
    # At least 5 MB high, so that a flat line looks flat.
    growth.set_ylim(0, max(5.0, growth.get_ylim()[1]))
    peak.set_ylabel("peak RSS, MB")
    growth.set_ylabel("peak RSS less RSS before streaming, MB")
    peak.legend(fontsize=8)
    fig.suptitle(WORKLOAD_BY_NAME["streammemory"].title)
    _save(fig, path)
    return True
