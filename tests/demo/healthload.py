"""
A load measurement (not a test): the latency of C{/health} while many
clients stream the whole entries table from C{sasync serve}.

    python -m tests.demo.healthload --url sqlite:///sasync-demo.db --lines 200000
    python -m tests.demo.healthload --url postgresql://postgres@127.0.0.1/bench \\
        --lines 200000 --connections 20

It fills the database with C{sasync demo --fresh} (when C{--lines} is
given), starts C{sasync serve} on a free port, starts C{--clients} streaming
clients in another process (each reads C{/entries} to the end, as fast as it
can), and meanwhile asks C{/health} every C{--interval} seconds over one
keep-alive connection, timing each answer. It prints the latency
percentiles, what the streams got, and the server's peak memory. Everything
stays on 127.0.0.1 and stops by itself (C{--timeout}).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    return env


def percentile(values: list[float], p: float) -> float:
    """
    The C{p}th percentile (nearest rank) of C{values}.
    """
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# The streaming clients (a process of their own) ------------------------------


def runStreamers(port: int, clients: int, timeout: float) -> None:
    """
    Open C{clients} connections reading C{/entries} to the end; print a JSON
    summary line when all are done.
    """
    from twisted.internet import protocol, reactor

    results: list[dict[str, Any]] = []
    started = time.monotonic()

    class Streamer(protocol.Protocol):
        def __init__(self) -> None:
            self.bytes = 0
            self.rows = 0
            self.tail = b""

        def connectionMade(self) -> None:
            self.transport.write(  # type: ignore[union-attr]
                b"GET /entries HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n"
            )

        def dataReceived(self, data: bytes) -> None:
            self.bytes += len(data)
            # Each line ends "}\n" (a line may be split between two reads).
            self.rows += (self.tail + data).count(b"}\n")
            self.tail = data[-1:]

        def connectionLost(self, reason: Any = None) -> None:
            results.append(
                {
                    "bytes": self.bytes,
                    "rows": self.rows,
                    "s": time.monotonic() - started,
                }
            )
            if len(results) == clients:
                reactor.stop()  # type: ignore[attr-defined]

    factory: Any = protocol.ClientFactory.forProtocol(Streamer)
    for _ in range(clients):
        reactor.connectTCP("127.0.0.1", port, factory)  # type: ignore[attr-defined]
    reactor.callLater(timeout, reactor.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    print(json.dumps({"streams": results}), flush=True)


# The measurement -------------------------------------------------------------


class Prober(threading.Thread):
    """
    Asks C{/health} every C{interval} seconds until stopped, timing each.
    """

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            began = time.perf_counter()
            try:
                conn.request("GET", "/health")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.errors += 1
                else:
                    self.latencies.append(time.perf_counter() - began)
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            time.sleep(self.interval)
        conn.close()


@contextmanager
def serving(url: str, *options: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """
    Run C{sasync serve} on C{url} (with C{options}) on a free port, for the
    block: its process and its port. Ctrl-C stops it afterwards.
    """
    server = subprocess.Popen(
        [sys.executable, "-m", "sasync", "serve", "--url", url, "--port", "0",
         *options],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        yield server, int(line.split("http://127.0.0.1:")[1].split("/")[0])
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def measure(args: argparse.Namespace) -> int:
    """
    Fill (optionally), serve, load, probe, report.
    """
    import psutil

    python = sys.executable
    if args.lines:
        fill(args.url, args.lines)
    options: list[str] = []
    if args.connections:
        options += ["--connections", str(args.connections)]
    if args.fetch:
        options += ["--fetch", str(args.fetch)]
    with serving(args.url, *options) as (server, port):
        serverProcess = psutil.Process(server.pid)
        baseline = serverProcess.memory_info().rss
        idle = Prober(port, args.interval)
        idle.start()
        time.sleep(2.0)
        idle.stop.set()
        idle.join()

        prober = Prober(port, args.interval)
        streamers = subprocess.Popen(
            [
                python,
                "-m",
                "tests.demo.healthload",
                "--stream",
                str(port),
                "--clients",
                str(args.clients),
                "--timeout",
                str(args.timeout),
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        began = time.monotonic()
        prober.start()
        peak = baseline
        while streamers.poll() is None:
            peak = max(peak, serverProcess.memory_info().rss)
            time.sleep(0.1)
        elapsed = time.monotonic() - began
        prober.stop.set()
        prober.join()
        out = streamers.stdout.read() if streamers.stdout else ""
        streams = json.loads(out.strip().splitlines()[-1])["streams"] if out else []

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    rows = [s["rows"] for s in streams]
    totalRows = sum(rows)
    lat = prober.latencies
    print(f"server: {args.url}, {args.clients} clients streaming /entries")
    print(
        f"streams: {len(streams)} done in {elapsed:.1f} s, rows each"
        f" min {min(rows, default=0):,} max {max(rows, default=0):,},"
        f" {totalRows:,} rows ({sum(s['bytes'] for s in streams) / 1e6:,.0f} MB),"
        f" {totalRows / elapsed:,.0f} rows/s in all"
    )
    if idle.latencies:
        print(f"/health idle: {len(idle.latencies)} probes, p50"
              f" {ms(percentile(idle.latencies, 50))}, p99"
              f" {ms(percentile(idle.latencies, 99))}")  # fmt: skip
    if lat:
        print(
            f"/health under load: {len(lat)} probes ({prober.errors} errors),"
            f" p50 {ms(percentile(lat, 50))}, p90 {ms(percentile(lat, 90))},"
            f" p99 {ms(percentile(lat, 99))}, max {ms(max(lat))}"
        )
    print(f"server memory: {baseline / 1e6:,.0f} MB idle, {peak / 1e6:,.0f} MB peak")
    return 0


def measurementParser(doc: str, clients: int) -> argparse.ArgumentParser:
    """
    The options every demo measurement takes: C{--url}, C{--lines} (fill
    first) and C{--clients}; C{doc}'s first paragraph describes it.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--url", default="sqlite:///sasync-demo.db")
    parser.add_argument(
        "--lines", type=int, default=0, help="fill with this many first"
    )
    parser.add_argument("--clients", type=int, default=clients)
    return parser


def fill(url: str, lines: int) -> None:
    """
    Fill C{url} with C{lines} generated log lines (C{sasync demo --fresh}).
    """
    print(f"filling {url} with {lines:,} lines ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "sasync", "demo", "--url", url, "--fresh", "-q",
         "--lines", str(lines)],
        check=True,
        env=_env(),
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def main() -> int:
    parser = measurementParser(__doc__, clients=20)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--connections", type=int, default=0)
    parser.add_argument("--fetch", type=int, default=0, help="serve's --fetch")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--stream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream:
        runStreamers(args.stream, args.clients, args.timeout)
        return 0
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
