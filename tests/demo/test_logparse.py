"""
The access-log parser: the combined, vhost_combined and common formats,
plain and gzipped files, and lines it cannot read.
"""

from __future__ import annotations

import gzip
from datetime import datetime
from pathlib import Path

from sasync.demo.logparse import VALUE_LENGTH, LogFile, LogParser

COMBINED = (
    '203.0.113.9 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0"'
    ' 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
)


def test_combined() -> None:
    """
    A combined-format line: the time goes to naive UTC, the request line is
    split, the vhost is C{-}.
    """
    record = LogParser().parseLine(COMBINED)
    assert record is not None
    assert record.dt == datetime(2000, 10, 10, 20, 55, 36)
    assert (record.ip, record.method, record.url) == (
        "203.0.113.9",
        "GET",
        "/apache_pb.gif",
    )
    assert (record.status, record.size, record.vhost) == (200, 2326, "-")
    assert record.referrer == "http://www.example.com/start.html"
    assert record.useragent == "Mozilla/4.08 [en] (Win98; I ;Nav)"


def test_vhostCombined() -> None:
    """
    The vhost_combined format's C{host:port} is the vhost (without port).
    """
    record = LogParser().parseLine("www.example.com:443 " + COMBINED)
    assert record is not None
    assert record.vhost == "www.example.com"
    assert record.ip == "203.0.113.9"


def test_commonAndOddities() -> None:
    """
    The common format (no referrer, no agent), a C{-} size, escaped quotes,
    an IPv6 address, a malformed request line and an over-long URL.
    """
    parser = LogParser()
    common = parser.parseLine(
        '::1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 304 -'
    )
    assert common is not None
    assert (common.ip, common.size, common.referrer, common.useragent) == (
        "::1",
        0,
        "-",
        "-",
    )
    quoted = parser.parseLine(
        '1.2.3.4 - - [01/Jan/2024:00:00:00 +0100] "GET /a\\"b HTTP/1.1" 200 5'
        ' "-" "x \\"y\\""'
    )
    assert quoted is not None
    assert quoted.url == '/a"b' and quoted.useragent == 'x "y"'
    assert quoted.dt == datetime(2023, 12, 31, 23, 0, 0)
    junk = parser.parseLine(
        '1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "\\x16\\x03" 400 0 "-" "-"'
    )
    assert junk is not None and junk.method == "" and junk.url == "\\x16\\x03"
    long = parser.parseLine(
        f'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET /{"x" * 400} HTTP/1.1" 200 5'
    )
    assert long is not None and len(long.url) == VALUE_LENGTH
    assert parser.parsed == 4 and parser.skipped == 0


def test_badLinesSkipped() -> None:
    """
    Lines in no known format, or with an impossible date, are counted and
    passed over; blank lines are ignored.
    """
    parser = LogParser()
    lines = [
        "garbage",
        "",
        COMBINED,
        COMBINED.replace("10/Oct", "32/Oct"),
        COMBINED.replace("Oct", "Foo"),
    ]
    records = list(parser.parse(lines))
    assert len(records) == 1
    assert (parser.parsed, parser.skipped) == (1, 3)


def test_plainAndGzippedFiles(tmp_path: Path) -> None:
    """
    A file is read plain or gzipped (told by its content, not its name), and
    reports how much of it has been read.
    """
    text = "\n".join([COMBINED] * 100) + "\n"
    plain = tmp_path / "access.log"
    plain.write_text(text)
    zipped = tmp_path / "access.log.1"
    zipped.write_bytes(gzip.compress(text.encode()))
    for path in (plain, zipped):
        f = LogFile(path)
        assert f.fraction == 0.0
        lines = list(f.lines())
        assert lines == [COMBINED] * 100
        assert f._raw is not None and f._raw.closed, "the file was left open"
        records = list(LogParser().parse(LogFile(path).lines()))
        assert len(records) == 100
