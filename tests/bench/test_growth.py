"""
The benchmark's workloads of how cost grows (issue 21): transaction size
(C{txsize}) and memory against result size (C{streammemory}): their scales,
their records, the report's sections and plots, and the flatness target.
No database: the runs themselves are proved by C{./scripts/bench --smoke}.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from bench import cli, report, streammemory, txsize
from bench.config import BenchConfig
from bench.plots import plotStreamMemory, plotTxSize
from bench.stats import summarise
from bench.targets import TARGETS, Target, check
from bench.variants import BY_NAME

GROWTH = [
    "txsize-adbapi",
    "txsize-sasync",
    "txsize-sasync-readcommitted",
    "txsize-sasync-dbapi",
    "txsize-sasync-dbapi-readcommitted",
    "streammemory-psycopg2-named",
    "streammemory-sasync-deferator",
    "streammemory-sasync-consumer",
]


def test_listed(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--list --only txsize,streammemory} lists every variant of both.
    """
    assert cli.main(["--list", "--only", "txsize,streammemory"]) == 0
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert listed == GROWTH


def test_resultSizes() -> None:
    """
    Result sizes are the powers of ten from 1,000 to 10 x C{--rows}: up to
    10M at full scale, two tiny ones under C{--smoke}, bounded by C{--rows}.
    """
    full = BenchConfig()
    assert streammemory.sizes(full) == [
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
    ]
    assert streammemory.sizes(full.smokeScaled()) == [1_000, 10_000]
    assert streammemory.sizes(replace(full, rows=20_000)) == [1_000, 10_000, 100_000]
    assert streammemory.sizes(replace(full, rows=50)) == [500]


def test_transactionsPerSize() -> None:
    """
    Each transaction size runs C{--ops} statements, and at least one
    transaction per caller (2 x C{--concurrency} callers).
    """
    config = BenchConfig(ops=2000, concurrency=8)
    counts = [txsize.transactions(config, size) for size in txsize.SIZES]
    assert counts == [2000, 200, 20]
    smoke = config.smokeScaled()
    assert [txsize.transactions(smoke, size) for size in txsize.SIZES] == [40, 16, 16]
    assert txsize.SIZES == (1, 10, 100)


def test_statements() -> None:
    """
    A transaction of C{size} statements runs C{size} single-row INSERTs on
    the cursor it is given, each with its own parameters.
    """
    executed: list[tuple[str, Any]] = []

    class Cursor:
        def execute(self, sql: str, params: Any = None) -> None:
            executed.append((sql, params))

        def fetchone(self) -> Any:
            raise AssertionError("not read")

        def fetchall(self) -> list[Any]:
            raise AssertionError("not read")

    txsize.insertRows(Cursor(), 7, 3)
    assert [sql for sql, _ in executed] == [txsize.INSERT] * 3
    assert [params["seq"] for _, params in executed] == [0, 1, 2]
    assert {params["txn"] for _, params in executed} == {7}


def test_sizesRecord(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A C{streammemory} variant's record: every size's point, the largest
    size's memory and lag, all rows counted.
    """
    ran: list[tuple[str, int]] = []

    def runSize(how: str, rows: int, config: BenchConfig) -> dict[str, Any]:
        ran.append((how, rows))
        return {
            "counted": rows,
            "seconds": rows / 1e6,
            "rate": 1e6,
            "peakRssMb": 60.0 + rows / 1e5,
            "baselineRssMb": 59.0,
            "lag": {"p99Ms": rows / 1e4},
        }

    monkeypatch.setattr(streammemory, "runSize", runSize)
    config = BenchConfig().smokeScaled()
    record = streammemory.runSizes(config, "consumer")
    assert ran == [("consumer", 1_000), ("consumer", 10_000)]
    assert [p["rows"] for p in record["sweep"]] == [1_000, 10_000]
    assert record["count"] == record["counted"] == 11_000
    assert record["peakRssMb"] == 60.1
    assert record["sweep"][-1]["growthMb"] == 1.1
    assert record["lag"] == {"p99Ms": 1.0}


def _txsizeRun(rate: float) -> dict[str, Any]:
    points = [
        {
            "statements": size,
            "transactions": 100,
            "seconds": 1.0,
            "rate": rate * size,
            "txnRate": rate,
            "p50Ms": 1.0,
            "p99Ms": 2.0 * size,
            "cpuUsPerStatement": 100.0 / size,
            "retries": 0,
            "rows": 100 * size,
        }
        for size in txsize.SIZES
    ]
    return {
        "unit": "stmts",
        "count": 11100,
        "seconds": 3.0,
        "rate": rate * 37,
        "sweep": points,
    }


def _memoryRun(peaks: list[float]) -> dict[str, Any]:
    points = [
        {
            "rows": rows,
            "counted": rows,
            "seconds": 1.0,
            "rate": float(rows),
            "peakRssMb": peak,
            "baselineRssMb": 50.0,
            "growthMb": peak - 50.0,
        }
        for rows, peak in zip([1_000, 10_000, 100_000], peaks, strict=True)
    ]
    return {
        "unit": "rows",
        "count": 111_000,
        "seconds": 3.0,
        "rate": 37_000.0,
        "peakRssMb": peaks[-1],
        "baselineRssMb": 50.0,
        "sweep": points,
    }


def _data() -> dict[str, Any]:
    runs = {
        "txsize-adbapi": [_txsizeRun(1000.0)],
        "txsize-sasync": [_txsizeRun(800.0)],
        "streammemory-psycopg2-named": [_memoryRun([30.0, 30.0, 30.5])],
        "streammemory-sasync-deferator": [_memoryRun([60.0, 61.0, 62.0])],
        "streammemory-sasync-consumer": [_memoryRun([60.0, 80.0, 160.0])],
    }
    config = BenchConfig()
    machine = {
        "gitCommit": "0" * 7,
        "nproc": 2,
        "cpu": "test",
        "memoryGb": 1,
        "os": "test",
        "postgres": "test",
        "python": "3",
        "packages": {},
    }
    return {
        "meta": {
            "command": "./scripts/bench --only txsize,streammemory",
            "config": asdict(config),
            "machine": machine,
            "started": "now",
            "seconds": 1.0,
        },
        "skipped": {},
        "errors": {},
        "runs": runs,
        "summary": summarise(runs),
    }


def test_reportSections(tmp_path: Path) -> None:
    """
    The report renders both workloads: a row per variant and size, ratios
    against adbapi at the same size, both plots.
    """
    data = _data()
    summary = data["summary"]
    assert plotTxSize(summary, tmp_path / "txsize.png")
    assert plotStreamMemory(summary, tmp_path / "streammemory.png")
    assert (tmp_path / "txsize.png").stat().st_size > 0
    assert (tmp_path / "streammemory.png").stat().st_size > 0
    plots = {"txsize": "p/txsize.png", "streammemory": "p/streammemory.png"}
    page = report.render(data, "x.json", plots)
    assert "## 7. How cost grows with transaction size" in page
    assert "## 8. Memory against result size" in page
    assert "![txsize](p/txsize.png)" in page
    assert "![streammemory](p/streammemory.png)" in page
    assert "| **txsize-sasync** | 100 | 800 | 80,000 | 0.80x |" in page
    assert "| txsize-adbapi | 10 | 1,000 | 10,000 | 1.00x |" in page
    assert "| **streammemory-sasync-consumer** | 100,000 | 100,000 | 160.0 |" in page


def test_plotsOnlyWhenRun(tmp_path: Path) -> None:
    """
    Without the workloads in the run, no plot is drawn.
    """
    assert not plotTxSize({}, tmp_path / "a.png")
    assert not plotStreamMemory({}, tmp_path / "b.png")
    assert list(tmp_path.iterdir()) == []


def test_flatMemoryTarget() -> None:
    """
    The sAsync streams' target: peak RSS at the largest size at most a few
    MB over the smallest's; a stream whose memory grows with the rows fails.
    """
    summary = _data()["summary"]
    flat = [t for t in TARGETS if t.metric == "rssSpreadMb"]
    assert {t.variant for t in flat} == {
        "streammemory-sasync-deferator",
        "streammemory-sasync-consumer",
    }
    results = {t.variant: check(t, summary) for t in flat}
    assert results["streammemory-sasync-deferator"][0] == "pass"
    assert results["streammemory-sasync-deferator"][1].startswith("+2.0 MB")
    assert results["streammemory-sasync-consumer"][0] == "FAIL"
    missing = Target(21, "streammemory-psycopg2-named", "rssSpreadMb", 8)
    assert check(missing, {})[0] == "not measured"
    assert "largest" in flat[0].describe()


def test_registered() -> None:
    """
    The growth variants name targets that exist, and sAsync's are marked
    as ours (bold in the report, red in the plots).
    """
    for name in GROWTH:
        module, function = BY_NAME[name].target.split(":")
        assert module in ("bench.txsize", "bench.streammemory")
        assert callable(
            getattr(txsize if module == "bench.txsize" else streammemory, function)
        )
        assert (BY_NAME[name].needs == "sasync") == ("sasync" in name)


def test_ratioJustShortShowsWhy() -> None:
    """
    A ratio that fails by less than rounding to two places shows a third
    place, so that the report does not read "1.00x FAIL" against ">= 1x";
    others keep two places.
    """
    target = Target(21, "sql-sasync-dbapi-readcommitted", "ratio", 1.0, "sql-adbapi")

    def summary(rate: float) -> dict[str, Any]:
        return {
            "sql": {
                "variants": {
                    "sql-adbapi": {"rate": 2289.0},
                    "sql-sasync-dbapi-readcommitted": {"rate": rate},
                }
            }
        }

    assert check(target, summary(2287.0)) == ("FAIL", "0.999x sql-adbapi")
    assert check(target, summary(2289.0)) == ("pass", "1.00x sql-adbapi")
    assert check(target, summary(1831.2)) == ("FAIL", "0.80x sql-adbapi")
