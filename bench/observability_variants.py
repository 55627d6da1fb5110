"""
The cost of observability (issue 17): the sAsync variants of the ORM
workload and of SELECT 1, with a L{sasync.metrics.PrometheusCollector}
registered, or with OpenTelemetry's no-op tracer provider set. The same
runs without either are C{orm-sasync} and C{select1-sasync}.

Imported only in a child process (one variant per process: what a variant
sets up here stays there).
"""

from __future__ import annotations

from typing import Any

from bench.config import BenchConfig
from bench.sasync_variants import ormSasync, select1Sasync


def collectorRegistered() -> Any:
    """
    A registry with a L{sasync.metrics.PrometheusCollector} registered and
    scraped once; keep it alive while the calls run.
    """
    from prometheus_client import CollectorRegistry, generate_latest

    from sasync.metrics import PrometheusCollector

    registry = CollectorRegistry()
    registry.register(PrometheusCollector())
    generate_latest(registry)  # (One scrape: the collector works.)
    return registry


def noOpTracing() -> None:
    """
    Set OpenTelemetry's no-op tracer provider (for good, in this process).
    """
    from opentelemetry import trace

    trace.set_tracer_provider(trace.NoOpTracerProvider())


def ormSasyncMetrics(config: BenchConfig) -> dict[str, Any]:
    """
    C{orm-sasync} with the Prometheus collector registered (calls timed).
    """
    registry = collectorRegistered()
    result = ormSasync(config)
    del registry
    return result


def select1SasyncMetrics(config: BenchConfig) -> dict[str, Any]:
    """
    C{select1-sasync} with the Prometheus collector registered.
    """
    registry = collectorRegistered()
    result = select1Sasync(config)
    del registry
    return result


def ormSasyncTracing(config: BenchConfig) -> dict[str, Any]:
    """
    C{orm-sasync} with OpenTelemetry's no-op tracer provider set.
    """
    noOpTracing()
    return ormSasync(config)


def select1SasyncTracing(config: BenchConfig) -> dict[str, Any]:
    """
    C{select1-sasync} with OpenTelemetry's no-op tracer provider set.
    """
    noOpTracing()
    return select1Sasync(config)
