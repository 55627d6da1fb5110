"""Timing, memory and the little statistics the runner and report share."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any


def peakRssMb() -> float:
    """
    This process's peak resident set size so far, in MiB.

    Linux's C{VmHWM}, not C{ru_maxrss}: the latter survives C{exec}, so a
    child would report its parent's RSS at fork time if that was higher.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def currentRssMb() -> float:
    """
    This process's resident set size now, in MiB (from /proc, Linux only).
    """
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1048576.0


def _processCpu() -> float:
    # User + system seconds of this process, all its threads.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Measurement:
    """
    Wall time, CPU time and memory of one timed section; C{start}, then
    C{stop(count)}.
    """

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.began = 0.0
        self.cpuBegan = 0.0
        self.baselineRss = 0.0
        self.result: dict[str, Any] = {}

    def start(self) -> None:
        """
        Note RSS before the work (imports, pools) and start the clock.
        """
        self.baselineRss = currentRssMb()
        self.cpuBegan = _processCpu()
        self.began = time.perf_counter()

    def stop(self, count: int, **extra: Any) -> dict[str, Any]:
        """
        Stop the clock; C{count} units were done. Returns the result record.
        """
        seconds = time.perf_counter() - self.began
        cpu = _processCpu() - self.cpuBegan
        self.result = {
            "unit": self.unit,
            "count": count,
            "seconds": seconds,
            "rate": count / seconds if seconds > 0 else 0.0,
            # The variant's own process, every thread (not the server's):
            # unlike wall time, barely moved by what else the machine runs.
            "cpuUsPerUnit": 1e6 * cpu / count if count else 0.0,
            "baselineRssMb": round(self.baselineRss, 1),
            **extra,
        }
        return self.result


def rssGrowthMb(variant: dict[str, Any]) -> float | None:
    """
    What the measured work added to the variant's process: its median peak
    RSS less its median RSS before (after imports and connecting), in MiB;
    C{None} if its memory was not measured.
    """
    peak, before = variant.get("peakRssMb"), variant.get("baselineRssMb")
    if peak is None or before is None:
        return None
    return float(peak) - float(before)


def percentile(values: list[float], p: float) -> float:
    """
    The C{p}th percentile (0-100) of C{values}, nearest-rank; 0 if empty.
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    """
    The median, or 0 for no values.
    """
    return statistics.median(values) if values else 0.0
