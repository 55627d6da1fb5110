"""
The progress bar: what it shows, how often it draws, on a terminal or not.
"""

from __future__ import annotations

import io

from sasync.demo.progress import Progress, formatDuration


class FakeClock:
    """
    Seconds that pass only when told to.
    """

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_formatDuration() -> None:
    """
    Minutes and seconds, with hours when needed.
    """
    assert formatDuration(0) == "0:00"
    assert formatDuration(75) == "1:15"
    assert formatDuration(3725) == "1:02:05"
    assert formatDuration(-3) == "0:00"


def test_rateAndETA() -> None:
    """
    Rows per second are the mean so far; the time left follows from the
    share done.
    """
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(1000, stream=stream, clock=clock, isTTY=True)
    clock.now += 2.0
    progress.update(250)
    assert progress.rowsPerSecond == 125.0
    assert progress.eta() == 6.0
    line = progress.line()
    assert "25.0%" in line and "250/1,000 rows" in line
    assert "125 rows/s" in line and "ETA 0:06" in line


def test_terminalRedrawsInPlaceAtMostRate() -> None:
    """
    On a terminal the line is redrawn with a carriage return, at most
    C{rate} times a second, and ended with a newline by C{finish}.
    """
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(100, stream=stream, clock=clock, isTTY=True, rate=10)
    progress.update(10)
    progress.update(20)  # too soon: not drawn
    clock.now += 0.2
    progress.update(30)
    assert stream.getvalue().count("\r") == 2
    progress.finish(100)
    assert stream.getvalue().endswith("\n")
    assert "100.0%" in stream.getvalue().splitlines()[-1]


def test_pipePrintsTenths() -> None:
    """
    Written to a pipe or file, it prints a plain line each tenth of the way,
    and the last line at the end.
    """
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(1000, stream=stream, clock=clock, isTTY=False)
    for done in range(0, 1001, 10):
        clock.now += 0.01
        progress.update(done)
    progress.finish(1000)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10
    assert "\r" not in stream.getvalue()


def test_fractionWithoutTotalAndEarlyFinish() -> None:
    """
    Without a total, the share done comes from the caller (bytes read); an
    interrupted run finishes where it got to.
    """
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(None, stream=stream, clock=clock, isTTY=False)
    clock.now += 1
    progress.update(500, 0.5)
    assert progress.eta() == 1.0
    assert "500 rows" in progress.line()
    progress.finish(600, complete=False)
    assert progress.fraction == 0.5


def test_disabled() -> None:
    """
    A disabled bar draws nothing at all.
    """
    stream = io.StringIO()
    progress = Progress(10, stream=stream, isTTY=True, enabled=False)
    progress.update(5)
    progress.finish(10)
    assert stream.getvalue() == ""
