"""
A parser for access logs in the combined format, plain or gzipped.

It reads Apache's and nginx's C{combined} format and Apache's
C{vhost_combined} (the same with C{host:port} in front), and the common
format (without referrer and user agent)::

    [vhost:port] ip ident user [time] "request" status size ["referrer" "agent"]

Times are converted to naive UTC datetimes. A line that does not parse is
counted in L{LogParser.skipped} and passed over.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

#: The longest value kept for an indexed value (URL, referrer, user agent).
VALUE_LENGTH = 255

_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_LINE = re.compile(
    r"(?:(\S+:\d+) )?"  # vhost:port (vhost_combined only)
    r"(\S+) \S+ \S+ "  # ip ident user
    r"\[(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\] "
    + _QUOTED  # the request line
    + r" (\d{3}) (\d+|-)"  # status and size
    + r"(?: "
    + _QUOTED
    + " "
    + _QUOTED
    + r")?"  # referrer and agent
    + r"\s*$"
)
_MONTHS = {
    name: n
    for n, name in enumerate(
        (
            "Jan",
            "Feb",
            "Mar",
            "Apr",
            "May",
            "Jun",
            "Jul",
            "Aug",
            "Sep",
            "Oct",
            "Nov",
            "Dec",
        ),
        start=1,
    )
}


@dataclass(frozen=True, slots=True)
class Record:
    """
    One parsed request.

    @ivar dt: When, as a naive UTC datetime.
    @ivar method: The HTTP method, or C{""} for a malformed request line.
    @ivar url: The requested path (or the whole request line, if malformed).
    @ivar size: Bytes sent (0 for C{-}).
    @ivar vhost: The virtual host, or C{"-"} when the format has none.
    @ivar referrer: The referrer, or C{"-"}.
    @ivar useragent: The user agent, or C{"-"}.
    """

    dt: datetime
    ip: str
    method: str
    url: str
    status: int
    size: int
    vhost: str
    referrer: str
    useragent: str


class LogParser:
    """
    Parses lines into L{Record}s, counting the ones it cannot parse.

    @ivar parsed: How many lines were parsed.
    @ivar skipped: How many lines were passed over.
    """

    def __init__(self) -> None:
        self.parsed = 0
        self.skipped = 0

    def parseLine(self, line: str) -> Record | None:
        """
        @return: The line's record, or C{None} (counted as skipped) if it is
            not in a format this parser reads.
        """
        m = _LINE.match(line)
        if m is None:
            if line.strip():
                self.skipped += 1
            return None
        (
            vhostPort,
            ip,
            day,
            month,
            year,
            hh,
            mm,
            ss,
            sign,
            tzh,
            tzm,
            request,
            status,
            size,
            referrer,
            agent,
        ) = m.groups()
        monthNumber = _MONTHS.get(month)
        if monthNumber is None:
            self.skipped += 1
            return None
        try:
            dt = datetime(int(year), monthNumber, int(day), int(hh), int(mm), int(ss))
        except ValueError:
            self.skipped += 1
            return None
        offset = int(tzh) * 60 + int(tzm)
        if offset:
            dt -= timedelta(minutes=offset if sign == "+" else -offset)
        parts = request.split(" ")
        if len(parts) == 3 and parts[0].isalpha() and parts[0].isupper():
            method, url = parts[0], parts[1]
        else:
            method, url = "", request
        self.parsed += 1
        return Record(
            dt=dt,
            ip=ip[:45],
            method=method[:16],
            url=_clip(_unescape(url)),
            status=int(status),
            size=0 if size == "-" else int(size),
            vhost=_clip(vhostPort.rsplit(":", 1)[0]) if vhostPort else "-",
            referrer=_clip(_unescape(referrer)) if referrer else "-",
            useragent=_clip(_unescape(agent)) if agent else "-",
        )

    def parse(self, lines: Iterable[str]) -> Iterator[Record]:
        """
        The records of C{lines}, skipping what does not parse.
        """
        parseLine = self.parseLine
        for line in lines:
            record = parseLine(line)
            if record is not None:
                yield record


def _clip(value: str) -> str:
    """
    An indexed value as stored: at most L{VALUE_LENGTH} characters, without
    trailing blanks (which some databases' comparisons ignore), never empty.
    """
    return value[:VALUE_LENGTH].rstrip() or "-"


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return text.replace('\\"', '"').replace("\\\\", "\\")


class LogFile:
    """
    A log file to read, plain or gzipped (told by its first two bytes), that
    knows how far through it the reading is.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self._raw: IO[bytes] | None = None

    def _open(self) -> IO[str]:
        raw = self._raw = open(self.path, "rb")  # noqa: SIM115 (closed in lines)
        magic = raw.read(2)
        raw.seek(0)
        if magic == b"\x1f\x8b":
            unzipped = gzip.GzipFile(fileobj=raw)
            return io.TextIOWrapper(unzipped, encoding="utf-8", errors="replace")
        return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")

    @property
    def fraction(self) -> float:
        """
        How much of the file (compressed bytes, for a gzipped one) has been
        read so far, from 0 to 1.
        """
        if self._raw is None or self._raw.closed or not self.size:
            return 0.0
        return min(1.0, self._raw.tell() / self.size)

    def lines(self) -> Iterator[str]:
        """
        The file's lines without their line ends; the file closes when the
        iteration ends or is closed.
        """
        text = self._open()
        try:
            for line in text:
                yield line.rstrip("\r\n")
        finally:
            text.close()
            # A GzipFile leaves open the file it was handed.
            if self._raw is not None:
                self._raw.close()
