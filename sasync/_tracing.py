"""
OpenTelemetry spans of transaction calls (extra C{sAsync[otel]}: the API
only; the application picks the SDK and exporters).

Each call is a span named C{Broker.method}, started in the reactor thread
when the call is made, so its parent is the span current there (the web
request that made the call); made current in the worker thread while the
transaction runs, so spans made there (C{opentelemetry-instrumentation-
sqlalchemy}'s statement spans, the user's own) are its children; ended
when the caller's Deferred fires. Attributes: C{db.system.name},
C{sasync.niceness}, C{sasync.attempt} (attempts started),
C{sasync.queue_wait_ms}; status ERROR with the exception recorded when the
call fails.

Without opentelemetry installed, or without a tracer provider set (or with
the API's no-op one), L{active} is false and nothing here runs.
"""

from __future__ import annotations

import os
from typing import Any

# Typed Any: the extra may be missing (then they are None: no tracing).
_context: Any
_trace: Any
TraceContextTextMapPropagator: Any


class _Missing:
    """
    Stands for C{opentelemetry.trace} without the extra: no tracer
    provider, ever.
    """

    _TRACER_PROVIDER = None


def _importOpenTelemetry() -> None:
    # Bind the names above to the API's modules (without the extra: None,
    # and _trace to _Missing).
    global _context, _trace, TraceContextTextMapPropagator, _never
    try:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation import tracecontext
    except ImportError:
        _context = TraceContextTextMapPropagator = None
        _trace = _Missing
        _never = True
    else:
        _context, _trace = context, trace
        TraceContextTextMapPropagator = tracecontext.TraceContextTextMapPropagator


class _NotImported:
    """
    Stands for C{opentelemetry.trace} until L{active} first reads from it:
    then imports the API and gives way to it, so that C{import sasync}
    doesn't import OpenTelemetry, and the check on every call stays a read
    of a module's global.
    """

    def __getattr__(self, name: str) -> Any:
        _importOpenTelemetry()
        return getattr(_trace, name)


_trace = _NotImported()
_context = TraceContextTextMapPropagator = None
if "OTEL_PYTHON_TRACER_PROVIDER" in os.environ:
    # A provider the environment names: L{active} asks the API from the start.
    _importOpenTelemetry()

_tracer: Any = None
#: Set once the provider is known to be the API's no-op one (for good).
_never = _trace is _Missing
#: The provider may come from the environment (OTEL_PYTHON_TRACER_PROVIDER),
#: made on the first get_tracer_provider(): then always ask.
_fromEnvironment = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ

#: What the API's provider global (C{opentelemetry.trace._TRACER_PROVIDER})
#: is while calls are surely not traced: C{None} (no provider set; the API
#: sets one only once, for good), or the no-op provider once seen. With a
#: provider named by the environment, nothing (an object it is never).
#: L{untraced} compares the global with it, which costs a call less than
#: L{active}; a provider set since makes them differ, and L{active} looks.
untracedWith: object = object() if _fromEnvironment else None


def untraced() -> bool:
    """
    Whether calls are surely not traced now (C{False}: ask L{active}):
    the cheap test made on every call.
    """
    return _trace._TRACER_PROVIDER is untracedWith


def active() -> bool:
    """
    Whether calls are traced: opentelemetry is installed and a real tracer
    provider is set. Asked on every call, so it answers from a module
    global while no provider is set (the API sets one only once, for good).
    """
    global _tracer, _never, untracedWith
    if _tracer is not None:
        return True
    if _never or (
        # (The API's own global: get_tracer_provider() costs more.)
        _trace._TRACER_PROVIDER is None and not _fromEnvironment
    ):
        return False
    provider = _trace.get_tracer_provider()
    if isinstance(provider, _trace.NoOpTracerProvider):
        _never = True
        if provider is _trace._TRACER_PROVIDER:
            # (Set for good: untraced() says so from now on.)
            untracedWith = provider
        return False
    if isinstance(provider, _trace.ProxyTracerProvider):
        return False
    _tracer = provider.get_tracer("sasync")
    return True


def startSpan(
    name: str, system: str, niceness: int, carrier: dict[str, str] | None = None
) -> Any:
    """
    Reactor thread: start the span of a call named C{name}, the child of
    the span current here, or of the span C{carrier} names (see
    L{carrier}).
    """
    parent = None
    if carrier is not None:
        parent = TraceContextTextMapPropagator().extract(carrier)
    return _tracer.start_span(
        name,
        context=parent,
        kind=_trace.SpanKind.CLIENT,
        attributes={"db.system.name": system, "sasync.niceness": niceness},
    )


def carrier(span: Any) -> dict[str, str]:
    """
    C{span}'s identity as W3C trace context headers (C{traceparent}), to
    send to a worker process (C{processes=N}), whose span of the call is
    then its child.
    """
    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(
        headers,
        context=_trace.set_span_in_context(span),
    )
    return headers


def enter(span: Any) -> object:
    """
    Worker thread: make C{span} current here, for the transaction.

    @return: What L{leave} needs.
    """
    return _context.attach(_trace.set_span_in_context(span))


def leave(token: object) -> None:
    """
    Worker thread: the transaction is over; the span is no longer current.
    """
    _context.detach(token)


def endSpan(
    span: Any, attempts: int, queueWait: float, error: BaseException | None
) -> None:
    """
    Reactor thread: the call ended (with C{error} if it failed).
    """
    span.set_attribute("sasync.attempt", attempts)
    span.set_attribute("sasync.queue_wait_ms", queueWait * 1000.0)
    if error is not None:
        span.record_exception(error)
        span.set_status(
            _trace.Status(
                _trace.StatusCode.ERROR,
                f"{type(error).__name__}: {error}",
            )
        )
    span.end()


__all__ = [
    "active",
    "carrier",
    "endSpan",
    "enter",
    "leave",
    "startSpan",
    "untraced",
    "untracedWith",
]
