"""
C{python -m asynqueue.wire serve}: run a L{WireServer<asynqueue.wire.WireServer>}
until stopped (SIGTERM or Ctrl-C).

The secret comes from C{--secret-file} or the environment variable
C{ASYNQUEUE_WIRE_SECRET}, never from the command line (which other users
of the machine can read). Once listening, the server writes one line to
stdout: C{asynqueue.wire: serving on ADDRESS:PORT ...}.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

#: The environment variable holding the secret, if no file is given.
SECRET_ENV = "ASYNQUEUE_WIRE_SECRET"


def parser() -> argparse.ArgumentParser:
    """
    The command line's parser.
    """
    top = argparse.ArgumentParser(
        prog="python -m asynqueue.wire",
        description="Remote workers for AsynQueue over Twisted AMP.",
        allow_abbrev=False,
    )
    commands = top.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run tasks for the WireWorkers that connect",
        allow_abbrev=False,
        description=(
            f"Run tasks for WireWorkers. The secret comes from --secret-file"
            f" or ${SECRET_ENV}, never from the command line."
        ),
    )
    serve.add_argument("--port", type=int, required=True, help="TCP port (0: any)")
    serve.add_argument(
        "--interface", default="127.0.0.1", help="address to listen on (127.0.0.1)"
    )
    serve.add_argument("--secret-file", help="a file holding the secret")
    serve.add_argument("--certificate", help="PEM certificate for TLS")
    serve.add_argument("--key", help="PEM private key of --certificate")
    serve.add_argument(
        "--no-tls",
        action="store_true",
        help="plain TCP, for tests on a loopback interface only",
    )
    return top


def readSecret(secretFile: str | None, environ: dict[str, str]) -> str | bytes:
    """
    The secret: the file's content (without a final newline), else the
    environment variable's.

    @raise SystemExit: neither gives one, or the file can't be read.
    """
    if secretFile is not None:
        try:
            with open(secretFile, "rb") as f:
                data = f.read()
        except OSError as e:
            raise SystemExit(f"asynqueue.wire: can't read --secret-file: {e}") from e
        return data.rstrip(b"\r\n")
    secret = environ.get(SECRET_ENV)
    if not secret:
        raise SystemExit(
            f"asynqueue.wire: no secret: give --secret-file or set {SECRET_ENV}"
        )
    return secret


def _readFile(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SystemExit(f"asynqueue.wire: can't read {what}: {e}") from e


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the command line C{argv} (C{sys.argv[1:]} by default).
    """
    args = parser().parse_args(argv)
    secret = readSecret(args.secret_file, dict(os.environ))
    if args.no_tls and (args.certificate or args.key):
        raise SystemExit("asynqueue.wire: --no-tls and a certificate contradict")
    if bool(args.certificate) != bool(args.key):
        raise SystemExit(
            "asynqueue.wire: give both --certificate and --key, or neither"
        )
    certificate = key = None
    if args.certificate:
        certificate = _readFile(args.certificate, "--certificate")
        key = _readFile(args.key, "--key")

    from twisted.internet import task
    from twisted.internet.defer import Deferred
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from ._server import WireServer

    try:
        server = WireServer(
            secret, tls=not args.no_tls, certificate=certificate, key=key
        )
    except (TypeError, ValueError) as e:
        raise SystemExit(f"asynqueue.wire: {e}") from e
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )

    async def serve(reactor: Any) -> None:
        try:
            port = await server.listen(args.port, args.interface)
        except ValueError as e:
            raise SystemExit(f"asynqueue.wire: {e}") from e
        address = port.getHost()
        how = (
            "TLS, certificate sha256 " + server.binding.hex()
            if server.tls
            else "no TLS"
        )
        sys.stdout.write(
            f"asynqueue.wire: serving on {address.host}:{address.port} ({how})\n"
        )
        sys.stdout.flush()
        # Until the reactor stops (SIGTERM, Ctrl-C).
        await Deferred()

    task.react(lambda reactor: Deferred.fromCoroutine(serve(reactor)))


if __name__ == "__main__":
    main()
