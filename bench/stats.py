"""Medians and ratios of the collected runs, per workload."""

from __future__ import annotations

from typing import Any

from bench.measure import median, rssGrowthMb
from bench.variants import BY_NAME, WORKLOADS


def summariseVariant(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    Medians over one variant's runs (rate, seconds, peak RSS, lag).
    """
    summary: dict[str, Any] = {
        "runs": len(runs),
        "rate": median([r["rate"] for r in runs]),
        "seconds": median([r["seconds"] for r in runs]),
        "rates": [round(r["rate"], 1) for r in runs],
    }
    cpu = [r.get("cpuUsPerUnit") or 0.0 for r in runs]
    if all(c > 0 for c in cpu):
        # The variant's own process, every thread (see bench.measure).
        summary["cpuUsPerUnit"] = median(cpu)
    if all(r.get("peakRssMb") is not None for r in runs):
        summary["peakRssMb"] = median([r["peakRssMb"] for r in runs])
        summary["baselineRssMb"] = median([r.get("baselineRssMb", 0.0) for r in runs])
    withLevels = sorted((r for r in runs if r.get("levels")), key=lambda r: r["rate"])
    if withLevels:
        # Open loop: the levels of the run with the median maximum.
        summary["levels"] = withLevels[len(withLevels) // 2]["levels"]
    withSweep = sorted((r for r in runs if r.get("sweep")), key=lambda r: r["rate"])
    if withSweep:
        # Connection sweep: the points of the run with the median best rate.
        summary["sweep"] = withSweep[len(withSweep) // 2]["sweep"]
    if any("onStandbys" in r for r in runs):
        # The replicas workloads: the share of reads that ran on a standby.
        summary["onStandbys"] = sum(r.get("onStandbys", 0) for r in runs) / max(
            1, sum(r["count"] for r in runs)
        )
    reads = [r["readMs"] for r in runs if r.get("readMs")]
    if reads:
        # The replicas workload: one read right after each write.
        summary["readMs"] = {
            "p50": median([x["p50"] for x in reads]),
            "p99": median([x["p99"] for x in reads]),
        }
        summary["stale"] = sum(r.get("stale", 0) for r in runs)
    if any("overhead" in r for r in runs):
        # Observability overhead: instructions per call per mode.
        from bench.measure_overhead import summariseRuns

        summary["overhead"] = summariseRuns([r["overhead"] for r in runs])
    lags = [r["lag"] for r in runs if r.get("lag")]
    if lags:
        summary["lag"] = {
            "p50Ms": median([x["p50Ms"] for x in lags]),
            "p99Ms": median([x["p99Ms"] for x in lags]),
            "p99WorstMs": max(x["p99Ms"] for x in lags),
            "maxMs": max(x["maxMs"] for x in lags),
            "samples": median([x["samples"] for x in lags]),
        }
        nets = [x["p99NetMs"] for x in lags if "p99NetMs" in x]
        if len(nets) == len(lags):
            # Net of the loop thread's wait for a CPU (Linux only).
            summary["lag"]["p99NetMs"] = median(nets)
        if all("over5Ms" in x for x in lags):
            summary["lag"]["over5Ms"] = median([x["over5Ms"] for x in lags])
        if all("gcFull" in x for x in lags):
            summary["lag"]["gcFull"] = median([x["gcFull"] for x in lags])
            summary["lag"]["gcFullMaxMs"] = max(x["gcFullMaxMs"] for x in lags)
    return summary


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """
    Per workload: each variant's medians, and its ratio (rate / rate) to
    the workload's named reference peer in the same run.
    """
    out: dict[str, Any] = {}
    for workload in WORKLOADS:
        names = [n for n in runs if runs[n] and BY_NAME[n].workload == workload.name]
        if not names:
            continue
        variants = {n: summariseVariant(runs[n]) for n in names}
        ref = variants.get(workload.reference)
        for v in variants.values():
            v["ratio"] = v["rate"] / ref["rate"] if ref and ref["rate"] else None
        out[workload.name] = {"reference": workload.reference, "variants": variants}
    return out


def formatTable(summary: dict[str, Any]) -> str:
    """
    A compact plain-text table for the terminal.
    """
    lines = []
    for workload in WORKLOADS:
        block = summary.get(workload.name)
        if not block:
            continue
        lines.append(f"\n{workload.title} (ratio vs {block['reference']})")
        for name, v in block["variants"].items():
            ratio = f"{v['ratio']:.2f}x" if v["ratio"] is not None else "-"
            lag = v.get("lag")
            lagText = (
                f" lag p50/p99 {lag['p50Ms']:.1f}/{lag['p99Ms']:.1f} ms" if lag else ""
            )
            growth = rssGrowthMb(v)
            rss = f" rss {v['peakRssMb']:.0f} MB" if "peakRssMb" in v else ""
            rss += f" (+{growth:.1f})" if growth is not None else ""
            if "onStandbys" in v:
                lagText += f" on standbys {v['onStandbys']:.0%}"
            read = v.get("readMs")
            if read:
                lagText += (
                    f" read after write p50/p99 {read['p50']:.1f}/{read['p99']:.1f}"
                    f" ms, {v['stale']} stale"
                )
            if "overhead" in v:
                from bench.measure_overhead import describe

                lagText += f" {describe(v['overhead'])}"
            if workload.name == "idle":  # only its lag means anything
                lines.append(f"  {name:28s} {v['seconds']:.1f} s{lagText}")
                continue
            lines.append(
                f"  {name:28s} {v['rate']:>12,.0f} {workload.unit}/s "
                f"{v['seconds']:8.2f} s {ratio:>7s}{rss}{lagText}"
            )
    return "\n".join(lines)
