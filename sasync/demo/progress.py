"""
A progress bar for the terminal: rows done, rows per second and time left.

On a terminal it redraws one line in place (at most C{rate} times a second);
written to a file or a pipe it prints a plain line every tenth of the way,
so logs of a run stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24


def formatDuration(seconds: float) -> str:
    """
    C{75} -> C{"1:15"}, C{3725} -> C{"1:02:05"}.
    """
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


class Progress:
    """
    Shows how an ingestion goes. Call L{update} as rows are done and
    L{finish} at the end.

    The fraction done comes from C{total} rows when known, or from what
    L{update} is told (for a file, the share of its bytes read).
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        label: str = "ingest",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        isTTY: bool | None = None,
        rate: float = 10.0,
        enabled: bool = True,
    ) -> None:
        """
        @param total: How many rows there will be, if known.
        @param stream: Where to draw; C{sys.stderr} by default.
        @param clock: Seconds, monotonic (tests pass a fake).
        @param isTTY: Whether to redraw in place; asks the stream by default.
        @param rate: At most this many redraws per second on a terminal.
        @param enabled: C{False} draws nothing at all.
        """
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.isTTY = self.stream.isatty() if isTTY is None else isTTY
        self.interval = 1.0 / rate
        self.enabled = enabled
        self.started = clock()
        self.done = 0
        self.fraction = 0.0
        self._lastDraw = -1.0
        self._lastTenth = 0
        self._width = 0

    @property
    def elapsed(self) -> float:
        """
        Seconds since the start.
        """
        return self.clock() - self.started

    @property
    def rowsPerSecond(self) -> float:
        """
        The mean rate so far.
        """
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """
        Seconds left at the mean rate so far, or C{None} if unknown yet.
        """
        if self.fraction <= 0 or self.fraction >= 1:
            return None if self.fraction <= 0 else 0.0
        return self.elapsed * (1 - self.fraction) / self.fraction

    def line(self) -> str:
        """
        The progress line as it would be drawn now.
        """
        filled = int(BAR_WIDTH * self.fraction)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "")
        eta = self.eta()
        etaText = formatDuration(eta) if eta is not None else "?"
        return (
            f"{self.label} [{bar}] {100 * self.fraction:5.1f}%  {count} rows"
            f"  {self.rowsPerSecond:,.0f} rows/s  ETA {etaText}"
        )

    def update(self, done: int, fraction: float | None = None) -> None:
        """
        Record that C{done} rows are done, and draw if it is time to.

        @param fraction: The share done, from 0 to 1, when there is no
            C{total} (or it should not be trusted).
        """
        self.done = done
        if fraction is not None:
            self.fraction = max(0.0, min(1.0, fraction))
        elif self.total:
            self.fraction = min(1.0, done / self.total)
        if not self.enabled:
            return
        if self.isTTY:
            now = self.clock()
            if now - self._lastDraw >= self.interval:
                self._lastDraw = now
                self._draw()
        else:
            tenth = int(self.fraction * 10)
            if tenth > self._lastTenth and tenth < 10:
                self._lastTenth = tenth
                self.stream.write(self.line() + "\n")
                self.stream.flush()

    def _draw(self) -> None:
        text = self.line()
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def finish(self, done: int | None = None, *, complete: bool = True) -> None:
        """
        Draw the last state and end the line.

        @param complete: C{False} when stopping early (the bar stays where
            it got to).
        """
        if done is not None:
            self.done = done
        if complete:
            self.fraction = 1.0
        if not self.enabled:
            return
        if self.isTTY:
            self._draw()
            self.stream.write("\n")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
