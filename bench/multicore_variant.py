"""
The multicore variant of workload 1: the sAsync broker with C{processes=2},
so that the ORM's Python work runs in two worker processes while the
parent's reactor only dispatches calls and receives results.

Imported only in a child process, and only when L{bench.availability}
found C{sasync} importable.
"""

from __future__ import annotations

from typing import Any

from bench.config import BenchConfig
from bench.harness import runTwisted, timedInReactor
from bench.sasync_variants import BenchBroker
from bench.workload import Op, opPlan

#: Worker processes: one per core of the 2-core machine the suite runs on.
PROCESSES = 2


async def _allAtOnce(broker: BenchBroker, ops: list[Op]) -> None:
    from twisted.internet.defer import gatherResults

    await gatherResults([broker.ormOp(op) for op in ops])


def ormSasyncProcesses(config: BenchConfig) -> dict[str, Any]:
    """
    Workload 1 through C{@transact} with C{self.session}, all ops at once,
    run by C{PROCESSES} worker processes sharing the peers' connections.
    """

    async def main(reactor: Any) -> dict[str, Any]:
        broker = BenchBroker(
            config.url("psycopg2"),
            processes=PROCESSES,
            connections=max(1, config.concurrency // PROCESSES),
        )
        await broker.waitUntilRunning()
        plan = opPlan(config.ops, config.seed)
        await _allAtOnce(broker, [None] * (2 * config.concurrency))
        try:
            return await timedInReactor(
                reactor, "ops", len(plan), lambda: _allAtOnce(broker, plan)
            )
        finally:
            await broker.shutdown()

    return runTwisted(main)
