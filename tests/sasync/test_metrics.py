"""
L{sasync.metrics.PrometheusCollector}: the exposition, parsed by
prometheus_client's own parser, has exact counts after a scripted mix of
calls on each database, and no label holds a password.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
import sqlalchemy as SA

from sasync import retry
from tests.sasync.test_stats import ROWS, MixBroker, scriptedMix

prometheus = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from sasync._stats import BUCKETS, CallStats  # noqa: E402
from sasync.metrics import PrometheusCollector  # noqa: E402


def _scrape(registry: Any) -> dict[str, Any]:
    text = prometheus.generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(family: Any, **labels: str) -> list[Any]:
    return [
        s
        for s in family.samples
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]


def _value(family: Any, suffix: str = "", **labels: str) -> float:
    [sample] = [s for s in _samples(family, **labels) if s.name == family.name + suffix]
    return float(sample.value)


async def test_exposition(dbURL: str, request: pytest.FixtureRequest) -> None:
    """
    Committed, failed, cancelled, timed-out and retried calls are counted
    per broker, method and outcome; the histograms count every call (queue
    wait) and every started one (transaction time), in buckets from 100 µs
    to 30 s; the gauges show the queue and the connection.
    """
    gc.collect()  # (Brokers of earlier tests, gone, leave the export.)
    registry = prometheus.CollectorRegistry()
    collector = PrometheusCollector()
    registry.register(collector)
    # A class of this test's own: the broker label is the class name.
    name = "Metrics" + request.node.callspec.id.capitalize()
    cls = type(name, (MixBroker,), {})
    broker = cls(dbURL)
    try:
        await broker.waitUntilRunning()
        during = await scriptedMix(broker, lambda: _scrape(registry))
        after = _scrape(registry)
    finally:
        broker.release.set()
        await broker.shutdown()
    assert _value(during["sasync_queued"], broker=name) == 2
    assert _value(during["sasync_running"], broker=name) == 1
    database = broker.stats().servers.keys()
    [url] = database
    assert _value(during["sasync_connections"], database=url, state="busy") == 1
    assert _value(during["sasync_connections"], database=url, state="idle") == 0

    total = after["sasync_transactions"]
    expected = {
        ("add", "committed"): ROWS,
        ("add", "cancelled"): 1,
        ("add", "timeout"): 1,
        ("fail", "failed"): 1,
        ("conflictOnce", "committed"): 1,
        ("names", "committed"): 1,
        ("block", "committed"): 1,
    }
    found = {
        (s.labels["method"], s.labels["outcome"]): s.value
        for s in _samples(total, broker=name)
        if s.name == "sasync_transactions_total"
    }
    assert found == expected
    assert (
        _value(
            after["sasync_retries"], "_total", broker=name, reason=retry.SERIALIZATION
        )
        == 1
    )
    assert _value(after["sasync_rows_streamed"], "_total", broker=name) == ROWS

    wait = after["sasync_queue_wait_seconds"]
    ran = after["sasync_transaction_seconds"]
    # Every add waited; the cancelled one and the timed-out one never ran.
    assert _value(wait, "_count", broker=name, method="add") == ROWS + 2
    assert _value(ran, "_count", broker=name, method="add") == ROWS
    assert _value(ran, "_count", broker=name, method="block") == 1
    bounds = [
        s.labels["le"]
        for s in _samples(wait, broker=name, method="add")
        if s.name.endswith("_bucket")
    ]
    assert [float(b) for b in bounds] == [*BUCKETS, float("inf")]
    assert float(bounds[0]) == 0.0001 and float(bounds[-2]) == 30
    # The timed-out call waited at least its timeout in the queue.
    assert _value(wait, "_sum", broker=name, method="add") >= 0.05
    del collector


def test_noPasswordInLabels() -> None:
    """
    A broker whose URL has a password exports it nowhere.
    """
    registry = prometheus.CollectorRegistry()
    registry.register(PrometheusCollector())
    url = SA.make_url("postgresql://app:s3cret@db/x").render_as_string(
        hide_password=True
    )
    stats = CallStats("PasswordBroker", url, object())
    stats.outcomes["m", "committed"] += 1
    text = prometheus.generate_latest(registry).decode()
    assert "PasswordBroker" in text
    assert "s3cret" not in text


def test_timingsOnlyWithCollector(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Calls are timed only while a collector exists (and nothing traces).
    """
    monkeypatch.setattr("sasync._tracing.active", lambda: False)
    stats = CallStats("B", "sqlite://", object())
    gc.collect()
    # Collectors earlier tests left alive count too (a demo server's, held
    # by a connection treq's pool keeps open): count from none here. (No
    # reactor turn runs in this test, and the garbage is gone, so none of
    # them can end meanwhile.)
    monkeypatch.setattr(CallStats, "_timingUsers", 0)
    assert stats.begin("m", 0) is None
    collector = PrometheusCollector()
    assert stats.begin("m", 0) is not None
    del collector
    gc.collect()
    assert stats.begin("m", 0) is None
