"""
Prometheus metrics of every live broker (extra C{sAsync[metrics]}):
register one L{PrometheusCollector} with a C{prometheus_client} registry::

    from prometheus_client import REGISTRY
    from sasync.metrics import PrometheusCollector

    REGISTRY.register(PrometheusCollector())

The metric families (see C{docs/observability.md}):

  - C{sasync_transactions_total{broker,method,outcome}}: calls ended, by
    outcome (C{committed}, C{failed}, C{cancelled}, C{timeout});
  - C{sasync_transaction_seconds{broker,method}}: histogram, from the
    moment a call first started in a worker to its result (retries and
    their waits included);
  - C{sasync_queue_wait_seconds{broker,method}}: histogram, from the call
    to its first start in a worker (a call that never started: to its end);
  - C{sasync_queued{broker}}, C{sasync_running{broker}}: gauges;
  - C{sasync_connections{database,state}}: gauge, C{state} one of
    C{idle}, C{busy}, C{held} (by an open row iteration);
  - C{sasync_retries_total{broker,reason}}, C{sasync_rows_streamed_total{broker}}.

The C{broker} label is the broker's class name (brokers of one class add
up); C{database} is the URL with its password hidden. Histogram buckets go
from 100 µs to 30 s (L{sasync._stats.BUCKETS}). Timings are taken only
while a collector exists; the counters always are.

Collecting reads the brokers' counters in the thread that scrapes: a few
dict reads, each safe under the GIL; a scrape may see one call counted in
one family and not yet in another.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as e:  # pragma: no cover (the extra is missing)
    raise ImportError(
        "sasync.metrics needs prometheus_client: pip install 'sAsync[metrics]'"
    ) from e

from ._stats import BUCKETS, CallStats, Histogram, liveStats


def _merged(histograms: list[Histogram]) -> Histogram:
    total = Histogram()
    for h in histograms:
        for i, n in enumerate(h.counts):
            total.counts[i] += n
        total.total += h.total
    return total


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    # Cumulative, as the exposition wants them.
    cumulative = 0
    out: list[tuple[str, float]] = []
    for bound, n in zip((*BUCKETS, float("inf")), h.counts, strict=True):
        cumulative += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return out


class PrometheusCollector:
    """
    A C{prometheus_client} custom collector exporting every live broker.
    Register it once (registering two would export everything twice).
    While it exists, brokers time their calls (queue wait, transaction
    time).
    """

    def __init__(self) -> None:
        CallStats.keepTimings(True)
        weakref.finalize(self, CallStats.keepTimings, False)

    def describe(self) -> list[Metric]:
        """
        The metric families, without samples (for the registry's checks).
        """
        return list(self._families([]))

    def collect(self) -> Iterator[Metric]:
        """
        The metric families, with a sample per broker (and per method,
        outcome, reason, database and state).
        """
        return self._families(liveStats())

    def _families(self, everyStats: list[CallStats]) -> Iterator[Metric]:
        byBroker: dict[str, list[CallStats]] = {}
        for stats in everyStats:
            byBroker.setdefault(stats.broker, []).append(stats)
        transactions = CounterMetricFamily(
            "sasync_transactions",
            "Transaction calls ended, by outcome",
            labels=["broker", "method", "outcome"],
        )
        transactionSeconds = HistogramMetricFamily(
            "sasync_transaction_seconds",
            "Seconds from a call's first start in a worker to its result",
            labels=["broker", "method"],
        )
        queueWait = HistogramMetricFamily(
            "sasync_queue_wait_seconds",
            "Seconds a call waited before it first started in a worker",
            labels=["broker", "method"],
        )
        queued = GaugeMetricFamily(
            "sasync_queued", "Transactions waiting for a connection", labels=["broker"]
        )
        running = GaugeMetricFamily(
            "sasync_running", "Transactions running", labels=["broker"]
        )
        retries = CounterMetricFamily(
            "sasync_retries",
            "Transactions run again, by reason",
            labels=["broker", "reason"],
        )
        rows = CounterMetricFamily(
            "sasync_rows_streamed",
            "Rows handed out by row iterations",
            labels=["broker"],
        )
        connections = GaugeMetricFamily(
            "sasync_connections",
            "Database connections by state (idle, busy, held by an iteration)",
            labels=["database", "state"],
        )
        databases: dict[str, Any] = {}
        for broker, group in sorted(byBroker.items()):
            outcomes: Counter[tuple[str, str]] = Counter()
            retried: Counter[str] = Counter()
            streamed = 0
            waits: dict[str, list[Histogram]] = {}
            times: dict[str, list[Histogram]] = {}
            queues: dict[int, Any] = {}
            for stats in group:
                # (C-level copies: the reactor thread may be counting.)
                outcomes.update(dict.copy(stats.outcomes))
                retried.update(dict.copy(stats.retried))
                streamed += stats.rowsStreamed
                for method, (waited, took) in list(stats.timings.items()):
                    waits.setdefault(method, []).append(waited)
                    times.setdefault(method, []).append(took)
                queues[id(stats.queue)] = stats
                databases.setdefault(stats.url, stats)
            for (method, outcome), n in sorted(outcomes.items()):
                transactions.add_metric([broker, method, outcome], n)
            for method, hs in sorted(waits.items()):
                h = _merged(hs)
                queueWait.add_metric([broker, method], _buckets(h), h.total)
            for method, hs in sorted(times.items()):
                h = _merged(hs)
                transactionSeconds.add_metric([broker, method], _buckets(h), h.total)
            snapshots = [s.snapshot() for s in queues.values()]
            queued.add_metric([broker], sum(s.queued for s in snapshots))
            running.add_metric([broker], sum(s.running for s in snapshots))
            for reason, n in sorted(retried.items()):
                retries.add_metric([broker, reason], n)
            rows.add_metric([broker], streamed)
        for database, stats in sorted(databases.items()):
            snapshot = stats.snapshot()
            held = snapshot.heldByIterations
            idle = snapshot.idleConnections
            connections.add_metric([database, "idle"], idle)
            busy = snapshot.connections - idle - held
            connections.add_metric([database, "busy"], busy)
            connections.add_metric([database, "held"], held)
        yield from (
            transactions,
            transactionSeconds,
            queueWait,
            queued,
            running,
            connections,
            retries,
            rows,
        )


__all__ = ["PrometheusCollector"]
