"""
Fixtures for the sasync tests: brokers that are shut down after each test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.defer import DeferredList

from sasync import AccessBroker
from tests.reactorthread import runInReactor


@pytest.fixture
def brokers() -> Iterator[Callable[..., Any]]:
    """
    A factory, C{brokers(cls, url, **kw)}, for brokers made in the reactor
    thread (inside an async test); each is shut down after the test.
    """
    made: list[AccessBroker] = []

    def make(cls: type[AccessBroker], *args: Any, **kw: Any) -> Any:
        broker = cls(*args, **kw)
        made.append(broker)
        return broker

    yield make
    if made:
        runInReactor(
            lambda: DeferredList([b.shutdown() for b in made], consumeErrors=True),
            timeout=60,
        )
