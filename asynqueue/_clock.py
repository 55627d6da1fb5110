"""
The reactor as a clock, for code whose clock is injected and resolved lazily.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


def reactorClock() -> IReactorTime:
    """
    The global reactor, imported only when asked for: code that takes a
    C{clock=} keyword (tests pass a C{twisted.internet.task.Clock}) calls
    this on first use, so that making the object installs no reactor.
    """
    from twisted.internet import reactor

    return reactor  # type: ignore[return-value]
