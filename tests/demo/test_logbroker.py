"""
The demo's broker on each database: indexed values, entries in batches,
the seed's one-record path, and the report queries.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from asynqueue import ListConsumer
from sasync.demo.ingest import ingest, prepareBatch
from sasync.demo.logbroker import LogBroker
from sasync.demo.logparse import LogParser, Record
from sasync.demo.report import buildReport, rows
from sasync.demo.server import entryToJSON

LINE = (
    'www.example.com:443 203.0.113.9 - - [04/Mar/2024:13:55:36 +0000] "GET /a'
    ' HTTP/1.1" 200 512 "https://www.example.com/" "curl/8"'
)


def record(**changes: Any) -> Record:
    parsed = LogParser().parseLine(LINE)
    assert parsed is not None
    values = {name: getattr(parsed, name) for name in parsed.__dataclass_fields__}
    values.update(changes)
    return Record(**values)


async def test_nameValues(dbURL: str) -> None:
    """
    Each distinct value gets one id, whichever way it is asked for; values
    that differ only in case are different values (MySQL too); a restarted
    broker finds the tables and values there.
    """
    broker = LogBroker(dbURL)
    try:
        first = await broker.setNameValue("url", "/a")
        assert await broker.setNameValue("url", "/a") == first
        ids = await broker.setNameValues("url", ["/b", "/a", "/A", "/b"])
        assert ids["/a"] == first
        assert len({ids["/a"], ids["/b"], ids["/A"]}) == 3
        with pytest.raises(ValueError, match="no indexed-value table"):
            await broker.setNameValue("entries", "x")
    finally:
        await broker.shutdown()
    again = LogBroker(dbURL)
    try:
        assert await again.setNameValues("url", ["/A", "/c"]) == {
            "/A": ids["/A"],
            "/c": max(ids.values()) + 1,
        }
    finally:
        await again.shutdown()


async def test_setEntriesIsOneTransaction(dbURL: str) -> None:
    """
    A batch's new values and its entries commit together: when an entry is
    bad, neither the entries nor the new values are there afterwards, and
    the cache learns nothing.
    """
    broker = LogBroker(dbURL)
    try:
        good = [record(url="/one"), record(url="/two")]
        entries, new = prepareBatch(broker, good)
        assert new["url"] == ["/one", "/two"]
        broker.rememberIDs(await broker.setEntries(entries, new))
        assert set(broker.idTable["url"]) == {"/one", "/two"}

        entries, new = prepareBatch(broker, [record(url="/three"), record()])
        assert new == {"url": ["/three", "/a"]}
        entries[1]["status"] = None  # NOT NULL: the insert fails
        with pytest.raises(Exception, match="status"):
            await broker.setEntries(entries, new)
        summary = await broker.summary()
        assert summary["entries"] == 2
        url = broker.url
        listed = await broker.execute(
            broker.select(url.c.value).order_by(url.c.value), asList=True
        )
        assert [r.value for r in listed] == ["/one", "/two"]
    finally:
        await broker.shutdown()


async def test_setRecordAndQueries(dbURL: str) -> None:
    """
    The seed's one-record path fills the cache and adds entries; the report
    queries come back as a Deferator or to a consumer, and
    C{entriesSince} spells the values out.
    """
    broker = LogBroker(dbURL)
    try:
        ID = await broker.setRecord(record())
        await broker.setRecord(record(dt=datetime(2024, 3, 4, 15), status=404))
        await ingest(broker, [record(url="/b", dt=datetime(2024, 3, 5, 1))] * 3)
        assert broker.idTable["url"].keys() == {"/a", "/b"}
        top = [tuple(r) async for r in rows(broker.topValues("url", 5))]
        assert top == [("/b", 3), ("/a", 2)]
        consumer = ListConsumer()
        await broker.statusMix(consumer=consumer)
        assert [tuple(r) for r in consumer.items] == [(200, 4), (404, 1)]
        listed = await broker.entriesSince(datetime(2024, 3, 4, 14), 2, asList=True)
        assert [(r.status, r.url, r.useragent) for r in listed] == [
            (404, "/a", "curl/8"),
            (200, "/b", "curl/8"),
        ]
        first: Any = await broker.entriesSince(asList=True)
        assert first[0].id == ID and first[0].vhost == "www.example.com"
        report = await buildReport(broker)
        assert report.entries == 5 and report.ips == 1
        assert [n for _, n in report.perHour] == [1, 1, 3]
        await broker.clear()
        broker.forgetIDs()
        assert (await broker.summary())["entries"] == 0
    finally:
        await broker.shutdown()


async def test_entryLinesMatchEntries(dbURL: str) -> None:
    """
    The JSON lines the database writes for C{/entries} hold what
    C{entriesSince} rows hold, encoded in Python: same keys, same values,
    the time in the same format; C{since} and C{limit} apply the same.
    """
    broker = LogBroker(dbURL)
    try:
        await ingest(
            broker,
            [
                record(),
                record(dt=datetime(2024, 3, 4, 15, 0, 1), url='/q?a="b"&c=ü'),
                record(dt=datetime(2024, 3, 5, 1), useragent="x\\y", size=0),
            ],
        )
        for since, limit in ((None, None), (datetime(2024, 3, 4, 14), 1)):
            lines: Any = await broker.entryLines(since, limit, asList=True)
            spelled = await broker.entriesSince(since, limit, asList=True)
            assert [json.loads(r[0]) for r in lines] == [
                entryToJSON(r) for r in spelled
            ]
        assert json.loads(lines[0][0])["url"] == '/q?a="b"&c=ü'
    finally:
        await broker.shutdown()


async def test_interruptedIngestResumes(dbURL: str) -> None:
    """
    An ingestion of a source stopped after some batches leaves its count,
    committed with them; the next ingestion of the same source skips those
    records and adds the rest, so each record is in once. Once complete,
    the source starts over (entries accumulate), and another source is
    not affected.
    """
    records = [record(size=n) for n in range(25)]
    broker = LogBroker(dbURL)
    try:
        batches = 0

        def stopAfterTwo() -> bool:
            nonlocal batches
            batches += 1
            return batches > 2

        first = await ingest(
            broker, records, batchSize=4, shouldStop=stopAfterTwo, source="log A"
        )
        assert (first.rows, first.interrupted) == (8, True)
        assert await broker.resumePoint("log A") == 8
        assert await broker.resumePoint("log B") == 0
    finally:
        await broker.shutdown()
    broker = LogBroker(dbURL)
    try:
        second = await ingest(broker, records, batchSize=4, source="log A")
        assert (second.resumedAt, second.rows, second.interrupted) == (8, 17, False)
        sizes = [r.size for r in await broker.entriesSince(asList=True)]
        assert sorted(sizes) == list(range(25))
        assert await broker.resumePoint("log A") == 0
        third = await ingest(broker, records[:3], source="log A")
        assert (third.resumedAt, third.rows) == (0, 3)
        assert (await broker.summary())["entries"] == 28
    finally:
        await broker.shutdown()
