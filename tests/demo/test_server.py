"""
The HTTP API over a real socket and a real database, with a real HTTP
client (treq): NDJSON streaming, the report, health, bad parameters, and a
slow-reading client whose backpressure pauses the fetching.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import pytest
import treq
from sqlalchemy.exc import OperationalError
from twisted.internet import protocol
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from sasync.demo.ingest import ingest
from sasync.demo.logbroker import LogBroker
from sasync.demo.loggen import LogGenerator
from sasync.demo.logparse import LogParser, Record
from sasync.demo.server import MAX_LIMIT, LogAPI, NDJSONConsumer


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def sleep(seconds: float) -> None:
    """
    Let the reactor run for C{seconds}.
    """
    d: Deferred[None] = Deferred()
    _reactor().callLater(seconds, d.callback, None)
    await d


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """
    Wait until C{check()} is true, polling.
    """
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await sleep(0.02)
    raise AssertionError("timed out waiting")


@dataclass
class Served:
    """
    A running API: its broker, its base URL and the records in it.
    """

    broker: LogBroker
    api: LogAPI
    base: str
    port: int
    records: list[Record]


class SmallBufferChannel(HTTPChannel):
    """
    An HTTP channel whose socket has a small send buffer (the kernel's
    autotuned one holds megabytes), so that what the server process itself
    holds for a stalled client shows.
    """

    def connectionMade(self) -> None:
        handle = self.transport.getHandle()  # type: ignore[union-attr]
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        super().connectionMade()  # type: ignore[no-untyped-call]


@asynccontextmanager
async def served(url: str, lines: int) -> AsyncIterator[Served]:
    """
    Ingest C{lines} generated log lines into C{url} and serve them on a free
    port (with small socket send buffers); stop it all afterwards.
    """
    records = list(LogParser().parse(LogGenerator(lines, seed=5)))
    broker = LogBroker(url)
    try:
        await broker.waitUntilRunning()
        await ingest(broker, records)
        kind = await broker.databaseKind()
        api = LogAPI(broker, clock=_reactor(), databaseKind=kind)
        site = api.site()
        site.protocol = SmallBufferChannel  # type: ignore[method-assign,assignment]
        port = cast(
            IListeningPort,
            _reactor().listenTCP(0, site, interface="127.0.0.1"),
        )
        try:
            number = port.getHost().port  # type: ignore[attr-defined]
            yield Served(broker, api, f"http://127.0.0.1:{number}", number, records)
        finally:
            for stream in list(api.streams):
                stream.stopProducing()
                stream.request.loseConnection()
            await cast(Deferred[None], port.stopListening())
    finally:
        await broker.shutdown()


async def getJSON(url: str) -> tuple[int, Any]:
    response = await treq.get(url)
    body = await treq.content(response)
    return response.code, json.loads(body)


async def test_entriesStreamAndStats(dbURL: str) -> None:
    """
    C{/entries} streams every entry as NDJSON in time order; C{since} and
    C{limit} select as asked; C{/stats} has the report; C{/health} is ok.
    """
    async with served(dbURL, 1500) as s:
        response = await treq.get(f"{s.base}/entries")
        assert response.code == 200
        assert response.headers.getRawHeaders(b"content-type") == [
            b"application/x-ndjson"
        ]
        lines = (await treq.content(response)).splitlines()
        entries = [json.loads(line) for line in lines]
        assert len(entries) == len(s.records) == 1500
        assert [e["dt"] for e in entries] == [r.dt.isoformat() for r in s.records]
        assert entries[0]["url"] == s.records[0].url
        assert entries[-1]["useragent"] == s.records[-1].useragent

        since = s.records[700].dt
        expected = [r for r in s.records if r.dt >= since]
        response = await treq.get(
            f"{s.base}/entries",
            params={"since": since.isoformat() + "Z", "limit": "50"},
        )
        some = [json.loads(x) for x in (await treq.content(response)).splitlines()]
        assert [e["dt"] for e in some] == [r.dt.isoformat() for r in expected[:50]]

        later = (s.records[-1].dt + timedelta(days=1)).isoformat()
        response = await treq.get(f"{s.base}/entries", params={"since": later})
        assert response.code == 200 and await treq.content(response) == b""

        code, stats = await getJSON(f"{s.base}/stats?top=3")
        assert code == 200
        assert stats["entries"] == 1500
        assert len(stats["topURLs"]) == 3
        assert sum(h["requests"] for h in stats["perHour"]) == 1500

        code, health = await getJSON(f"{s.base}/health")
        assert (code, health["status"]) == (200, "ok")


async def test_badParameters(sqliteURL: str) -> None:
    """
    Bad query parameters get 400 with a JSON error naming the parameter,
    and an attempt at SQL in a parameter is just a bad value.
    """
    async with served(sqliteURL, 50) as s:
        for query, name in (
            ("since=soon", "since"),
            ("limit=-1", "limit"),
            ("limit=5%20OR%201=1", "limit"),
            ("since=2024-03-04%27%3B%20DROP%20TABLE%20entries%3B--", "since"),
            ("colour=red", "colour"),
        ):
            code, body = await getJSON(f"{s.base}/entries?{query}")
            assert code == 400, query
            assert body["parameter"] == name
        code, body = await getJSON(f"{s.base}/stats?top=x")
        assert (code, body["parameter"]) == (400, "top")
        # Still all there.
        code, stats = await getJSON(f"{s.base}/stats")
        assert stats["entries"] == 50


async def test_edgeParameters(dbURL: str) -> None:
    """
    The extreme good values reach the database and answer 200 with whole
    bodies; just past them, 400 with a JSON error naming the parameter (an
    offset that moves C{since} out of the years 1 to 9999 in UTC was a 500
    page). C{/} lists the endpoints (it was a 404 page).
    """
    async with served(dbURL, 50) as s:
        for query, lines in (
            ("since=0001-01-01T00:00:00", 50),
            ("since=0001-01-01T00:00:00-23:59", 50),
            ("since=9999-12-31T23:59:59.999999", 0),
            ("since=9999-12-31T23:59:59%2B23:59", 0),
            ("limit=0", 0),
            (f"limit={MAX_LIMIT}", 50),
            (f"since=0001-01-01&limit={MAX_LIMIT}", 50),
        ):
            response = await treq.get(f"{s.base}/entries?{query}")
            assert response.code == 200, query
            assert len((await treq.content(response)).splitlines()) == lines, query
        for top in ("0", str(MAX_LIMIT)):
            code, stats = await getJSON(f"{s.base}/stats?top={top}")
            assert (code, stats["entries"]) == (200, 50)
        code, root = await getJSON(f"{s.base}/")
        assert code == 200 and "/health" in root["endpoints"]
        for path, name in (
            ("/entries?since=9999-12-31T23:59:59-23:59", "since"),
            ("/entries?since=0001-01-01T00:00:00%2B00:01", "since"),
            (f"/entries?limit={MAX_LIMIT + 1}", "limit"),
            ("/entries?limit=" + "9" * 5000, "limit"),
            ("/entries?since=", "since"),
            ("/entries?limit=", "limit"),
            ("/stats?top=", "top"),
            ("/stats?top=" + "9" * 5000, "top"),
            ("/health?verbose=1", "verbose"),
            ("/?x=", "x"),
        ):
            response = await treq.get(f"{s.base}{path}")
            assert response.code == 400, path
            assert response.headers.getRawHeaders(b"content-type") == [
                b"application/json"
            ]
            assert json.loads(await treq.content(response))["parameter"] == name


class SlowReader(protocol.Protocol):
    """
    An HTTP client that sends one request, then reads only when told to.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.received = bytearray()
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        request = f"GET {self.path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        self.transport.write(request.encode())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(None)

    def pause(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resume(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]


def connectSmallWindow(port: int, reader: SlowReader) -> None:
    """
    Connect C{reader} through a socket with a small receive buffer, so that
    the server feels a stalled reader soon.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    factory = protocol.Factory.forProtocol(lambda: reader)
    _reactor().adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)
    sock.close()  # the reactor has its own duplicate of the descriptor


def ndjsonRows(raw: bytes | bytearray) -> int:
    """
    Rows in a chunked HTTP/1.1 response (headers and chunk framing aside).
    """
    _, _, body = bytes(raw).partition(b"\r\n\r\n")
    # The consumer writes whole lines in each chunk.
    return body.count(b"}\n")


async def test_slowClientPausesFetching(dbURL: str) -> None:
    """
    A client that stops reading pauses the stream: the server stops taking
    rows from the database while the client does not read, holding only a
    bounded amount (some socket and transport buffers and a batch or two),
    and when the client reads again every row arrives. Meanwhile /health
    answers at once.
    """
    async with served(dbURL, 20_000) as s:
        reader = SlowReader("/entries")
        connectSmallWindow(s.port, reader)
        await until(lambda: len(reader.received) > 0)
        reader.pause()
        await until(lambda: any(c.paused for c in s.api.streams))
        await sleep(0.5)
        (stream,) = s.api.streams
        held = stream.rows
        await sleep(1.0)
        assert stream.rows == held, "rows were fetched while the client read nothing"
        assert stream.paused and stream.pauses >= 1
        assert held < 10_000, (
            f"{held} rows taken from the database for a stalled client"
        )

        # /health answers while the stream is still paused (no wall-clock
        # bound: a /health stuck behind the stalled stream would never
        # answer before reader.resume() below, and run into the timeout).
        code, health = await getJSON(f"{s.base}/health")
        assert code == 200 and health["streams"] == 1
        assert stream.paused and stream.rows == held

        reader.resume()
        await reader.done
        assert ndjsonRows(reader.received) == 20_000
        assert not s.api.streams


async def test_clientGoesAway(dbURL: str) -> None:
    """
    A client that hangs up mid-stream ends the stream and frees its
    transaction: the broker goes on serving.
    """
    async with served(dbURL, 20_000) as s:
        reader = SlowReader("/entries")
        connectSmallWindow(s.port, reader)
        await until(lambda: len(reader.received) > 0)
        reader.pause()
        await until(lambda: any(c.paused for c in s.api.streams))
        reader.transport.abortConnection()  # type: ignore[union-attr]
        await reader.done
        await until(lambda: not s.api.streams)
        response = await treq.get(f"{s.base}/entries", params={"limit": "10"})
        assert len((await treq.content(response)).splitlines()) == 10
        code, stats = await getJSON(f"{s.base}/stats")
        assert (code, stats["entries"]) == (200, 20_000)


@dataclass
class Calls:
    """
    The broker calls that C{/entries} made, and how each ended (its result,
    or the type of its failure), in the order they ended.
    """

    made: list[Deferred[Any]]
    outcomes: list[Any]


def recordCalls(s: Served) -> Calls:
    """
    Record every broker call that C{/entries} makes from now on (the
    broker's method is wrapped on the instance).
    """
    calls = Calls([], [])
    name = "entryLines" if s.api.jsonInDatabase else "entriesSince"
    method = getattr(s.broker, name)

    def ended(result: Any) -> Any:
        calls.outcomes.append(result.type if isinstance(result, Failure) else result)
        return result

    def recorded(*args: Any, **kw: Any) -> Deferred[Any]:
        d: Deferred[Any] = method(*args, **kw)
        calls.made.append(d)
        # Ahead of the server's callbacks, which consume the result.
        return d.addBoth(ended)

    setattr(s.broker, name, recorded)
    return calls


async def test_goneClientsCancelTheirCalls(dbURL: str) -> None:
    """
    Forty clients ask for every entry and hang up before reading: each
    one's transaction is cancelled, whether it was queued, running or
    streaming (its Deferred fails with C{CancelledError}), nothing is left
    queued or running, and a new small request is answered.

    A call whose query was just finishing in a worker when it was
    interrupted is answered honestly with its result instead (its rows are
    stopped before any is written): at most one per worker (connection).
    """
    async with served(dbURL, 5000) as s:
        calls = recordCalls(s)
        handle = s.broker._handle
        queue = handle.queue  # type: ignore[union-attr]
        workers = handle.connections + handle.spec.overflowConnections  # type: ignore[union-attr]
        readers = [SlowReader("/entries") for _ in range(40)]
        for reader in readers:
            connectSmallWindow(s.port, reader)
            reader.pause()
        await until(lambda: len(calls.made) == len(readers))
        for reader in readers:
            reader.transport.abortConnection()  # type: ignore[union-attr]
        for reader in readers:
            await reader.done
        await until(lambda: len(calls.outcomes) == len(readers))
        finished = [o for o in calls.outcomes if o is not CancelledError]
        assert len(finished) <= workers < len(readers), calls.outcomes
        # (On SQLite a fast stream may also have been written whole before
        # its client hung up, answered with its consumer; or, committed
        # already and interrupted while its rows were read, fail with
        # sqlite3's "interrupted" OperationalError: nothing left either way.)
        assert all(
            isinstance(o, NDJSONConsumer) or o is OperationalError for o in finished
        ), finished
        await until(lambda: queue.pending() == 0 and queue.running() == 0)
        assert not s.api.streams
        response = await treq.get(f"{s.base}/entries", params={"limit": "1"})
        assert len((await treq.content(response)).splitlines()) == 1


async def test_metricsAndHealth(sqliteURL: str) -> None:
    """
    C{/metrics} answers Prometheus's text format, counting the calls the
    API made; C{/health} reports the broker's stats.
    """
    prometheus = pytest.importorskip("prometheus_client.parser")
    async with served(sqliteURL, 20) as s:
        response = await treq.get(f"{s.base}/entries")
        assert response.code == 200
        await treq.content(response)
        response = await treq.get(f"{s.base}/metrics")
        assert response.code == 200
        assert response.headers.getRawHeaders(b"content-type")[0].startswith(
            b"text/plain"
        )
        text = (await treq.content(response)).decode()
        families = {f.name: f for f in prometheus.text_string_to_metric_families(text)}
        rows = [
            x.value
            for x in families["sasync_rows_streamed"].samples
            if x.labels["broker"] == "LogBroker"
        ]
        assert rows and rows[0] >= 20
        code, health = await getJSON(f"{s.base}/health")
        assert code == 200
        assert health["broker"]["committed"] >= 1
        assert health["broker"]["rowsStreamed"] >= 20
        assert health["broker"]["connections"] == 1
