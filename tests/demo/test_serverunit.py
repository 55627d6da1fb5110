"""
The HTTP API's pieces without a network: parameter checks, the NDJSON
consumer's buffering and flow control, the 400 answers.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from asynqueue import Deferator, iteratorToProducer
from sasync.demo.report import rows
from sasync.demo.server import (
    MAX_LIMIT,
    BadParameter,
    EntriesResource,
    HealthResource,
    LogAPI,
    NDJSONConsumer,
    RootResource,
    StatsResource,
    entryToJSON,
    parseLimit,
    parseSince,
)

ROW = (7, datetime(2024, 3, 4, 13, 0, 5), "203.0.113.9", "GET", 200, 512,
       "www.example.com", "/", "-", "curl/8")  # fmt: skip


def failureType(d: Deferred[Any]) -> type[BaseException] | None:
    """
    The type of the exception C{d} failed with (consumed), or C{None} if it
    has not failed.
    """
    failures: list[Failure] = []
    d.addErrback(failures.append)
    return failures[0].type if failures else None


class FakeRequest:
    """
    Enough of a twisted.web Request for L{NDJSONConsumer}: records what is
    written and which producer is registered.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.streaming: bool | None = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.streaming = streaming

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)


class FakeProducer:
    """
    Counts what it is told.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


def test_parseSince() -> None:
    """
    ISO 8601 dates and times; an offset is converted to naive UTC; anything
    else is a L{BadParameter} naming C{since}.
    """
    assert parseSince("2024-03-04") == datetime(2024, 3, 4)
    assert parseSince("2024-03-04T13:00:00") == datetime(2024, 3, 4, 13)
    assert parseSince("2024-03-04T13:00:00Z") == datetime(2024, 3, 4, 13)
    assert parseSince("2024-03-04T15:00:00+02:00") == datetime(2024, 3, 4, 13)
    assert parseSince("9999-12-31T23:59:59+23:59") == datetime(9999, 12, 31, 0, 0, 59)
    for bad in (
        "yesterday",
        "2024-13-01",
        "",
        "1' OR '1'='1",
        "9999-12-31T23:59:59-23:59",  # year 10000 in UTC
        "0001-01-01T00:00:00+00:01",  # year 0 in UTC
    ):
        with pytest.raises(BadParameter) as e:
            parseSince(bad)
        assert e.value.name == "since"


def test_parseLimit() -> None:
    """
    Whole numbers from 0 to L{MAX_LIMIT}; not negative, fractional, huge or
    other digits.
    """
    assert parseLimit("0") == 0
    assert parseLimit(" 25 ") == 25
    assert parseLimit("0" * 50 + "7") == 7
    assert parseLimit(str(MAX_LIMIT)) == MAX_LIMIT
    for bad in ("-1", "1.5", "ten", "", str(MAX_LIMIT + 1), "١٢", "9" * 5000):
        with pytest.raises(BadParameter) as e:
            parseLimit(bad)
        assert e.value.name == "limit"


def test_entryToJSON() -> None:
    """
    A row becomes a dict with the field names, the time in ISO format.
    """
    entry = entryToJSON(ROW)
    assert entry["dt"] == "2024-03-04T13:00:05"
    assert entry["url"] == "/" and entry["id"] == 7 and entry["useragent"] == "curl/8"


def test_consumerInterfaces() -> None:
    """
    The consumer is an C{IConsumer} to the broker and an C{IPushProducer} to
    the request.
    """
    consumer = NDJSONConsumer(FakeRequest(), clock=Clock())  # type: ignore[arg-type]
    assert verifyObject(IConsumer, consumer)
    assert verifyObject(IPushProducer, consumer)


def test_consumerBuffersAndFlushes() -> None:
    """
    Rows are gathered into one write: at once past the flush size, or in
    the next reactor turn otherwise, and when the producer unregisters.
    """
    clock = Clock()
    request = FakeRequest()
    consumer = NDJSONConsumer(request, clock=clock, flushSize=400)  # type: ignore[arg-type]
    producer = FakeProducer()
    consumer.registerProducer(producer, True)
    assert request.producer is consumer and request.streaming is True
    consumer.write(ROW)
    assert request.written == []
    clock.advance(0)
    assert len(request.written) == 1
    for _ in range(3):
        consumer.write(ROW)
    assert len(request.written) == 2  # past 400 bytes: written at once
    consumer.write(ROW)
    consumer.unregisterProducer()
    assert request.producer is None
    lines = b"".join(request.written).splitlines()
    assert len(lines) == 5 == consumer.rows
    assert json.loads(lines[0])["ip"] == "203.0.113.9"
    clock.advance(0)
    assert len(b"".join(request.written).splitlines()) == 5


def test_consumerRelaysFlowControl() -> None:
    """
    Pause, resume and stop from the request reach the rows' producer; after
    a stop nothing more is written.
    """
    clock = Clock()
    request = FakeRequest()
    consumer = NDJSONConsumer(request, clock=clock)  # type: ignore[arg-type]
    producer = FakeProducer()
    consumer.registerProducer(producer, True)
    consumer.pauseProducing()
    assert consumer.paused and consumer.pauses == 1
    consumer.resumeProducing()
    consumer.write(ROW)
    consumer.stopProducing()
    assert producer.calls == ["pause", "resume", "stop"]
    clock.advance(0)
    consumer.write(ROW)
    assert request.written == []


def test_consumerStopsLateProducer() -> None:
    """
    A producer registered after the response went away is stopped at once,
    and the request never sees it.
    """
    request = FakeRequest()
    consumer = NDJSONConsumer(request, clock=Clock())  # type: ignore[arg-type]
    consumer.stopProducing()
    producer = FakeProducer()
    consumer.registerProducer(producer, True)
    assert producer.calls == ["stop"]
    assert request.producer is None


def test_consumerCancelsItsCall() -> None:
    """
    When the response goes away, the call writing the rows is cancelled
    (which stops its producer, if any); a call already done is left alone
    and its producer is stopped directly.
    """
    consumer = NDJSONConsumer(FakeRequest(), clock=Clock())  # type: ignore[arg-type]
    call: Deferred[Any] = Deferred()
    consumer.call = call
    consumer.stopProducing()
    assert failureType(call) is CancelledError

    consumer = NDJSONConsumer(FakeRequest(), clock=Clock())  # type: ignore[arg-type]
    consumer.call = succeed(None)
    producer = FakeProducer()
    consumer.registerProducer(producer, True)
    consumer.stopProducing()
    assert producer.calls == ["stop"]


def test_pausedProducerStopsIterating() -> None:
    """
    With asynqueue's producer behind it, a pause from the request stops the
    rows until the resume: the slow-client path, without a network.
    """
    clock = Clock()
    request = FakeRequest()
    consumer = NDJSONConsumer(request, clock=clock, flushSize=1)  # type: ignore[arg-type]
    taken: list[int] = []

    def rows() -> Any:
        for n in range(5000):
            taken.append(n)
            yield ROW

    paused = [False]

    def write(data: bytes) -> None:
        request.written.append(data)
        if len(request.written) == 10 and not paused[0]:
            paused[0] = True
            consumer.pauseProducing()

    request.write = write  # type: ignore[method-assign]
    d = iteratorToProducer(rows(), consumer, batchSize=100, clock=clock)
    assert consumer.paused
    held = len(taken)
    assert held < 500
    assert len(request.written) == 10
    consumer.resumeProducing()
    # The producer writes in a reactor turn of its own, not inside the resume.
    assert len(request.written) == 10
    clock.advance(0)
    assert len(request.written) == 5000
    assert d.called


def _render(resource: Any, args: dict[bytes, list[bytes]]) -> tuple[int, Any]:
    request = DummyRequest([b""])
    request.args = args
    body = resource.render_GET(request)
    assert isinstance(body, bytes)
    code = int(request.responseCode or 200)
    return code, json.loads(body)


class NoBroker:
    """
    A broker that must not be called.
    """

    running = True

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the broker was used: {name}")


@pytest.mark.parametrize(
    ("args", "parameter"),
    [
        ({b"since": [b"last tuesday"]}, "since"),
        ({b"limit": [b"-5"]}, "limit"),
        ({b"limit": [b"1; DROP TABLE entries"]}, "limit"),
        ({b"limit": [b"1", b"2"]}, "limit"),
        ({b"sort": [b"dt"]}, "sort"),
    ],
)
def test_entriesBadParameters(args: dict[bytes, list[bytes]], parameter: str) -> None:
    """
    A bad, repeated or unknown parameter gets 400 and a JSON error naming
    it, and never reaches the broker.
    """
    api = LogAPI(NoBroker(), clock=Clock())  # type: ignore[arg-type]
    code, body = _render(EntriesResource(api), args)
    assert code == 400
    assert body["parameter"] == parameter
    assert body["error"]


#: Bad values of every kind: empty, wrong type, out of range, not text.
BAD_VALUES = [
    b"",
    b" ",
    b"ten",
    b"1.5",
    b"-1",
    b"1e3",
    b"0x10",
    b"null",
    b"[]",
    b"\x00",
    b"\xff",
    str(MAX_LIMIT + 1).encode(),
    b"9" * 5000,
    b"9999-12-31T23:59:59-23:59",
    b"0001-01-01T00:00:00+23:59",
    b"99999-01-01",
    b"2024-03-04T25:00",
]

#: Each endpoint, and the parameters it takes: the one named, or an unknown
#: one.
ENDPOINTS = [
    (EntriesResource, "since"),
    (EntriesResource, "limit"),
    (EntriesResource, "colour"),
    (StatsResource, "top"),
    (StatsResource, "colour"),
    (HealthResource, "colour"),
    (RootResource, "colour"),
]


@pytest.mark.parametrize(("resource", "name"), ENDPOINTS)
@pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: repr(v[:30]))
def test_everyBadParameter(resource: Any, name: str, value: bytes) -> None:
    """
    Every endpoint answers every bad value of each of its parameters (and
    any unknown parameter) with 400 and a JSON error naming the parameter,
    never an exception (a 500 page), and never asks the broker. (Each value
    is bad for every parameter: the numbers are no ISO 8601 times, the times
    no whole numbers.)
    """
    api = LogAPI(NoBroker(), clock=Clock())  # type: ignore[arg-type]
    made = resource() if resource is RootResource else resource(api)
    code, body = _render(made, {name.encode(): [value]})
    assert code == 400, (name, value)
    assert body["parameter"] == name
    assert body["error"]


def test_statsBadTop() -> None:
    """
    C{/stats?top=} is checked too.
    """
    api = LogAPI(NoBroker(), clock=Clock())  # type: ignore[arg-type]
    code, body = _render(StatsResource(api), {b"top": [b"lots"]})
    assert (code, body["parameter"]) == (400, "top")


def test_health() -> None:
    """
    C{/health} answers without the database.
    """
    api = LogAPI(NoBroker(), clock=Clock())  # type: ignore[arg-type]
    code, body = _render(HealthResource(api), {})
    assert code == 200
    assert body["status"] == "ok" and body["streams"] == 0


class PendingBroker:
    """
    A broker whose calls stay queued until cancelled: records each call's
    Deferred and the failures they ended with.
    """

    running = True

    def __init__(self) -> None:
        self.calls: list[Deferred[Any]] = []
        self.failures: list[type[BaseException]] = []

    def _failed(self, failure: Failure) -> Failure:
        self.failures.append(failure.type)
        return failure

    def _call(self, *args: Any, **kw: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append(d)
        # Ahead of the resource's own errback, which consumes the failure.
        return d.addErrback(self._failed)

    entriesSince = entryLines = summary = _call


@pytest.mark.parametrize("resource", [EntriesResource, StatsResource])
def test_clientGoneCancelsCall(resource: Any) -> None:
    """
    A client that hangs up while its call waits for the broker cancels
    that call; nothing is written to the gone request, nothing is logged.
    """
    broker = PendingBroker()
    api = LogAPI(broker, clock=Clock())  # type: ignore[arg-type]
    request = DummyRequest([b""])
    assert resource(api).render_GET(request) == NOT_DONE_YET
    (call,) = broker.calls
    assert not call.called
    request.processingFailed(Failure(ConnectionDone()))
    assert broker.failures == [CancelledError]
    assert request.written == []
    assert not api.streams


def test_reportRowsReleaseWhenCancelled() -> None:
    """
    A report waiting for rows that is cancelled (its client left) stops the
    iteration, releasing its worker at once.
    """
    stopped: list[bool] = []
    pending: Deferred[Any] = Deferred()
    deferator: Deferator[Any] = Deferator(
        [ROW], lambda: pending, stop=lambda: stopped.append(True)
    )

    async def read() -> list[Any]:
        return [row async for row in rows(succeed(deferator))]

    d = Deferred.fromCoroutine(read())
    assert not d.called and not stopped
    d.cancel()
    assert failureType(d) is CancelledError
    assert stopped == [True]
