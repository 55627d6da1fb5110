"""
The demo's HTTP API on twisted.web, over the L{LogBroker}'s database.

  - C{GET /entries?since=ISO&limit=N} streams entries as NDJSON (one JSON
    object a line). The rows go from the broker's transaction straight to
    the HTTP response with backpressure: a client that reads slowly pauses
    the fetching from the database.
  - C{GET /stats} answers the report (L{sasync.demo.report}) as JSON.
  - C{GET /health} answers at once, whatever else is going on.

A bad query parameter (unknown, repeated, empty, malformed or out of
range) gets C{400} and a JSON error naming it, on every endpoint. Parameters
reach SQL only as bound values.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from .logbroker import ENTRY_FIELDS, JSON_DATABASES, LogBroker
from .report import DEFAULT_TOP, buildReport

log = Logger()


#: Bytes of NDJSON gathered before they are written to the response.
FLUSH_SIZE = 64 * 1024

#: The largest C{limit} accepted.
MAX_LIMIT = 10**9


class BadParameter(ValueError):
    """
    A query parameter is missing, repeated, unknown or malformed.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


_encoder = json.JSONEncoder(separators=(",", ":"))


def _jsonBytes(data: Any) -> bytes:
    return _encoder.encode(data).encode("utf-8")


# twisted.web's Request is not typed: the functions here take it as Any.


def _respondJSON(request: Any, status: int, data: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return _jsonBytes(data) + b"\n"


def _badRequest(request: Any, error: BadParameter) -> bytes:
    return _respondJSON(request, 400, {"error": error.message, "parameter": error.name})


def queryArguments(request: Any, allowed: tuple[str, ...]) -> dict[str, str]:
    """
    The query parameters of C{request}, each given at most once and all of
    them among C{allowed}.

    @raise BadParameter: a parameter is unknown, repeated or not UTF-8.
    """
    out: dict[str, str] = {}
    for rawName, values in (request.args or {}).items():
        try:
            name = rawName.decode("utf-8")
            decoded = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise BadParameter(repr(rawName)[2:-1], "not UTF-8") from None
        if name not in allowed:
            known = f"known: {', '.join(allowed)}" if allowed else "none are taken here"
            raise BadParameter(name, f"unknown parameter ({known})")
        if len(decoded) != 1:
            raise BadParameter(name, "given more than once")
        out[name] = decoded[0]
    return out


def parseSince(text: str) -> datetime:
    """
    An ISO 8601 date or date and time, as a naive UTC datetime (a time
    without an offset is taken as UTC).

    @raise BadParameter: it is not one.
    """
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadParameter(
            "since", "not an ISO 8601 date or time, e.g. 2024-03-04T13:00:00Z"
        ) from None
    if dt.tzinfo is not None:
        try:
            dt = dt.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            # 9999-12-31T23:59:59-23:59 is in year 10000 in UTC.
            raise BadParameter(
                "since", "out of range: in UTC it must fall in the years 1 to 9999"
            ) from None
    return dt


def parseLimit(text: str, name: str = "limit") -> int:
    """
    A whole number from 0 to L{MAX_LIMIT}.

    @raise BadParameter: it is not one.
    """
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise BadParameter(name, "not a whole number >= 0")
    # Too many digits are too much, and int() refuses over 4300 of them.
    if len(text.lstrip("0")) > len(str(MAX_LIMIT)) or int(text) > MAX_LIMIT:
        raise BadParameter(name, f"more than {MAX_LIMIT}")
    return int(text)


def entryToJSON(row: Any) -> dict[str, Any]:
    """
    An entries row (of L{LogBroker.entriesSince}) as a JSON-able dict.
    """
    entry = dict(zip(ENTRY_FIELDS, row, strict=True))
    dt = entry["dt"]
    if isinstance(dt, datetime):
        entry["dt"] = dt.isoformat()
    return entry


def encodeEntry(row: Any) -> bytes:
    """
    An entries row (of L{LogBroker.entriesSince}) as a line of JSON, encoded
    here.
    """
    return _jsonBytes(entryToJSON(row))


def encodeLine(row: Any) -> bytes:
    """
    A row of L{LogBroker.entryLines}, JSON text the database made.
    """
    text: str = row[0]
    return text.encode("utf-8")


@implementer(IConsumer, IPushProducer)
class NDJSONConsumer:
    """
    Writes rows to an HTTP response as JSON lines, and passes the
    response's flow control back to whoever produces the rows.

    To the broker it is the C{IConsumer}; to the request it is the
    (streaming) producer: when the client's connection backs up, the request
    calls L{pauseProducing}, which pauses the producer of rows, which stops
    fetching from the database.

    Reactor thread only.

    @ivar rows: Rows written so far.
    @ivar pauses: How many times the response paused the stream.
    @ivar paused: Whether it is paused now.
    """

    def __init__(
        self,
        request: Any,
        *,
        clock: IReactorTime,
        encode: Callable[[Any], bytes] = encodeEntry,
        flushSize: int = FLUSH_SIZE,
    ) -> None:
        #: The twisted.web C{Request} the rows go to.
        self.request: Any = request
        self.clock = clock
        self.encode = encode
        self.flushSize = flushSize
        self.producer: Any = None
        #: The broker call that writes the rows, if known.
        self.call: Deferred[Any] | None = None
        self.rows = 0
        self.pauses = 0
        self.paused = False
        self.closed = False
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._flushCall: IDelayedCall | None = None

    # IConsumer, for the rows' producer -------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Take C{producer}'s rows, and stand in for it with the request; if
        the response is already gone, stop the rows at once.
        """
        self.producer = producer
        if self.closed:
            producer.stopProducing()
        else:
            self.request.registerProducer(self, True)

    def unregisterProducer(self) -> None:
        """
        The rows are done (or stopped): write what is buffered and let go.
        """
        self.flush()
        self.producer = None
        if not self.closed:
            self.request.unregisterProducer()

    def write(self, data: Any) -> None:
        """
        Buffer one row as a JSON line; write the buffer to the response when
        it is big enough, or soon (in the next reactor turn) otherwise.
        """
        if self.closed:
            return
        line = self.encode(data) + b"\n"
        self.rows += 1
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= self.flushSize:
            self.flush()
        elif self._flushCall is None:
            self._flushCall = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """
        Write the buffered lines to the response now.
        """
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        if not self._buffer or self.closed:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        self.request.write(data)

    # IPushProducer, for the request ----------------------------------------

    def pauseProducing(self) -> None:
        """
        The client is behind: pause the rows (and the database fetching).
        """
        self.pauses += 1
        self.paused = True
        if self.producer is not None:
            self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The client caught up: resume the rows.
        """
        self.paused = False
        if self.producer is not None:
            self.producer.resumeProducing()

    def stopProducing(self) -> None:
        """
        The response is gone (the client went away): cancel the call that
        writes the rows, whether it is queued, running or streaming (its
        Deferred fails with C{CancelledError}), or else stop the rows for
        good; either way the database worker is released.
        """
        self.closed = True
        self._buffer.clear()
        self._buffered = 0
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        call = self.call
        if call is not None and not call.called:
            # Cancelling stops the rows' producer too, if there is one yet.
            call.cancel()
        elif self.producer is not None:
            self.producer.stopProducing()


class EntriesResource(Resource):
    """
    C{GET /entries?since=ISO&limit=N}: entries as NDJSON, streamed.
    """

    isLeaf = True

    def __init__(self, api: LogAPI) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.api = api

    def render_GET(self, request: Any) -> bytes | int:
        """
        Check the parameters, then stream the rows from the broker to the
        response through an L{NDJSONConsumer}.
        """
        try:
            args = queryArguments(request, ("since", "limit"))
            since = parseSince(args["since"]) if "since" in args else None
            limit = parseLimit(args["limit"]) if "limit" in args else None
        except BadParameter as e:
            return _badRequest(request, e)
        request.setHeader(b"content-type", b"application/x-ndjson")
        request.setHeader(b"cache-control", b"no-store")
        api = self.api
        consumer = NDJSONConsumer(
            request,
            clock=api.clock,
            encode=encodeLine if api.jsonInDatabase else encodeEntry,
        )
        self.api.streams.add(consumer)
        finished = False

        def done(_: object) -> None:
            nonlocal finished
            finished = True
            self.api.streams.discard(consumer)
            if not consumer.closed:
                consumer.flush()
                request.finish()

        def failed(failure: Failure) -> None:
            nonlocal finished
            finished = True
            self.api.streams.discard(consumer)
            if consumer.closed:
                # The client went away: stopProducing cancelled the call.
                if not isinstance(failure.value, CancelledError):
                    log.failure("/entries failed after its client left", failure)
                return
            log.failure("streaming /entries failed", failure)
            # Cut the response short: the client sees an incomplete body.
            request.loseConnection()

        rows = api.broker.entryLines if api.jsonInDatabase else api.broker.entriesSince
        consumer.call = rows(since, limit, consumer=consumer)
        consumer.call.addCallbacks(done, failed)

        def clientGone(_: object) -> None:
            # Nobody will read the rows: cancel the transaction, queued (it
            # never runs), running (interrupted) or streaming (stopped).
            if not finished:
                consumer.stopProducing()

        request.notifyFinish().addErrback(clientGone)
        return NOT_DONE_YET


class StatsResource(Resource):
    """
    C{GET /stats?top=N}: the report as JSON.
    """

    isLeaf = True

    def __init__(self, api: LogAPI) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.api = api

    def render_GET(self, request: Any) -> bytes | int:
        """
        Build the report through the broker and answer it.
        """
        try:
            args = queryArguments(request, ("top",))
            top = parseLimit(args["top"], "top") if "top" in args else DEFAULT_TOP
        except BadParameter as e:
            return _badRequest(request, e)
        d = Deferred.fromCoroutine(buildReport(self.api.broker, top))
        gone: list[bool] = []

        def answer(report: Any) -> None:
            if not gone:
                request.write(_respondJSON(request, 200, report.toJSON()))
                request.finish()

        def failed(failure: Failure) -> None:
            if gone and isinstance(failure.value, CancelledError):
                return
            log.failure("building /stats failed", failure)
            if not gone:
                request.write(_respondJSON(request, 500, {"error": "internal error"}))
                request.finish()

        d.addCallbacks(answer, failed)

        def clientGone(_: object) -> None:
            # Nobody will read the report: cancel the transaction it waits on.
            gone.append(True)
            d.cancel()

        request.notifyFinish().addErrback(clientGone)
        return NOT_DONE_YET


class HealthResource(Resource):
    """
    C{GET /health}: answers at once, without touching the database.
    """

    isLeaf = True

    def __init__(self, api: LogAPI) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.api = api

    def render_GET(self, request: Any) -> bytes:
        """
        Whether the broker runs, and how many streams are open.
        """
        try:
            queryArguments(request, ())
        except BadParameter as e:
            return _badRequest(request, e)
        return _respondJSON(
            request,
            200,
            {
                "status": "ok" if self.api.broker.running else "starting",
                "streams": len(self.api.streams),
                "uptime": round(time.monotonic() - self.api.started, 3),
            },
        )


class RootResource(Resource):
    """
    C{GET /}: what there is.
    """

    def getChild(self, path: bytes, request: Any) -> Resource:
        """
        C{/} itself (the empty segment after the slash) is this resource;
        any other unknown path is not found.
        """
        if path == b"":
            return self
        return super().getChild(path, request)  # type: ignore[no-any-return,no-untyped-call]

    def render_GET(self, request: Any) -> bytes:
        """
        The list of endpoints.
        """
        try:
            queryArguments(request, ())
        except BadParameter as e:
            return _badRequest(request, e)
        return _respondJSON(
            request,
            200,
            {
                "endpoints": {
                    "/entries?since=ISO&limit=N": "entries as NDJSON, streamed",
                    "/stats?top=N": "the report as JSON",
                    "/health": "liveness, at once",
                }
            },
        )


class LogAPI:
    """
    The demo's web API: its resources and their shared state.

    @ivar streams: The /entries responses streaming now.
    """

    def __init__(
        self,
        broker: LogBroker,
        *,
        clock: IReactorTime,
        databaseKind: str | None = None,
    ) -> None:
        """
        @param clock: The reactor, for the consumers' flushes.
        @param databaseKind: The broker's L{LogBroker.databaseKind}: on a
            database with JSON functions, the database writes the lines of
            C{/entries} (else they are encoded here).
        """
        self.broker = broker
        self.clock = clock
        self.jsonInDatabase = databaseKind in JSON_DATABASES
        self.started = time.monotonic()
        self.streams: set[NDJSONConsumer] = set()
        root = RootResource()  # type: ignore[no-untyped-call]
        root.putChild(b"entries", EntriesResource(self))
        root.putChild(b"stats", StatsResource(self))
        root.putChild(b"health", HealthResource(self))
        self.root = root

    def site(self) -> Site:
        """
        A C{Site} serving the API (without access logging to stdout).
        """
        site = _QuietSite(self.root)  # type: ignore[no-untyped-call]
        site.displayTracebacks = False
        return site


class _QuietSite(Site):
    """
    A C{Site} that keeps no access log (a stream of lines per request the
    demo has no use for).
    """

    def log(self, request: Any) -> None:
        """
        Log nothing.
        """
