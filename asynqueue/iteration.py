"""
The original AsynQueue's C{asynqueue.iteration} module, deprecated: its
names now come from L{asynqueue} itself (C{from asynqueue import
Deferator}). Each name looked up here warns and gives the real object; see
C{docs/originals.md}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from .moved import deprecated, movedNames

__getattr__ = movedNames(
    __name__,
    {
        name: f"asynqueue.{name}"
        for name in (
            "Delay",
            "Deferator",
            "Prefetcherator",
            "ListConsumer",
            "IterationProducer",
            "iteratorToProducer",
        )
    },
    {
        "isIterator": "a queue call that returns an iterator gives a"
        " Deferator by itself; to test a value, use"
        " isinstance(x, collections.abc.Iterator)",
    },
)


def deferToDelay(delay: float) -> Deferred[None]:
    """
    Deprecated: C{asynqueue.Delay()(delay)}, a Deferred firing after
    C{delay} seconds.
    """
    from .delay import Delay

    deprecated("asynqueue.iteration.deferToDelay(delay)", "asynqueue.Delay()(delay)")
    return Delay()(delay)
