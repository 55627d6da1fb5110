"""
A generator of realistic web-server access logs, deterministic with a seed.

The lines are in Apache's C{vhost_combined} format (the combined format with
the virtual host and port in front)::

    www.example.com:443 203.0.113.9 - - [04/Mar/2024:13:55:36 +0000]
    "GET /docs/ HTTP/1.1" 200 5120 "https://www.google.com/" "Mozilla/5.0 ..."

(one line in the log, two here).

What makes them realistic enough for a demo: traffic follows the time of day;
a few clients make most requests (a Zipf-like law), each with its own
browser; a page view pulls in its stylesheet, script and images with the page
as referrer, and a repeat visitor's assets come back C{304}; crawlers walk the
site; scanners probe for C{/wp-login.php} and get C{404}; a few requests fail
with C{500}. The same seed gives the same log, line for line.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: The first request's day, unless told otherwise.
DEFAULT_START = datetime(2024, 3, 4, tzinfo=UTC)

MONTHS = (
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
)

VHOSTS = (
    ("www.example.com", 443, 70),
    ("blog.example.com", 443, 20),
    ("shop.example.com", 443, 8),
    ("example.com", 80, 2),
)

BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like"
    " Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.{m} Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{m} like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.{m} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like"
    " Gecko) Chrome/{v}.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
)

CRAWLERS = (
    (
        "66.249.66.",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
    (
        "157.55.39.",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    ),
    ("5.255.253.", "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)"),
)

SCANNER_AGENTS = (
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "-",
)

PROBES = (
    "/wp-login.php",
    "/wp-admin/",
    "/.env",
    "/xmlrpc.php",
    "/phpmyadmin/index.php",
    "/.git/config",
    "/cgi-bin/luci",
    "/admin/config.php",
)

SEARCH_REFERRERS = (
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://news.ycombinator.com/",
    "https://www.reddit.com/r/Python/",
    "https://t.co/",
)

ASSETS = (
    ("/static/css/site.css", 18_422),
    ("/static/js/app.js", 64_810),
    ("/static/img/logo.svg", 3_105),
    ("/favicon.ico", 1_150),
)

WORDS = (
    "twisted",
    "deferred",
    "reactor",
    "sqlalchemy",
    "async",
    "threads",
    "queue",
    "database",
    "logging",
    "python",
    "benchmark",
    "postgres",
    "sqlite",
    "streaming",
    "producer",
    "consumer",
    "release",
    "notes",
)


@dataclass(frozen=True)
class Page:
    """
    A page of the generated site.
    """

    vhost: str
    path: str
    size: int
    weight: float


@dataclass
class Client:
    """
    A client of the generated site: where it comes from and what it runs.
    """

    ip: str
    agent: str
    kind: str  # "browser", "crawler" or "scanner"
    seenAssets: bool = False


class LogGenerator:
    """
    Generates C{lines} access-log lines spread over C{days} days from
    C{start}, in time order. Deterministic: the same arguments give the same
    lines.
    """

    def __init__(
        self,
        lines: int,
        *,
        seed: int = 1,
        start: datetime = DEFAULT_START,
        days: int = 2,
        clients: int | None = None,
    ) -> None:
        """
        @param lines: How many lines to generate (exactly).
        @param seed: Seeds the random generator.
        @param start: When the log starts (UTC when naive).
        @param days: How many days the log spans.
        @param clients: How many distinct browsing clients; by default it
            grows with C{lines}.
        """
        if lines < 0:
            raise ValueError("lines must not be negative")
        if days < 1:
            raise ValueError("days must be at least 1")
        self.lines = lines
        self.seed = seed
        self.start = start if start.tzinfo else start.replace(tzinfo=UTC)
        self.days = days
        self.random = random.Random(seed)
        self.nClients = clients or max(20, min(20_000, lines // 40))
        self._buildSite()
        self._buildClients()

    # The site and its visitors ---------------------------------------------

    def _buildSite(self) -> None:
        r = self.random
        pages: list[Page] = [
            Page("www.example.com", "/", 9_800, 30.0),
            Page("www.example.com", "/about/", 6_200, 4.0),
            Page("www.example.com", "/contact/", 4_900, 2.0),
            Page("www.example.com", "/docs/", 12_400, 6.0),
            Page("www.example.com", "/feed.xml", 41_000, 5.0),
            Page("blog.example.com", "/", 15_300, 12.0),
            Page("shop.example.com", "/", 11_000, 5.0),
            Page("shop.example.com", "/cart/", 7_400, 1.5),
        ]
        for n in range(1, 161):
            slug = "-".join(r.sample(WORDS, 3))
            year = 2019 + n % 5
            pages.append(
                Page(
                    "blog.example.com",
                    f"/{year}/{1 + n % 12:02d}/{slug}/",
                    r.randint(8_000, 60_000),
                    12.0 / n**0.9,
                )
            )
        for n in range(1, 61):
            pages.append(
                Page(
                    "www.example.com",
                    f"/docs/{r.choice(WORDS)}/{r.choice(WORDS)}-{n}.html",
                    r.randint(5_000, 30_000),
                    4.0 / n**0.8,
                )
            )
        for n in range(1, 41):
            pages.append(
                Page(
                    "shop.example.com",
                    f"/product/{1000 + n}/",
                    r.randint(9_000, 25_000),
                    3.0 / n**0.7,
                )
            )
        self.pages = pages
        self.pageWeights = _cumulative(p.weight for p in pages)

    def _randomIP(self) -> str:
        r = self.random
        first = r.choice(
            (
                23,
                31,
                45,
                62,
                73,
                81,
                89,
                91,
                98,
                104,
                109,
                151,
                176,
                185,
                188,
                195,
                203,
                212,
                217,
            )
        )
        return f"{first}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def _buildClients(self) -> None:
        r = self.random
        clients: list[Client] = []
        for _ in range(self.nClients):
            agent = r.choice(BROWSERS).format(v=r.randint(118, 124), m=r.randint(0, 4))
            clients.append(Client(self._randomIP(), agent, "browser"))
        for prefix, agent in CRAWLERS:
            for _ in range(3):
                clients.append(Client(f"{prefix}{r.randint(1, 254)}", agent, "crawler"))
        for agent in SCANNER_AGENTS:
            for _ in range(2):
                clients.append(Client(self._randomIP(), agent, "scanner"))
        self.clients = clients
        # A few clients do most of the browsing; crawlers and scanners are busy.
        weights = [1.0 / (n + 1) ** 0.85 for n in range(self.nClients)]
        weights += [0.9] * (len(CRAWLERS) * 3) + [0.25] * (len(SCANNER_AGENTS) * 2)
        self.clientWeights = _cumulative(weights)

    # Time --------------------------------------------------------------------

    def _minuteCounts(self) -> Iterator[tuple[int, int]]:
        """
        Yields (minute, count) so that counts add up to C{self.lines}, with
        the rate following a day curve (low at 4 am, high mid-afternoon).
        """
        minutes = self.days * 24 * 60
        weights = []
        for m in range(minutes):
            hour = (m / 60.0) % 24
            day = 1.0 + 0.9 * math.sin((hour - 9.0) / 24.0 * 2 * math.pi)
            weights.append(day * self.random.uniform(0.85, 1.15))
        total = sum(weights)
        done = 0
        cumulative = 0.0
        for m, w in enumerate(weights):
            cumulative += w
            target = round(self.lines * cumulative / total)
            if target > done:
                yield m, target - done
                done = target

    # Requests ----------------------------------------------------------------

    def __iter__(self) -> Iterator[str]:
        """
        The log lines, in time order, without line ends.
        """
        r = self.random
        pending: list[tuple[int, str]] = []
        produced = 0
        for minute, count in self._minuteCounts():
            base = self.start + timedelta(minutes=minute)
            seconds = sorted(r.randrange(60) for _ in range(count))
            for second in seconds:
                if not pending:
                    pending = self._visit()
                    pending.reverse()
                _, line = pending.pop()
                stamp = base + timedelta(seconds=second)
                yield line.replace("\x00", _clf(stamp), 1)
                produced += 1
        assert produced == self.lines

    def _visit(self) -> list[tuple[int, str]]:
        """
        One client's burst of requests (a page and its assets, a crawl step,
        a probe), each line with a placeholder for its time.
        """
        r = self.random
        client = self.clients[_pick(r, self.clientWeights)]
        if client.kind == "scanner":
            path = r.choice(PROBES)
            method = "POST" if path.endswith(".php") and r.random() < 0.3 else "GET"
            vhost, port = self._vhost()
            return [(0, self._line(vhost, port, client, method, path, 404, 196, "-"))]
        page = self.pages[_pick(r, self.pageWeights)]
        port = 443 if page.vhost != "example.com" else 80
        if client.kind == "crawler":
            status, size = self._pageStatus(page)
            if r.random() < 0.05:
                return [
                    (
                        0,
                        self._line(
                            page.vhost, port, client, "GET", "/robots.txt", 200, 68, "-"
                        ),
                    )
                ]
            return [
                (
                    0,
                    self._line(
                        page.vhost, port, client, "GET", page.path, status, size, "-"
                    ),
                )
            ]
        referrer = r.choice(SEARCH_REFERRERS) if r.random() < 0.35 else "-"
        if r.random() < 0.4 and page.path != "/":
            referrer = f"https://{page.vhost}/"
        method = "POST" if page.path == "/contact/" and r.random() < 0.2 else "GET"
        if method == "GET" and r.random() < 0.01:
            method = "HEAD"
        if page.path.endswith("/") and r.random() < 0.03:
            # An old link without the trailing slash: a redirect first.
            lines = [
                (
                    0,
                    self._line(
                        page.vhost,
                        port,
                        client,
                        method,
                        page.path.rstrip("/") or "/",
                        301,
                        235,
                        referrer,
                    ),
                )
            ]
        else:
            lines = []
        status, size = self._pageStatus(page)
        lines.append(
            (
                0,
                self._line(
                    page.vhost, port, client, method, page.path, status, size, referrer
                ),
            )
        )
        if status == 200 and method == "GET" and not page.path.endswith(".xml"):
            pageURL = f"https://{page.vhost}{page.path}"
            for asset, assetSize in ASSETS:
                # A returning browser mostly has the assets cached: no
                # request at all, or a conditional one answered 304.
                x = r.random() if client.seenAssets else 1.0
                if x < 0.55:
                    continue
                status, size = (304, 0) if x < 0.85 else (200, assetSize)
                lines.append(
                    (
                        0,
                        self._line(
                            page.vhost,
                            port,
                            client,
                            "GET",
                            asset,
                            status,
                            size,
                            pageURL,
                        ),
                    )
                )
            client.seenAssets = True
        return lines

    def _vhost(self) -> tuple[str, int]:
        r = self.random
        total = sum(w for _, _, w in VHOSTS)
        x = r.uniform(0, total)
        for name, port, weight in VHOSTS:
            x -= weight
            if x <= 0:
                return name, port
        return VHOSTS[0][0], VHOSTS[0][1]

    def _pageStatus(self, page: Page) -> tuple[int, int]:
        x = self.random.random()
        if x < 0.004:
            return 500, 531
        if x < 0.02:
            return 404, 196
        size = max(200, int(page.size * self.random.uniform(0.97, 1.03)))
        return 200, size

    def _line(
        self,
        vhost: str,
        port: int,
        client: Client,
        method: str,
        path: str,
        status: int,
        size: int,
        referrer: str,
    ) -> str:
        sizeText = str(size) if size else "-"
        return (
            f'{vhost}:{port} {client.ip} - - [\x00] "{method} {path} HTTP/1.1"'
            f' {status} {sizeText} "{referrer}" "{client.agent}"'
        )


def _clf(stamp: datetime) -> str:
    """
    A time as the common log format writes it: C{04/Mar/2024:13:55:36 +0000}.
    """
    return (
        f"{stamp.day:02d}/{MONTHS[stamp.month - 1]}/{stamp.year}:"
        f"{stamp.hour:02d}:{stamp.minute:02d}:{stamp.second:02d} +0000"
    )


def _cumulative(weights: Iterator[float] | list[float]) -> list[float]:
    total = 0.0
    out = []
    for w in weights:
        total += w
        out.append(total)
    return out


def _pick(r: random.Random, cumulative: list[float]) -> int:
    """
    An index drawn with the weights whose running sums are C{cumulative}.
    """
    x = r.random() * cumulative[-1]
    return min(bisect.bisect_right(cumulative, x), len(cumulative) - 1)


def generateLines(lines: int, *, seed: int = 1, days: int = 2) -> Iterator[str]:
    """
    Shorthand for iterating a L{LogGenerator}.
    """
    return iter(LogGenerator(lines, seed=seed, days=days))
