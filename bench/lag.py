"""
Event-loop responsiveness: how late a 10 ms periodic call fires while a
variant runs. A blocked reactor (or loop) shows up as lag at p99.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.measure import percentile

INTERVAL = 0.01


def lagStats(lags: list[float]) -> dict[str, Any]:
    """
    Summarise lags (seconds) as milliseconds: p50, p99, max, sample count.
    """
    return {
        "p50Ms": round(percentile(lags, 50) * 1000, 3),
        "p99Ms": round(percentile(lags, 99) * 1000, 3),
        "maxMs": round(max(lags, default=0.0) * 1000, 3),
        "samples": len(lags),
    }


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

    def tick(self) -> None:
        """
        One periodic call: record the lag since the previous one.
        """
        now = time.perf_counter()
        if self.last:
            self.lags.append(max(0.0, now - self.last - INTERVAL))
        self.last = now

    def start(self) -> None:
        """
        Start probing (call in the reactor thread, reactor running).
        """
        self.call.start(INTERVAL, now=True)

    def stop(self) -> dict[str, Any]:
        """
        Stop probing and return L{lagStats}.
        """
        if self.call.running:
            self.call.stop()
        return lagStats(self.lags)


class AsyncioLagProbe:
    """
    The asyncio twin of L{ReactorLagProbe}: a task sleeping 10 ms in a loop.
    """

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(INTERVAL)
            self.lags.append(max(0.0, time.perf_counter() - before - INTERVAL))

    def start(self) -> None:
        """
        Start probing (inside the running loop).
        """
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> dict[str, Any]:
        """
        Stop probing and return L{lagStats}.
        """
        if self.task is not None:
            self.task.cancel()
        return lagStats(self.lags)
