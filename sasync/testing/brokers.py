"""
The brokers a test made, shut down together after it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList

from ..broker import AccessBroker

B = TypeVar("B", bound=AccessBroker)

#: Seconds a broker's leftover work may run on at the end of a test before
#: it is cancelled.
SHUTDOWN_TIMEOUT = 10.0


class Brokers:
    """
    Makes brokers for one test and shuts them all down after it. Reactor
    thread: brokers are made and shut down there.
    """

    def __init__(self) -> None:
        self._made: list[AccessBroker] = []

    def __call__(self, cls: type[B], *args: Any, **kw: Any) -> B:
        """
        Make a broker, C{cls(*args, **kw)}, to be shut down after the test.

        @return: The broker.
        """
        return self.add(cls(*args, **kw))

    def add(self, broker: B) -> B:
        """
        Shut down C{broker} after the test too.

        @return: C{broker}.
        """
        self._made.append(broker)
        return broker

    def __len__(self) -> int:
        return len(self._made)

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> Deferred[None]:
        """
        Shut down every broker made or added, all at once.

        @param timeout: Seconds each broker's accepted work may still run;
            then it is cancelled (see L{AccessBroker.shutdown}).
        @return: A L{Deferred<twisted.internet.defer.Deferred>} firing with C{None}
            when all have stopped; a failed shutdown is ignored (the test's
            own outcome matters).
        """
        made, self._made = self._made, []
        shutdowns = [broker.shutdown(timeout=timeout) for broker in made]
        return DeferredList(shutdowns, consumeErrors=True).addCallback(lambda _: None)
