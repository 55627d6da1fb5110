"""
OpenTelemetry: a transaction call is a span, the child of the span current
in the reactor thread when the call was made, and the parent of the spans
made in the worker thread during the transaction; failures are recorded.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as SA

from sasync import AccessBroker, transact

pytest.importorskip("opentelemetry.sdk")
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """
    The SDK's in-memory exporter, on the process's tracer provider (set
    once per process: the API allows no second one).
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


class Failed(Exception):
    """
    What L{TraceBroker.fail} raises.
    """


class TraceBroker(AccessBroker):
    """
    A transaction that makes a span of its own, and one that fails.
    """

    @transact
    def work(self, n: int) -> int:
        with trace.get_tracer("user").start_as_current_span("inner"):
            return int(self.conn.execute(SA.select(SA.literal(n))).scalar_one())

    @transact
    def fail(self) -> None:
        raise Failed("on purpose")


def _byName(spans: Any) -> dict[str, Any]:
    return {s.name: s for s in spans}


async def test_spanTree(dbURL: str, exporter: InMemorySpanExporter) -> None:
    """
    request -> TraceBroker.work -> inner, across the reactor and the worker
    thread; the call's span has the contract's attributes.
    """
    broker = TraceBroker(dbURL)
    try:
        await broker.waitUntilRunning()
        exporter.clear()
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("request"):
            d = broker.work(3, niceness=5)
        assert await d == 3
    finally:
        await broker.shutdown()
    spans = _byName(exporter.get_finished_spans())
    request, call, inner = spans["request"], spans["TraceBroker.work"], spans["inner"]
    assert call.parent.span_id == request.context.span_id
    assert inner.parent.span_id == call.context.span_id
    assert call.context.trace_id == request.context.trace_id == inner.context.trace_id
    system = SA.make_url(dbURL).get_backend_name()
    assert call.attributes["db.system.name"] == system
    assert call.attributes["sasync.niceness"] == 5
    assert call.attributes["sasync.attempt"] == 1
    assert call.attributes["sasync.queue_wait_ms"] >= 0
    assert call.status.status_code is not StatusCode.ERROR


async def test_errorRecorded(sqliteURL: str, exporter: InMemorySpanExporter) -> None:
    """
    A failed call's span has status ERROR and the exception as an event;
    with no span current at call time, it is a root span.
    """
    broker = TraceBroker(sqliteURL)
    try:
        await broker.waitUntilRunning()
        exporter.clear()
        with pytest.raises(Failed):
            await broker.fail()
    finally:
        await broker.shutdown()
    call = _byName(exporter.get_finished_spans())["TraceBroker.fail"]
    assert call.parent is None
    assert call.status.status_code is StatusCode.ERROR
    [event] = call.events
    assert event.name == "exception"
    assert event.attributes["exception.type"].endswith("Failed")
    assert "on purpose" in event.attributes["exception.message"]
