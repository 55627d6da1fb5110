"""The registry: every workload, every variant, and which peer ratios use."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """
    A family of variants measured against each other in the same run.

    @ivar reference: the named peer every ratio in this workload is against.
    @ivar unit: what C{rate} counts per second (ops, rows, calls ...).
    """

    name: str
    title: str
    unit: str
    reference: str


@dataclass(frozen=True)
class Variant:
    """
    One way of doing a workload, run in its own child process.

    @ivar target: C{"module:function"} taking a L{BenchConfig}, returning the
        result record.
    @ivar needs: C{"sasync"}/C{"asynqueue"} if it needs our own code.
    @ivar loop: C{"reactor"}, C{"asyncio"} or C{"none"}: which lag it reports.
    @ivar connections: C{"1"} for sequential variants, C{"N"} for pooled.
    @ivar processes: how many processes do the work; only single-process
        peers count as a workload's best peer.
    """

    name: str
    workload: str
    target: str
    label: str
    loop: str = "none"
    connections: str = "N"
    needs: str | None = None
    processes: int = 1


WORKLOADS = [
    Workload("orm", "1. ORM mixed workload (article)", "ops", "orm-sync"),
    Workload("sql", "2. SQL-level mixed workload", "ops", "sql-adbapi"),
    Workload("stream", "3. Streaming rows", "rows", "stream-psycopg2-named"),
    Workload(
        "dispatch",
        "Micro: thread dispatch of a no-op",
        "calls",
        "dispatch-deferToThread",
    ),
    Workload(
        "iterate",
        "Micro: iterator to a consumer",
        "items",
        "iterate-deferToThread-list",
    ),
    Workload("idle", "Noise floor: an idle reactor", "s", "idle-reactor"),
    Workload(
        "select1", "Micro: sequential SELECT 1 transactions", "txns", "select1-adbapi"
    ),
    Workload(
        "overhead",
        "Observability overhead: CPU instructions per call (callgrind)",
        "calls",
        "overhead-callgrind",
    ),
    Workload(
        "openloop",
        "Open loop: latency at fixed arrival rates (SQL workload)",
        "ops",
        "openloop-adbapi",
    ),
    Workload(
        "connections",
        "Scaling: the SQL workload on 1 to 32 connections",
        "ops",
        "connections-adbapi",
    ),
    Workload(
        "replicas",
        "Replicas: read-only calls with 0, 1 and 2 standbys",
        "reads",
        "replicas-reads-primary",
    ),
    Workload(
        "replicas-consistency",
        "Replicas: a read right after a write, session against eventual",
        "pairs",
        "replicas-after-write-eventual",
    ),
]

_O, _S, _T, _M = (
    "bench.orm_peers",
    "bench.sql_peers",
    "bench.stream_peers",
    "bench.micro_peers",
)
_SA, _AQ = "bench.sasync_variants", "bench.asynqueue_variants"
_OB = "bench.observability_variants"
_OL = "bench.openloop"
_SW = "bench.sweep"

VARIANTS = [
    Variant(
        "orm-sync",
        "orm",
        f"{_O}:ormSync",
        "sync SQLAlchemy + psycopg2, sequential",
        connections="1",
    ),
    Variant(
        "orm-asyncio-tasks",
        "orm",
        f"{_O}:ormAsyncioTasks",
        "SQLAlchemy asyncio + asyncpg, all ops as tasks",
        loop="asyncio",
    ),
    Variant(
        "orm-asyncio-chunked",
        "orm",
        f"{_O}:ormAsyncioChunked",
        "SQLAlchemy asyncio + asyncpg, chunks of 40",
        loop="asyncio",
    ),
    Variant(
        "orm-twisted-threadpool",
        "orm",
        f"{_O}:ormThreadPool",
        "Twisted deferToThreadPool + sync ORM",
        loop="reactor",
    ),
    Variant(
        "orm-sasync",
        "orm",
        f"{_SA}:ormSasync",
        "sAsync @transact + self.session",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "orm-sasync-metrics",
        "orm",
        f"{_OB}:ormSasyncMetrics",
        "sAsync @transact + self.session, Prometheus collector registered",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "orm-sasync-tracing",
        "orm",
        f"{_OB}:ormSasyncTracing",
        "sAsync @transact + self.session, OpenTelemetry no-op provider",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "orm-sasync-nogate",
        "orm",
        f"{_SA}:ormSasyncNoGate",
        "sAsync @transact + self.session, no writer gate (writers=0)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "orm-sasync-readcommitted",
        "orm",
        f"{_SA}:ormSasyncReadCommitted",
        "sAsync @transact + self.session, READ COMMITTED (opt-out)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "orm-sasync-split",
        "orm",
        f"{_SA}:ormSasyncSplit",
        "sAsync, reads and writes in separate @transact methods",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "orm-sasync-tuned",
        "orm",
        f"{_SA}:ormSasyncTuned",
        "sAsync @transact + self.session, docs/latency.md's settings applied",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "orm-sasync-processes",
        "orm",
        "bench.multicore_variant:ormSasyncProcesses",
        "sAsync @transact + self.session, processes=2 (2 connections each)",
        loop="reactor",
        connections="2x2",
        needs="sasync",
        processes=2,
    ),
    Variant(
        "orm-sasync-processes-readcommitted",
        "orm",
        "bench.multicore_variant:ormSasyncProcessesReadCommitted",
        "sAsync @transact + self.session, processes=2 (2 connections each),"
        " READ COMMITTED (as the peers)",
        loop="reactor",
        connections="2x2",
        needs="sasync",
        processes=2,
    ),
    Variant(
        "orm-sync-2processes",
        "orm",
        "bench.multicore_variant:ormSyncProcesses",
        "sync SQLAlchemy, plan split over 2 processes (2-core ceiling)",
        connections="2x1",
        processes=2,
    ),
    Variant(
        "sql-psycopg2",
        "sql",
        f"{_S}:sqlPsycopg2",
        "psycopg2, sequential",
        connections="1",
    ),
    Variant(
        "sql-adbapi",
        "sql",
        f"{_S}:sqlAdbapi",
        "twisted.enterprise.adbapi (psycopg2)",
        loop="reactor",
    ),
    Variant(
        "sql-txpostgres",
        "sql",
        f"{_S}:sqlTxpostgres",
        "txpostgres ConnectionPool",
        loop="reactor",
    ),
    Variant(
        "sql-asyncpg",
        "sql",
        f"{_S}:sqlAsyncpg",
        "asyncpg pool (asyncio)",
        loop="asyncio",
    ),
    Variant(
        "sql-twisted-threadpool",
        "sql",
        f"{_S}:sqlThreadPool",
        "Twisted deferToThreadPool + SQLAlchemy Core",
        loop="reactor",
    ),
    Variant(
        "sql-pgbench",
        "sql",
        "bench.pgbench:sqlPgbench",
        "pgbench, same statements (server ceiling)",
    ),
    Variant(
        "sql-sasync",
        "sql",
        f"{_SA}:sqlSasync",
        "sAsync @transact + self.conn",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "sql-sasync-dbapi",
        "sql",
        f"{_SA}:sqlSasyncDbapi",
        "sAsync @transact + the raw DB-API cursor (what adbapi runs)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "sql-sasync-dbapi-readcommitted",
        "sql",
        f"{_SA}:sqlSasyncDbapiReadCommitted",
        "sAsync @transact + the raw DB-API cursor, READ COMMITTED (as adbapi)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "sql-sasync-processes",
        "sql",
        "bench.multicore_variant:sqlSasyncProcesses",
        "sAsync @transact + self.conn, processes=2 (4 connections each)",
        loop="reactor",
        connections="2x4",
        needs="sasync",
        processes=2,
    ),
    Variant(
        "sql-sasync-processes-readcommitted",
        "sql",
        "bench.multicore_variant:sqlSasyncProcessesReadCommitted",
        "sAsync @transact + self.conn, processes=2 (4 connections each),"
        " READ COMMITTED (as adbapi)",
        loop="reactor",
        connections="2x4",
        needs="sasync",
        processes=2,
    ),
    Variant(
        "sql-sasync-split",
        "sql",
        f"{_SA}:sqlSasyncSplit",
        "sAsync, reads and writes in separate @transact methods",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "sql-sasync-nogate",
        "sql",
        f"{_SA}:sqlSasyncNoGate",
        "sAsync @transact + self.conn, no writer gate (writers=0)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "sql-sasync-readcommitted",
        "sql",
        f"{_SA}:sqlSasyncReadCommitted",
        "sAsync @transact + self.conn, READ COMMITTED (opt-out)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "sql-sasync-typed-readcommitted",
        "sql",
        f"{_SA}:sqlSasyncTypedReadCommitted",
        "as -readcommitted, the SELECTs' columns declared (text().columns())",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "sql-sasync-driversql-readcommitted",
        "sql",
        f"{_SA}:sqlSasyncDriverReadCommitted",
        "as -readcommitted, through self.conn.exec_driver_sql (no compiling)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "stream-psycopg2-named",
        "stream",
        f"{_T}:streamPsycopg2",
        "psycopg2 named cursor",
        connections="1",
    ),
    Variant(
        "stream-asyncpg-cursor",
        "stream",
        f"{_T}:streamAsyncpg",
        "asyncpg cursor",
        loop="asyncio",
        connections="1",
    ),
    Variant(
        "stream-adbapi-runQuery",
        "stream",
        f"{_T}:streamAdbapi",
        "adbapi runQuery (whole list)",
        loop="reactor",
        connections="1",
    ),
    Variant(
        "stream-thread-psycopg2",
        "stream",
        f"{_T}:streamThreadPsycopg2",
        "psycopg2 named cursor in deferToThread, counted there",
        loop="reactor",
        connections="1",
    ),
    Variant(
        "stream-thread-sqlalchemy",
        "stream",
        f"{_T}:streamThreadSqlalchemy",
        "SQLAlchemy Core stream_results in deferToThread, counted there",
        loop="reactor",
        connections="1",
    ),
    Variant(
        "stream-sasync-deferator",
        "stream",
        f"{_SA}:streamSasyncDeferator",
        "sAsync Deferator (async for)",
        loop="reactor",
        connections="1",
        needs="sasync",
    ),
    Variant(
        "stream-sasync-consumer",
        "stream",
        f"{_SA}:streamSasyncConsumer",
        "sAsync consumer=",
        loop="reactor",
        connections="1",
        needs="sasync",
    ),
    Variant(
        "dispatch-deferToThread",
        "dispatch",
        f"{_M}:dispatchDeferToThread",
        "threads.deferToThread",
        loop="reactor",
        connections="-",
    ),
    Variant(
        "dispatch-threadqueue",
        "dispatch",
        f"{_AQ}:dispatchThreadQueue",
        "asynqueue ThreadQueue.call",
        loop="reactor",
        connections="-",
        needs="asynqueue",
    ),
    Variant(
        "iterate-deferToThread-list",
        "iterate",
        f"{_M}:iterateDeferToThreadList",
        "deferToThread(list) then write each",
        loop="reactor",
        connections="-",
    ),
    Variant(
        "iterate-asynqueue-consumer",
        "iterate",
        f"{_AQ}:iterateThreadQueueConsumer",
        "asynqueue call(consumer=)",
        loop="reactor",
        connections="-",
        needs="asynqueue",
    ),
    Variant(
        "idle-reactor",
        "idle",
        f"{_M}:idleReactor",
        "lag probe alone (noise floor)",
        loop="reactor",
        connections="-",
    ),
    Variant(
        "select1-psycopg2",
        "select1",
        f"{_M}:select1Psycopg2",
        "psycopg2 directly (no Twisted)",
        connections="1",
    ),
    Variant(
        "select1-adbapi",
        "select1",
        f"{_M}:select1Adbapi",
        "adbapi runQuery",
        loop="reactor",
        connections="1",
    ),
    Variant(
        "select1-sasync",
        "select1",
        f"{_SA}:select1Sasync",
        "sAsync @transact",
        loop="reactor",
        connections="1",
        needs="sasync",
    ),
    Variant(
        "select1-sasync-metrics",
        "select1",
        f"{_OB}:select1SasyncMetrics",
        "sAsync @transact, Prometheus collector registered",
        loop="reactor",
        connections="1",
        needs="sasync",
    ),
    Variant(
        "select1-sasync-tracing",
        "select1",
        f"{_OB}:select1SasyncTracing",
        "sAsync @transact, OpenTelemetry no-op provider",
        loop="reactor",
        connections="1",
        needs="sasync",
    ),
    Variant(
        "overhead-callgrind",
        "overhead",
        "bench.measure_overhead:overheadCallgrind",
        "sAsync SELECT 1 and ORM calls in each observability mode, callgrind",
        connections="1",
        needs="sasync",
    ),
    Variant(
        "openloop-adbapi",
        "openloop",
        f"{_OL}:openAdbapi",
        "twisted.enterprise.adbapi (psycopg2)",
        loop="reactor",
    ),
    Variant(
        "openloop-asyncpg",
        "openloop",
        f"{_OL}:openAsyncpg",
        "asyncpg pool (asyncio)",
        loop="asyncio",
    ),
    Variant(
        "openloop-sasync",
        "openloop",
        f"{_OL}:openSasync",
        "sAsync @transact + self.conn, maxPending 4 per connection",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "connections-adbapi",
        "connections",
        f"{_SW}:sweepAdbapi",
        "twisted.enterprise.adbapi (psycopg2)",
        connections="1-32",
    ),
    Variant(
        "connections-sasync",
        "connections",
        f"{_SW}:sweepSasync",
        "sAsync @transact + self.conn (SERIALIZABLE)",
        connections="1-32",
        needs="sasync",
    ),
    Variant(
        "connections-sasync-readcommitted",
        "connections",
        f"{_SW}:sweepSasyncReadCommitted",
        "sAsync @transact + self.conn, READ COMMITTED (opt-out)",
        connections="1-32",
        needs="sasync",
    ),
]

_R = "bench.replicas"
VARIANTS += [
    Variant(
        "replicas-reads-primary",
        "replicas",
        f"{_R}:readsPrimaryOnly",
        "sAsync read-only calls, no standby (all on the primary)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "replicas-reads-1standby",
        "replicas",
        f"{_R}:readsOneStandby",
        "sAsync read-only calls, replicas=[1 standby], eventual",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "replicas-reads-2standbys",
        "replicas",
        f"{_R}:readsTwoStandbys",
        "sAsync read-only calls, replicas=[2 standbys], eventual",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "replicas-after-write-session",
        "replicas-consistency",
        f"{_R}:readAfterWriteSession",
        "write then read, one pair at a time, 2 standbys, session",
        loop="reactor",
        connections="N",
        needs="sasync",
    ),
    Variant(
        "replicas-after-write-eventual",
        "replicas-consistency",
        f"{_R}:readAfterWriteEventual",
        "write then read, one pair at a time, 2 standbys, eventual",
        loop="reactor",
        connections="N",
        needs="sasync",
    ),
]

# How cost grows (issue 21): transaction size, and memory against result size.
WORKLOADS += [
    Workload(
        "txsize",
        "Scaling: transactions of 1, 10 and 100 INSERTs",
        "stmts",
        "txsize-adbapi",
    ),
    Workload(
        "streammemory",
        "Scaling: memory against rows streamed (1k to 10 x --rows)",
        "rows",
        "streammemory-psycopg2-named",
    ),
]
_TX, _SM = "bench.txsize", "bench.streammemory"
VARIANTS += [
    Variant(
        "txsize-adbapi",
        "txsize",
        f"{_TX}:txsizeAdbapi",
        "twisted.enterprise.adbapi runInteraction (psycopg2)",
        loop="reactor",
    ),
    Variant(
        "txsize-sasync",
        "txsize",
        f"{_TX}:txsizeSasync",
        "sAsync @transact + self.conn (SERIALIZABLE)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "txsize-sasync-readcommitted",
        "txsize",
        f"{_TX}:txsizeSasyncReadCommitted",
        "sAsync @transact + self.conn, READ COMMITTED (opt-out)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "txsize-sasync-dbapi",
        "txsize",
        f"{_TX}:txsizeSasyncDbapi",
        "sAsync @transact + the raw DB-API cursor (SERIALIZABLE)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "txsize-sasync-dbapi-readcommitted",
        "txsize",
        f"{_TX}:txsizeSasyncDbapiReadCommitted",
        "sAsync @transact + the raw DB-API cursor, READ COMMITTED (as adbapi)",
        loop="reactor",
        needs="sasync",
    ),
    Variant(
        "streammemory-psycopg2-named",
        "streammemory",
        f"{_SM}:memoryPsycopg2",
        "psycopg2 named cursor, a process per size",
        connections="1",
    ),
    Variant(
        "streammemory-sasync-deferator",
        "streammemory",
        f"{_SM}:memorySasyncDeferator",
        "sAsync Deferator (async for), a process per size",
        loop="reactor",
        connections="1",
        needs="sasync",
    ),
    Variant(
        "streammemory-sasync-consumer",
        "streammemory",
        f"{_SM}:memorySasyncConsumer",
        "sAsync consumer=, a process per size",
        loop="reactor",
        connections="1",
        needs="sasync",
    ),
]

BY_NAME = {v.name: v for v in VARIANTS}
WORKLOAD_BY_NAME = {w.name: w for w in WORKLOADS}


def select(only: str | None) -> list[Variant]:
    """
    The variants named by C{--only}: comma-separated workload or variant
    names or shell patterns (C{orm,stream-*}); all of them for None.
    """
    if not only:
        return list(VARIANTS)
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    chosen = [
        v
        for v in VARIANTS
        if any(
            fnmatch.fnmatchcase(v.name, p) or fnmatch.fnmatchcase(v.workload, p)
            for p in patterns
        )
    ]
    if not chosen:
        raise ValueError(f"--only {only!r} matches no workload or variant")
    return chosen
