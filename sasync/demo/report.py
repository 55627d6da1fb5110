"""
The demo's report, read back through the L{LogBroker}: top URLs, top client
addresses, requests per hour and the mix of status codes, as terminal tables,
as JSON, and as a plot of requests per hour.

Every row comes from a L{transact} method: most are iterated as a
L{Deferator} (C{async for}), the status mix is written to a consumer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from asynqueue import Deferator, ListConsumer

from .logbroker import LogBroker

#: Rows in each top-N table, unless told otherwise.
DEFAULT_TOP = 10

STATUS_NAMES = {
    200: "OK",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class Report:
    """
    What the database holds, summed up.

    @ivar perHour: (start of the hour, requests) for each hour with any.
    """

    entries: int = 0
    ips: int = 0
    bytes: int = 0
    first: datetime | None = None
    last: datetime | None = None
    topURLs: list[tuple[str, int]] = field(default_factory=list)
    topIPs: list[tuple[str, int]] = field(default_factory=list)
    perHour: list[tuple[datetime, int]] = field(default_factory=list)
    statusMix: list[tuple[int, int]] = field(default_factory=list)

    def toJSON(self) -> dict[str, Any]:
        """
        The report as plain JSON-able data.
        """

        def iso(dt: datetime | None) -> str | None:
            return None if dt is None else dt.isoformat()

        return {
            "entries": self.entries,
            "ips": self.ips,
            "bytes": self.bytes,
            "first": iso(self.first),
            "last": iso(self.last),
            "topURLs": [{"url": u, "requests": n} for u, n in self.topURLs],
            "topIPs": [{"ip": ip, "requests": n} for ip, n in self.topIPs],
            "perHour": [{"hour": iso(h), "requests": n} for h, n in self.perHour],
            "statusMix": [{"status": s, "requests": n} for s, n in self.statusMix],
        }

    def perHourOfDay(self) -> list[int]:
        """
        Requests in each hour of the day (UTC), 0 to 23, over all days.
        """
        counts = [0] * 24
        for hour, n in self.perHour:
            counts[hour.hour] += n
        return counts


async def buildReport(broker: LogBroker, top: int = DEFAULT_TOP) -> Report:
    """
    Read the report through the broker's transactions.
    """
    summary = await broker.summary()
    report = Report(
        entries=summary["entries"],
        ips=summary["ips"],
        bytes=summary["bytes"],
        first=summary["first"],
        last=summary["last"],
    )
    # Rows as a Deferator: each arrives as the worker fetches it.
    async for row in rows(broker.topValues("url", top)):
        report.topURLs.append((str(row[0]), int(row[1])))
    async for row in rows(broker.topIPs(top)):
        report.topIPs.append((str(row[0]), int(row[1])))
    async for row in rows(broker.requestsPerHour()):
        year, month, day, hour, n = (int(x) for x in row)
        report.perHour.append((datetime(year, month, day, hour), n))
    # Rows written to an IConsumer: the Deferred fires with the consumer.
    consumer = ListConsumer()
    await broker.statusMix(consumer=consumer)
    report.statusMix = [(int(s), int(n)) for s, n in consumer.items]
    return report


async def rows(d: Deferred[Any]) -> AsyncIterator[Sequence[Any]]:
    """
    The rows of a L{transact} call whose method returned a C{Result}: the
    call's Deferred fires with a L{Deferator<asynqueue.Deferator>} of them.
    """
    deferator: Deferator[Sequence[Any]] = await d
    try:
        async for row in deferator:
            yield row
    finally:
        # Cancelled (the /stats client left) or abandoned: release the
        # iteration's worker now, not when the garbage collector gets to it.
        deferator.stop()


# Terminal tables -------------------------------------------------------------


def _table(
    title: str,
    headers: tuple[str, ...],
    rows: list[tuple[str, ...]],
    align: str = "",
) -> str:
    """
    A plain table: the first column left-aligned, the others right-aligned
    unless C{align} says otherwise (one letter a column, C{l} or C{r}).
    """
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    first = min(widths[0], 60)
    widths[0] = first

    def fmt(cells: tuple[str, ...]) -> str:
        head = cells[0] if len(cells[0]) <= first else cells[0][: first - 1] + "…"
        rest = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells[1:], widths[1:], align[1:], strict=True)
        ]
        return "  ".join([head.ljust(first), *rest]).rstrip()

    lines = [title, fmt(headers), "  ".join("-" * w for w in widths)]
    lines.extend(fmt(row) for row in rows)
    return "\n".join(lines)


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def _bar(n: int, most: int, width: int = 30) -> str:
    if most <= 0:
        return ""
    full = n * width / most
    return "█" * int(full) + ("▌" if full - int(full) >= 0.5 else "")


def formatReport(report: Report) -> str:
    """
    The report as text tables for the terminal.
    """
    total = report.entries
    if not total:
        return "The database holds no entries yet."
    span = ""
    if report.first and report.last:
        span = f", {report.first:%Y-%m-%d %H:%M} to {report.last:%Y-%m-%d %H:%M} UTC"
    parts = [
        f"{total:,} requests from {report.ips:,} addresses,"
        f" {report.bytes / 1e6:,.1f} MB sent{span}"
    ]
    parts.append(
        _table(
            "Top URLs",
            ("url", "requests", "share"),
            [(u, f"{n:,}", _share(n, total)) for u, n in report.topURLs],
        )
    )
    parts.append(
        _table(
            "Top client addresses",
            ("ip", "requests", "share"),
            [(ip, f"{n:,}", _share(n, total)) for ip, n in report.topIPs],
        )
    )
    byHour = report.perHourOfDay()
    most = max(byHour)
    parts.append(
        _table(
            "Requests per hour of day (UTC, all days)",
            ("hour", "requests", ""),
            [(f"{h:02d}:00", f"{n:,}", _bar(n, most)) for h, n in enumerate(byHour)],
            align="lrl",
        )
    )
    parts.append(
        _table(
            "Status codes",
            ("status", "requests", "share"),
            [
                (f"{s} {STATUS_NAMES.get(s, '')}".rstrip(), f"{n:,}", _share(n, total))
                for s, n in report.statusMix
            ],
        )
    )
    return "\n\n".join(parts) + "\n"


# The plot --------------------------------------------------------------------


class PlotUnavailable(RuntimeError):
    """
    matplotlib, which draws the plot, is not installed.
    """


def plotReport(report: Report, path: str | Path) -> Path:
    """
    Draw requests per hour to a PNG file.

    matplotlib is imported here, not before: it is the optional C{demo}
    extra (C{pip install 'sAsync[demo]'}).

    @raise PlotUnavailable: matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'sAsync[demo]'"
            " (or pip install matplotlib)"
        ) from e
    path = Path(path)
    hours: Any = [h for h, _ in report.perHour]  # matplotlib takes datetimes
    counts = [n for _, n in report.perHour]
    width: Any = timedelta(minutes=50)
    figure, axes = plt.subplots(figsize=(10, 4), dpi=100)
    try:
        axes.bar(hours, counts, width=width, align="edge", color="#3b6ea8")
        axes.set_title(f"Requests per hour ({report.entries:,} requests)")
        axes.set_xlabel("hour (UTC)")
        axes.set_ylabel("requests")
        axes.grid(axis="y", alpha=0.3)
        figure.autofmt_xdate()
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
