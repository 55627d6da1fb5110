"""
OpenTelemetry: a transaction call is a span, the child of the span current
in the reactor thread when the call was made, and the parent of the spans
made in the worker thread during the transaction; failures are recorded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as SA

from sasync import AccessBroker, transact

pytest.importorskip("opentelemetry.sdk")
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
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


class FileExporter(SpanExporter):
    """
    Writes each finished span as a JSON line to a file (for spans made in
    a worker process).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Any) -> SpanExportResult:
        with open(self.path, "a") as f:
            for s in spans:
                f.write(
                    json.dumps(
                        {
                            "name": s.name,
                            "trace": s.context.trace_id,
                            "span": s.context.span_id,
                            "parent": s.parent.span_id if s.parent else None,
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


class ProcessTraceBroker(TraceBroker):
    """
    Under C{processes=N}, its worker processes' spans go to C{spanFile}.
    """

    def __init__(self, url: str, spanFile: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.spanFile = spanFile

    def startup(self) -> None:
        # Runs in each worker process only (the parent starts the pool).
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(FileExporter(self.spanFile)))
        trace.set_tracer_provider(provider)


async def test_acrossProcesses(
    postgresqlURL: str,
    exporter: InMemorySpanExporter,
    brokers: Any,
    tmp_path: Any,
) -> None:
    """
    Under C{processes=1}, the worker process's span of the call is the
    child of the parent's, in the same trace, and spans made in its
    transaction are children of that.
    """
    spanFile = str(tmp_path / "spans.jsonl")
    broker = brokers(ProcessTraceBroker, postgresqlURL, spanFile, processes=1)
    await broker.waitUntilRunning()
    exporter.clear()
    with trace.get_tracer("test").start_as_current_span("request"):
        d = broker.work(4)
    assert await d == 4
    await broker.shutdown()
    parent = _byName(exporter.get_finished_spans())["ProcessTraceBroker.work"]
    with open(spanFile) as f:
        child = {s["name"]: s for s in map(json.loads, f)}
    call, inner = child["ProcessTraceBroker.work"], child["inner"]
    assert call["trace"] == inner["trace"] == parent.context.trace_id
    assert call["parent"] == parent.context.span_id
    assert inner["parent"] == call["span"]
