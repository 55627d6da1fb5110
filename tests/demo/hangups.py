"""
A measurement (not a test): how long a small C{/entries} request waits
after many clients asked for every entry and hung up.

    python -m tests.demo.hangups --url sqlite:///sasync-demo.db --lines 20000
    python -m tests.demo.hangups --url postgresql://postgres@127.0.0.1/bench \\
        --lines 20000 --clients 200

It fills the database with C{sasync demo --fresh} (when C{--lines} is
given), starts C{sasync serve} on a free port, opens C{--clients}
connections that each send C{GET /entries} and close after C{--after}
seconds without reading, then times C{GET /entries?limit=1} and reports how
many streams C{/health} still counts. A server that cancels the calls of
gone clients answers at once; one that streams their rows to nobody first
makes the small request wait for all of that.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time

from tests.demo.healthload import fill, measurementParser, serving


def get(port: int, path: str) -> tuple[float, bytes]:
    """
    The seconds C{GET path} took, and its body.
    """
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return time.monotonic() - began, body


def measure(args: argparse.Namespace) -> int:
    """
    Fill (optionally), serve, hang up, time the small request.
    """
    if args.lines:
        fill(args.url, args.lines)
    with serving(args.url) as (_, port):
        sockets = []
        for _ in range(args.clients):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /entries HTTP/1.1\r\nHost: hangups\r\n\r\n")
            sockets.append(s)
        time.sleep(args.after)
        for s in sockets:
            s.close()
        seconds, body = get(port, "/entries?limit=1")
        _, health = get(port, "/health")
        streams = json.loads(health)["streams"]
    print(
        f"{args.url}: {args.clients} clients asked for /entries and hung up after"
        f" {args.after:g} s; /entries?limit=1 then took {seconds:.2f} s"
        f" ({len(body.splitlines())} line), {streams} streams still open"
    )
    return 0


def main() -> int:
    parser = measurementParser(__doc__ or "", clients=40)
    parser.add_argument("--after", type=float, default=0.5)
    return measure(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
