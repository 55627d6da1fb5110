"""
The AsynQueue micro benchmarks (issue 3), written only against the public
API in DESIGN.md (C{from asynqueue import ThreadQueue}). Imported only in a
child process, and only when L{bench.availability} found it importable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from asynqueue import ThreadQueue
from bench.config import BenchConfig
from bench.consumer import CountingConsumer
from bench.harness import runTwisted, timedInReactor
from bench.micro_peers import noop


def countTo(n: int) -> Iterator[int]:
    """
    The task whose iterator result feeds the consumer.
    """
    return iter(range(n))


def dispatchThreadQueue(config: BenchConfig) -> dict[str, Any]:
    """
    C{ThreadQueue(N).call(noop)} x calls, all at once (vs deferToThread).
    """
    from twisted.internet.defer import gatherResults

    async def main(reactor: Any) -> dict[str, Any]:
        queue = ThreadQueue(config.concurrency)

        async def burst(n: int) -> None:
            await gatherResults([queue.call(noop) for _ in range(n)])

        await burst(1000)
        try:
            return await timedInReactor(
                reactor, "calls", config.calls, lambda: burst(config.calls)
            )
        finally:
            await queue.shutdown()

    return runTwisted(main)


def iterateThreadQueueConsumer(config: BenchConfig) -> dict[str, Any]:
    """
    A C{config.items}-item iterator through C{call(..., consumer=)}.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        queue = ThreadQueue(1)
        await queue.call(noop)
        consumer = CountingConsumer()

        async def work() -> None:
            await queue.call(countTo, config.items, consumer=consumer)

        try:
            result = await timedInReactor(reactor, "items", config.items, work)
        finally:
            await queue.shutdown()
        result["counted"] = consumer.items
        return result

    return runTwisted(main)
