"""
The log generator: deterministic, exact in count, in time order, parseable.
"""

from __future__ import annotations

from collections import Counter

from sasync.demo.loggen import LogGenerator
from sasync.demo.logparse import LogParser


def test_sameSeedSameLines() -> None:
    """
    The same seed gives the same log, line for line; another seed another.
    """
    first = list(LogGenerator(2000, seed=7))
    assert first == list(LogGenerator(2000, seed=7))
    assert first != list(LogGenerator(2000, seed=8))


def test_exactCountInTimeOrder() -> None:
    """
    Exactly the lines asked for, every one parseable, in time order, within
    the days asked for.
    """
    gen = LogGenerator(5000, seed=3, days=3)
    parser = LogParser()
    records = list(parser.parse(gen))
    assert len(records) == 5000
    assert parser.skipped == 0
    times = [r.dt for r in records]
    assert times == sorted(times)
    assert (times[-1] - times[0]).days <= 3
    assert times[0] >= gen.start.replace(tzinfo=None)


def test_realisticMix() -> None:
    """
    The log has what a report should find: several virtual hosts, mostly
    200s with some 304s and 404s, assets referred by pages, a busiest hour in
    the afternoon rather than at night.
    """
    records = list(LogParser().parse(LogGenerator(20_000, seed=1)))
    statuses = Counter(r.status for r in records)
    assert statuses[200] > len(records) / 2
    assert statuses[304] > 0 and statuses[404] > 0
    assert len({r.vhost for r in records}) >= 3
    assets = [r for r in records if r.url.startswith("/static/")]
    assert assets and all(r.referrer.startswith("https://") for r in assets)
    hours = Counter(r.dt.hour for r in records)
    assert hours[15] > 3 * hours[3]


def test_zeroLines() -> None:
    """
    Zero lines is an empty log, not an error.
    """
    assert list(LogGenerator(0)) == []
