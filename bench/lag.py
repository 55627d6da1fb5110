"""
Event-loop responsiveness: how late a 10 ms periodic call fires while a
variant runs. A blocked reactor (or loop) shows up as lag at p99.

Besides the lag itself, each probe records what it can of the causes that
are not the variant's: on Linux, how long the loop's thread waited for a
CPU (another process had it: the run queue's delay, from
C{/proc/thread-self/schedstat}), so that C{p99NetMs} is the lag net of it;
and the garbage collector's full (generation 2) collections while it ran,
which stop every thread of the process (C{gcFull}, C{gcFullMaxMs}).
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from typing import Any

from bench.measure import percentile

INTERVAL = 0.01


def lagStats(
    lags: list[float],
    netLags: list[float] | None = None,
    fullCollections: list[float] | None = None,
) -> dict[str, Any]:
    """
    Summarise lags (seconds) as milliseconds: p50, p99, max, sample count,
    and how many were over 5 ms (the target's bound: p99 of a short run
    rests on a handful of samples, this count on all of them);
    given C{netLags} (the same lags less the loop thread's wait for a CPU),
    their p99; given C{fullCollections} (the pauses of full collections,
    seconds), how many and the longest.
    """
    stats: dict[str, Any] = {
        "p50Ms": round(percentile(lags, 50) * 1000, 3),
        "p99Ms": round(percentile(lags, 99) * 1000, 3),
        "maxMs": round(max(lags, default=0.0) * 1000, 3),
        "samples": len(lags),
        "over5Ms": sum(1 for lag in lags if lag > 0.005),
    }
    if netLags is not None:
        stats["p99NetMs"] = round(percentile(netLags, 99) * 1000, 3)
    if fullCollections is not None:
        stats["gcFull"] = len(fullCollections)
        stats["gcFullMaxMs"] = round(max(fullCollections, default=0.0) * 1000, 3)
    return stats


class RunQueueWait:
    """
    Linux: the seconds the calling thread has waited for a CPU while it
    could run (C{/proc/thread-self/schedstat}, second field). Make it in
    the thread to watch. L{read} returns C{None} where that is not known.
    """

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def read(self) -> float | None:
        """
        The total so far, in seconds, or C{None}.
        """
        if self._fd is None:
            return None
        return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9

    def close(self) -> None:
        """
        Release the file.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FullCollections:
    """
    The pauses (seconds, wall clock) of the garbage collector's full
    collections from L{start} to L{stop}, in any thread.
    """

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began: dict[int, float] = {}

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        thread = threading.get_ident()
        if phase == "start":
            self._began[thread] = time.perf_counter()
        elif thread in self._began:
            self.pauses.append(time.perf_counter() - self._began.pop(thread))

    def start(self) -> None:
        """
        Start recording.
        """
        gc.callbacks.append(self._callback)

    def stop(self) -> list[float]:
        """
        Stop recording; return the pauses.
        """
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        return self.pauses


class _Causes:
    """
    What a probe records besides the lag: the loop thread's wait for a CPU
    between two ticks, and the full collections while it runs.
    """

    def __init__(self) -> None:
        self.netLags: list[float] = []
        self.collections = FullCollections()
        self._wait: RunQueueWait | None = None
        self._lastWait: float | None = None

    def start(self) -> None:
        # In the loop's thread.
        self._wait = RunQueueWait()
        self._lastWait = self._wait.read()
        self.collections.start()

    def tick(self, lag: float | None) -> None:
        # A tick, and its lag (None for the first): note the lag less the
        # wait for a CPU since the tick before.
        if self._wait is None:
            return
        wait = self._wait.read()
        if lag is not None and wait is not None and self._lastWait is not None:
            self.netLags.append(max(0.0, lag - (wait - self._lastWait)))
        self._lastWait = wait

    def stats(self, lags: list[float]) -> dict[str, Any]:
        pauses = self.collections.stop()
        if self._wait is not None:
            self._wait.close()
        known = self._lastWait is not None
        return lagStats(lags, self.netLags if known else None, pauses)


class ReactorLagProbe:
    """
    A Twisted C{LoopingCall} every 10 ms recording how late each call is.

    Lag is the time between two calls beyond the interval; a call that comes
    early (LoopingCall catching up on its schedule) counts as zero lag.
    """

    def __init__(self, reactor: Any) -> None:
        from twisted.internet.task import LoopingCall  # only Twisted variants

        self.lags: list[float] = []
        self.last = 0.0
        self.call = LoopingCall(self.tick)
        self.call.clock = reactor
        self._causes = _Causes()

    def tick(self) -> None:
        """
        One periodic call: record the lag since the previous one.
        """
        now = time.perf_counter()
        lag = None
        if self.last:
            lag = max(0.0, now - self.last - INTERVAL)
            self.lags.append(lag)
        self.last = now
        self._causes.tick(lag)

    def start(self) -> None:
        """
        Start probing (call in the reactor thread, reactor running).
        """
        self._causes.start()
        self.call.start(INTERVAL, now=True)

    def stop(self) -> dict[str, Any]:
        """
        Stop probing and return L{lagStats}.
        """
        if self.call.running:
            self.call.stop()
        return self._causes.stats(self.lags)


class AsyncioLagProbe:
    """
    The asyncio twin of L{ReactorLagProbe}: a task sleeping 10 ms in a loop.
    """

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task: asyncio.Task[None] | None = None
        self._causes = _Causes()

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(INTERVAL)
            lag = max(0.0, time.perf_counter() - before - INTERVAL)
            self.lags.append(lag)
            self._causes.tick(lag)

    def start(self) -> None:
        """
        Start probing (inside the running loop).
        """
        self._causes.start()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> dict[str, Any]:
        """
        Stop probing and return L{lagStats}.
        """
        if self.task is not None:
            self.task.cancel()
        return self._causes.stats(self.lags)
