"""
The C{sasync demo} command end to end, as a user runs it: a subprocess in
a temporary folder, on SQLite (the default database file) and PostgreSQL.
The report it prints must match what an independent count of the generated
log finds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as SA

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    return env


def runSasync(
    folder: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """
    Run C{python -m sasync ARGS} in C{folder}.
    """
    return subprocess.run(
        [sys.executable, "-m", "sasync", *args],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


MONTHS = {"Mar": 3}


def countLog(path: Path) -> dict[str, Any]:
    """
    What the report should say, counted from the log file with a plain split
    (not the demo's parser).
    """
    urls: Counter[str] = Counter()
    ips: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    hours: Counter[str] = Counter()
    sent = 0
    lines = path.read_text().splitlines()
    for line in lines:
        prefix, request, statusSize = line.split('"')[:3]
        fields = prefix.split()
        ips[fields[1]] += 1
        urls[request.split()[1]] += 1
        status, size = statusSize.split()
        statuses[int(status)] += 1
        sent += 0 if size == "-" else int(size)
        stamp = fields[4].lstrip("[")  # 04/Mar/2024:13:55:36
        day, month, rest = stamp.split("/")
        year, hour = rest.split(":")[:2]
        hours[f"{year}-{MONTHS[month]:02d}-{day}T{hour}:00:00"] += 1
    return {
        "lines": len(lines),
        "urls": urls,
        "ips": ips,
        "statuses": statuses,
        "hours": hours,
        "bytes": sent,
    }


def checkReport(report: dict[str, Any], expected: dict[str, Any], top: int) -> None:
    """
    The report's numbers are the log's.
    """
    assert report["entries"] == expected["lines"]
    assert report["ips"] == len(expected["ips"])
    assert report["bytes"] == expected["bytes"]
    assert {s["status"]: s["requests"] for s in report["statusMix"]} == dict(
        expected["statuses"]
    )
    for key, name, counter in (("topURLs", "url", "urls"), ("topIPs", "ip", "ips")):
        rows = report[key]
        assert [r["requests"] for r in rows] == sorted(
            expected[counter].values(), reverse=True
        )[:top]
        for r in rows:
            assert expected[counter][r[name]] == r["requests"]
    perHour = {h["hour"]: h["requests"] for h in report["perHour"]}
    assert perHour == dict(expected["hours"])
    assert sum(perHour.values()) == expected["lines"]


def test_demoOnDefaultSQLite(tmp_path: Path) -> None:
    """
    With no C{--url}, the demo makes C{sasync-demo.db} in the current folder,
    ingests the generated lines and prints a report whose numbers match the
    log; a second run adds to it, and C{--fresh} starts over.
    """
    result = runSasync(
        tmp_path,
        "demo",
        "--lines", "3000",
        "--save-log", "access.log",
        "--json", "report.json",
        "--batch", "500",
        "--top", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sasync-demo.db").exists()
    out = result.stdout
    assert "Ingested 3,000 entries" in out
    for title in ("Top URLs", "Top client addresses", "Requests per hour", "Status"):
        assert title in out
    assert "rows/s" in result.stderr  # the progress bar
    expected = countLog(tmp_path / "access.log")
    assert expected["lines"] == 3000
    report = json.loads((tmp_path / "report.json").read_text())
    checkReport(report, expected, top=5)
    topURL = report["topURLs"][0]
    assert f"{topURL['requests']:,}" in out and topURL["url"] in out

    again = runSasync(tmp_path, "demo", "--lines", "500", "-q", "--json", "r2.json")
    assert again.returncode == 0, again.stderr
    assert "already holds 3,000 entries" in again.stdout
    assert json.loads((tmp_path / "r2.json").read_text())["entries"] == 3500

    fresh = runSasync(
        tmp_path, "demo", "--lines", "200", "-q", "--fresh", "--json", "r3.json"
    )
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads((tmp_path / "r3.json").read_text())["entries"] == 200


def test_demoOnPostgreSQL(tmp_path: Path, postgresqlURL: str) -> None:
    """
    The same program on PostgreSQL with C{--url}: the same numbers.
    """
    result = runSasync(
        tmp_path,
        "demo",
        "--url", postgresqlURL,
        "--lines", "3000",
        "--seed", "11",
        "--save-log", "access.log.gz",
        "--json", "report.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Ingested 3,000 entries" in result.stdout
    import gzip

    plain = tmp_path / "access.log"
    plain.write_bytes(gzip.decompress((tmp_path / "access.log.gz").read_bytes()))
    checkReport(json.loads((tmp_path / "report.json").read_text()), countLog(plain), 10)
    assert not (tmp_path / "sasync-demo.db").exists()


def test_demoReadsGivenLog(tmp_path: Path, sqliteURL: str) -> None:
    """
    C{--log FILE} ingests a log file (gzipped here, with a bad line in it
    that is skipped and counted).
    """
    made = runSasync(tmp_path, "demo", "--url", sqliteURL, "--lines", "800",
                     "--save-log", "made.log", "-q")  # fmt: skip
    assert made.returncode == 0, made.stderr
    import gzip

    text = (tmp_path / "made.log").read_text() + "this is not a log line\n"
    (tmp_path / "access.log.gz").write_bytes(gzip.compress(text.encode()))
    url = f"sqlite:///{tmp_path / 'other.db'}"
    result = runSasync(tmp_path, "demo", "--url", url, "--log", "access.log.gz",
                       "--json", "report.json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Ingested 800 entries" in result.stdout
    assert "1 lines skipped" in result.stdout
    checkReport(
        json.loads((tmp_path / "report.json").read_text()),
        countLog(tmp_path / "made.log"),
        10,
    )


def test_badUsage(tmp_path: Path) -> None:
    """
    Bad options are refused with usage and exit status 2; an unreachable
    database is one clear error line and status 1.
    """
    result = runSasync(tmp_path, "demo", "--lines", "lots")
    assert result.returncode == 2
    assert "--lines" in result.stderr
    result = runSasync(tmp_path, "demo", "--lines", "10", "--log", "x.log")
    assert result.returncode == 2
    result = runSasync(
        tmp_path, "demo", "--lines", "10", "-q",
        "--url", "postgresql://nobody@127.0.0.1:1/none",
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: StartupError: LogBroker did not start" in result.stderr
    assert "Connection refused" in result.stderr
    assert "Traceback" not in result.stderr


def _consistency(url: str) -> tuple[int, int]:
    """
    (entries, entries whose indexed values are missing).
    """
    engine = SA.create_engine(url)
    try:
        with engine.connect() as conn:
            meta = SA.MetaData()
            entries = SA.Table("entries", meta, autoload_with=conn)
            count = conn.execute(SA.select(SA.func.count()).select_from(entries))
            total = int(count.scalar_one())
            dangling = 0
            for name in ("vhost", "url", "referrer", "useragent"):
                values = SA.Table(name, meta, autoload_with=conn)
                joined = entries.outerjoin(
                    values, values.c.id == entries.c[f"id_{name}"]
                )
                dangling += conn.execute(
                    SA.select(SA.func.count())
                    .select_from(joined)
                    .where(values.c.id.is_(None))
                ).scalar_one()
        return total, int(dangling)
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_ctrlCStopsCleanly(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """
    Ctrl-C (SIGINT) during the ingestion: exit status 130, the batches
    committed stay whole (a multiple of the batch size, every reference
    resolvable), and the next run carries on from there.
    """
    url: str = request.getfixturevalue(f"{kind}URL")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sasync",
            "demo",
            "--url",
            url,
            "--lines",
            "3000000",
            "--batch",
            "1000",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        header = process.stdout.readline()
        assert header.startswith("sAsync demo:"), header
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                if _consistency(url)[0] >= 5000:
                    break
            except SA.exc.SQLAlchemyError:
                continue
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "Interrupted:" in out
    entries, dangling = _consistency(url)
    assert 5000 <= entries < 3_000_000
    assert entries % 1000 == 0
    assert dangling == 0
    assert f"{entries:,} entries were committed" in out

    again = runSasync(tmp_path, "demo", "--url", url, "--lines", "500", "-q")
    assert again.returncode == 0, again.stderr
    assert _consistency(url) == (entries + 500, 0)


def test_plot(tmp_path: Path, sqliteURL: str) -> None:
    """
    C{--plot FILE.png} draws requests per hour (when matplotlib is there).
    """
    pytest.importorskip("matplotlib")
    result = runSasync(tmp_path, "demo", "--url", sqliteURL, "--lines", "500", "-q",
                       "--plot", "hours.png")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hours.png").read_bytes().startswith(b"\x89PNG")


def test_nextRunResumes(tmp_path: Path, sqliteURL: str) -> None:
    """
    After Ctrl-C, the same command carries on where the interrupted run
    stopped: it adds only the entries that run did not commit, and the
    database holds each line of the log once.
    """
    args = ["demo", "--url", sqliteURL, "--lines", "100000", "--batch", "1000"]
    process = subprocess.Popen(
        [sys.executable, "-m", "sasync", *args, "-q"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            try:
                if _consistency(sqliteURL)[0] >= 3000:
                    break
            except SA.exc.SQLAlchemyError:
                continue
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (out, err)
    committed, dangling = _consistency(sqliteURL)
    assert 3000 <= committed < 100_000 and dangling == 0
    again = runSasync(tmp_path, *args, "-q")
    assert again.returncode == 0, again.stderr
    assert f"after committing {committed:,} entries" in again.stdout
    assert f"Ingested {100_000 - committed:,} entries" in again.stdout
    assert "100,000 requests" in again.stdout
    assert _consistency(sqliteURL) == (100_000, 0)


def test_outputReaderGone(tmp_path: Path) -> None:
    """
    C{sasync demo | head -1}: once the reader of its output is gone, the
    demo ends quietly with status 141 (128 + SIGPIPE, as a shell reports
    C{yes | head -1}), without a BrokenPipeError, and its database is left
    consistent.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "sasync", "demo", "--lines", "5000", "-q"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        header = process.stdout.readline()
        assert header.startswith("sAsync demo:"), header
        process.stdout.close()
        err = process.stderr.read()
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    assert process.returncode == 141, err
    assert "BrokenPipe" not in err and "Traceback" not in err, err
    assert err == ""
    assert _consistency(f"sqlite:///{tmp_path / 'sasync-demo.db'}") == (5000, 0)


def test_serveNeedsTheDemoFirst(tmp_path: Path) -> None:
    """
    C{sasync serve} in a folder without the demo's database says to run the
    demo first, and makes no empty database.
    """
    result = runSasync(tmp_path, "serve", "--port", "0")
    assert result.returncode == 1
    assert "run the demo first" in result.stderr
    assert "sasync-demo.db" in result.stderr
    assert list(tmp_path.iterdir()) == []
