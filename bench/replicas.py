"""
The C{replicas} workload (issue 16): a primary and two hot standbys of the
benchmark's own, started once for the workload by the runner with the
replica tests' fixture (L{tests.replicas.cluster}: initdb and
C{pg_basebackup -R} on free ports, no replay delay here), and:

  - read throughput (read-only transactions, C{--concurrency} connections
    per server, every read in flight at once) with 0, 1 and 2 standbys;
  - the latency of a read made right after a write, one pair at a time,
    with session consistency (the read waits until a standby has replayed
    the write, or runs on the primary) against eventual (any standby),
    with p50/p99 and how many eventual reads were stale.

All the servers share this machine's cores: don't expect reads to scale
with standbys here (see C{docs/scaling.md} for the model).
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

import sqlalchemy as SA
from sqlalchemy.pool import NullPool

from bench.config import BenchConfig
from bench.measure import percentile

#: Rows of the table the reads look up.
KEYS = 10_000


class Servers:
    """
    The primary and two standbys, and the benchmark database on them.
    """

    def __init__(self) -> None:
        # Only when the workload runs: the fixture needs the PostgreSQL
        # server binaries.
        from tests.replicas.cluster import ReplicatedCluster

        self.cluster = ReplicatedCluster(applyDelaysMS=(0, 0))
        try:
            url, standbys = self.cluster.createDatabase()
            engine = SA.create_engine(url, poolclass=NullPool)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(
                        "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)"
                    )
                    conn.exec_driver_sql(
                        f"INSERT INTO kv SELECT g, 0 FROM generate_series(1, {KEYS}) g"
                    )
            finally:
                engine.dispose()
            self.cluster.waitForReplay()
        except BaseException:
            self.cluster.close()
            raise
        #: The primary's URL, then each standby's.
        self.urls = [url, *standbys]

    def close(self) -> None:
        """
        Stop and remove the servers.
        """
        self.cluster.close()


def startServers(config: BenchConfig) -> tuple[BenchConfig, Servers | None, str]:
    """
    In the runner: the servers, and C{config} naming them; or, when they
    can't be made here, C{None} and the reason.
    """
    from tests.reliability.cluster import NoCluster

    try:
        servers = Servers()
    except NoCluster as e:
        return config, None, str(e)
    return replace(config, replicaURLs=servers.urls), servers, ""


def _broker(config: BenchConfig, standbys: int, **kw: Any) -> Any:
    from sasync import AccessBroker, transact

    class KeyValues(AccessBroker):
        @transact(readOnly=True)
        def read(self, k: int) -> int:
            query = SA.text("SELECT v FROM kv WHERE k = :k")
            return int(self.conn.execute(query, {"k": k}).scalar_one())

        @transact
        def write(self, k: int, v: int) -> None:
            query = SA.text("UPDATE kv SET v = :v WHERE k = :k")
            self.conn.execute(query, {"k": k, "v": v})

    primary, *others = config.replicaURLs
    if standbys:
        kw["replicas"] = others[:standbys]
    else:
        kw.pop("consistency", None)  # (A replica option.)
    return KeyValues(primary, connections=config.concurrency, **kw)


def _onStandbys(broker: Any) -> int:
    # How many read-only calls were sent to a standby (private, as above).
    replicaSet = broker._replicas
    return 0 if replicaSet is None else sum(r.calls for r in replicaSet.replicas)


async def _healthy(broker: Any, standbys: int) -> None:
    # The replicas are probed in the background: wait for the first probes.
    # (No public view of their health yet: stats().servers lists only the
    # primary so far.)
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    replicaSet = broker._replicas
    while standbys and sum(r.healthy for r in replicaSet.replicas) < standbys:
        await deferLater(reactor, 0.05, lambda: None)


def _reads(standbys: int) -> Any:
    def variant(config: BenchConfig) -> dict[str, Any]:
        from twisted.internet.defer import gatherResults

        from bench.harness import runTwisted, timedInReactor

        keys = random.Random(config.seed).choices(range(1, KEYS + 1), k=config.selects)

        async def main(reactor: Any) -> dict[str, Any]:
            broker = _broker(config, standbys, consistency="eventual")
            await broker.waitUntilRunning()
            await _healthy(broker, standbys)
            await gatherResults([broker.read(k) for k in keys[: config.concurrency]])
            before = _onStandbys(broker)
            try:
                result = await timedInReactor(
                    reactor,
                    "reads",
                    len(keys),
                    lambda: gatherResults([broker.read(k) for k in keys]),
                )
                result["onStandbys"] = _onStandbys(broker) - before
                return result
            finally:
                await broker.shutdown()

        return runTwisted(main)

    return variant


readsPrimaryOnly = _reads(0)
readsOneStandby = _reads(1)
readsTwoStandbys = _reads(2)


def _readAfterWrite(consistency: str) -> Any:
    def variant(config: BenchConfig) -> dict[str, Any]:
        from bench.harness import runTwisted
        from bench.measure import Measurement

        pairs = max(20, config.selects // 10)

        async def main(reactor: Any) -> dict[str, Any]:
            broker = _broker(config, 2, consistency=consistency)
            await broker.waitUntilRunning()
            await _healthy(broker, 2)
            latencies: list[float] = []
            stale = 0
            measurement = Measurement("pairs")
            before = _onStandbys(broker)
            measurement.start()
            try:
                for i in range(pairs):
                    k = i % KEYS + 1
                    await broker.write(k, i + 1)
                    started = time.perf_counter()
                    value = await broker.read(k)
                    latencies.append(time.perf_counter() - started)
                    stale += value != i + 1
                onStandbys = _onStandbys(broker) - before
            finally:
                await broker.shutdown()
            return measurement.stop(
                pairs,
                onStandbys=onStandbys,
                readMs={
                    "p50": round(percentile(latencies, 50) * 1000, 3),
                    "p99": round(percentile(latencies, 99) * 1000, 3),
                },
                stale=stale,
            )

        return runTwisted(main)

    return variant


readAfterWriteSession = _readAfterWrite("session")
readAfterWriteEventual = _readAfterWrite("eventual")
