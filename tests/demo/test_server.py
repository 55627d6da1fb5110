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
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.web.http import HTTPChannel

from sasync.demo.ingest import ingest
from sasync.demo.logbroker import LogBroker
from sasync.demo.loggen import LogGenerator
from sasync.demo.logparse import LogParser, Record
from sasync.demo.server import LogAPI


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

        started = _reactor().seconds()
        code, health = await getJSON(f"{s.base}/health")
        assert code == 200 and health["streams"] == 1
        assert _reactor().seconds() - started < 1.0

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
