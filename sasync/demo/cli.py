"""
The C{sasync} command line: C{sasync demo} and C{sasync serve} (also
C{python -m sasync ...}).

This module is the program's terminal front end, so it prints; the library
modules beside it log through C{twisted.logger} instead.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from .logparse import LogFile

#: Where the demo's database is, unless told otherwise.
DEFAULT_URL = "sqlite:///sasync-demo.db"

#: Generated lines, unless told otherwise: some 12 seconds on SQLite (2 cores).
DEFAULT_LINES = 400_000

#: Rows per fetch from the worker when serving.
SERVE_FETCH = 100

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: Exit status once stdout's reader is gone (128 + SIGPIPE, as for
#: C{yes | head -1}).
EXIT_PIPE_CLOSED = 141


def _displayURL(url: str) -> str:
    """
    C{url} with any password hidden.
    """
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def normalizeURL(url: str) -> str:
    """
    C{url} with the project's driver when it names none (see
    L{sasync.connection.withDefaultDriver}), as a string with its password.
    """
    from sasync.connection import withDefaultDriver

    return withDefaultDriver(url).render_as_string(hide_password=False)


class Interrupt:
    """
    Ctrl-C (SIGINT) and SIGTERM, turned into a flag and a Deferred in the
    reactor thread. The first signal asks the program to stop cleanly; a
    second one, while it does, exits at once (transactions keep the
    database consistent even then: the uncommitted one is rolled back).
    """

    def __init__(self, reactor: Any, *, stream: TextIO | None = None) -> None:
        self.reactor = reactor
        self.stream = stream if stream is not None else sys.stderr
        self.requested = False
        self.signal: int | None = None
        self._waiting: list[Deferred[None]] = []

    def install(self) -> None:
        """
        Catch SIGINT and SIGTERM (main thread only; call once the reactor
        runs, after Twisted set up its own handlers).
        """
        signal.signal(signal.SIGINT, self._onSignal)
        signal.signal(signal.SIGTERM, self._onSignal)

    def _onSignal(self, signum: int, frame: object) -> None:
        if self.requested:
            self.stream.write("\nStopping now.\n")
            self.stream.flush()
            os._exit(128 + signum)
        self.reactor.callFromThread(self.fire, signum)

    def fire(self, signum: int = signal.SIGINT) -> None:
        """
        Ask the program to stop (reactor thread).
        """
        if self.requested:
            return
        self.requested = True
        self.signal = signum
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    @property
    def exitCode(self) -> int:
        """
        128 + the signal that stopped the program.
        """
        return 128 + (self.signal or signal.SIGINT)

    def wait(self) -> Deferred[None]:
        """
        A Deferred firing when the program is asked to stop.
        """
        d: Deferred[None] = Deferred()
        if self.requested:
            d.callback(None)
        else:
            self._waiting.append(d)
        return d


Work = Callable[[Any, Interrupt], Coroutine[Any, Any, int]]


def startLogging(verbose: bool, stream: TextIO | None = None) -> None:
    """
    Send twisted.logger's events to C{stream} (stderr): warnings and worse
    as one line each, or with C{verbose} everything from C{info} on, with
    tracebacks.
    """
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        formatEvent,
        globalLogBeginner,
        textFileLogObserver,
    )

    out = stream if stream is not None else sys.stderr
    if verbose:
        observer: Any = textFileLogObserver(out)
        level = LogLevel.info
    else:

        def observer(event: dict[str, Any]) -> None:
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text = f"{text}: {_describe(failure)}"
            out.write(f"log: {text}\n")

        level = LogLevel.warn
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(observer, [predicate])], redirectStandardIO=False
    )


def runReactor(work: Work, *, verbose: bool = False) -> int:
    """
    Run C{work(reactor, interrupt)} under the reactor, stop the reactor when
    it is done, and return its exit status (1 if it failed).

    @param verbose: Print the traceback of a failure.
    """
    from twisted.internet import reactor

    status = [1]

    def start() -> None:
        interrupt = Interrupt(reactor)
        interrupt.install()
        d = Deferred.fromCoroutine(work(reactor, interrupt))

        def done(code: int) -> None:
            status[0] = code

        def failed(failure: Failure) -> None:
            if failure.check(BrokenPipeError):  # type: ignore[no-untyped-call]
                # (| head -1): a reader that stopped reading is no error.
                _dropStdout()
                status[0] = EXIT_PIPE_CLOSED
                return
            _flushStdout()
            sys.stderr.write(f"error: {_describe(failure)}\n")
            if verbose:
                failure.printTraceback(sys.stderr)  # type: ignore[no-untyped-call]
            status[0] = 1

        d.addCallbacks(done, failed)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    _flushStdout()
    return status[0]


def _flushStdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _dropStdout()


def _dropStdout() -> None:
    # Nobody reads stdout any more: what is left in its buffer, and what
    # the interpreter flushes at exit, goes nowhere instead of failing
    # with another BrokenPipeError.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _describe(failure: Failure) -> str:
    """
    One line about what went wrong, for the terminal.
    """
    e = failure.value
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    name = type(e).__name__
    return f"{name}: {first}" if first else name


# demo ------------------------------------------------------------------------


def _savingLines(lines: Iterator[str], path: Path) -> Iterator[str]:
    """
    Pass C{lines} through, writing each to C{path} (gzipped if it ends in
    C{.gz}).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
            yield line


def _logSource(
    args: argparse.Namespace,
) -> tuple[LogFile | None, Iterator[str], int | None, str, str]:
    """
    The demo's log lines: the file of C{--log}, or generated ones. Returns
    the file (or C{None}), the lines, their number if known, how to name
    them, and the key an interrupted run of the same lines resumes by.
    """
    from .loggen import LogGenerator
    from .logparse import LogFile

    if args.log is not None:
        logFile = LogFile(args.log)
        source = f"{args.log} ({logFile.size / 1e6:,.1f} MB)"
        # The same file, as long as it has not changed size.
        resumeKey = f"log {os.path.realpath(args.log)} {logFile.size}"
        return logFile, logFile.lines(), None, source, resumeKey
    lines: Iterator[str] = iter(
        LogGenerator(args.lines, seed=args.seed, days=args.days)
    )
    if args.save_log is not None:
        lines = _savingLines(lines, Path(args.save_log))
    source = f"{args.lines:,} generated log lines (seed {args.seed})"
    resumeKey = f"generated {args.lines} seed {args.seed} days {args.days}"
    return None, lines, args.lines, source, resumeKey


async def runDemo(reactor: Any, interrupt: Interrupt, args: argparse.Namespace) -> int:
    """
    Ingest a log through the broker, then print the report read back
    through it.
    """
    from .ingest import ingest
    from .logbroker import LogBroker
    from .logparse import LogParser
    from .progress import Progress
    from .report import PlotUnavailable, buildReport, formatReport, plotReport

    out = sys.stdout
    logFile, lines, total, source, resumeKey = _logSource(args)
    # Run by hand: an unreachable database is reported at once, not waited
    # for (the server, a service, waits: the broker's default).
    broker = LogBroker(args.url, startupTimeout=0)
    try:
        await broker.waitUntilRunning()
        if args.fresh:
            await broker.clear()
            broker.forgetIDs()
        before = (await broker.summary())["entries"]
        out.write(f"sAsync demo: {source} -> {_displayURL(args.url)}\n")
        resumeAt = await broker.resumePoint(resumeKey)
        if resumeAt:
            out.write(
                f"(an earlier run was interrupted after committing {resumeAt:,}"
                " entries of this log: carrying on from there)\n"
            )
        elif before:
            out.write(
                f"(the database already holds {before:,} entries; they stay:"
                " --fresh empties it first)\n"
            )
        out.flush()
        parser = LogParser()
        if total is not None:
            total = max(0, total - resumeAt)
        progress = Progress(total, enabled=not args.quiet)

        def onProgress(rows: int) -> None:
            fraction = logFile.fraction if logFile is not None else None
            progress.update(rows, fraction)

        started = time.monotonic()
        try:
            result = await ingest(
                broker,
                parser.parse(lines),
                batchSize=args.batch,
                onProgress=onProgress,
                shouldStop=lambda: interrupt.requested,
                source=resumeKey,
                resumeAt=resumeAt,
            )
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                close()
        elapsed = time.monotonic() - started
        progress.finish(result.rows, complete=not result.interrupted)
        rate = result.rows / elapsed if elapsed > 0 else 0.0
        skipped = f"; {parser.skipped:,} lines skipped" if parser.skipped else ""
        if result.interrupted:
            out.write(
                f"Interrupted: {result.rows:,} entries were committed in"
                f" {result.batches:,} whole batches and stay; nothing else was"
                f" written{skipped}.\n"
            )
            return interrupt.exitCode
        out.write(
            f"Ingested {result.rows:,} entries in {elapsed:.1f} s"
            f" ({rate:,.0f} rows/s){skipped}.\n\n"
        )
        out.flush()
        report = await buildReport(broker, args.top)
        if interrupt.requested:
            out.write("Interrupted before the report.\n")
            return interrupt.exitCode
        out.write(formatReport(report))
        if args.json is not None:
            Path(args.json).write_text(
                json.dumps(report.toJSON(), indent=2) + "\n", encoding="utf-8"
            )
            out.write(f"\nReport written to {args.json}\n")
        if args.plot is not None:
            try:
                plotReport(report, args.plot)
            except PlotUnavailable as e:
                sys.stderr.write(f"error: {e}\n")
                return 1
            out.write(f"\nRequests per hour plotted to {args.plot}\n")
        return 0
    finally:
        try:
            out.flush()
        finally:
            await broker.shutdown()


# serve -----------------------------------------------------------------------


async def runServe(reactor: Any, interrupt: Interrupt, args: argparse.Namespace) -> int:
    """
    Serve the API until Ctrl-C (or SIGTERM), then stop cleanly.
    """
    from .logbroker import LogBroker
    from .server import LogAPI

    # Small batches from the worker: each reactor turn writes few rows, so
    # /health and the other streams never wait long.
    options: dict[str, Any] = {"batchSize": args.fetch}
    if args.connections is not None and not args.url.startswith("sqlite"):
        options["connections"] = args.connections
    broker = LogBroker(args.url, **options)
    try:
        await broker.waitUntilRunning()
        kind = await broker.databaseKind()
        api = LogAPI(broker, clock=reactor, databaseKind=kind)
        port = reactor.listenTCP(args.port, api.site(), interface=args.interface)
        host = port.getHost()
        sys.stdout.write(
            f"Serving {_displayURL(args.url)} on http://{host.host}:{host.port}/"
            " (/entries, /stats, /health; Ctrl-C stops)\n"
        )
        sys.stdout.flush()
        await interrupt.wait()
        sys.stdout.write("Stopping: closing the port and the open streams.\n")
        sys.stdout.flush()
        await port.stopListening()
        for stream in list(api.streams):
            # A paused stream holds its transaction open; end it first.
            stream.stopProducing()
            stream.request.loseConnection()
        return interrupt.exitCode
    finally:
        await broker.shutdown()


# The parser ------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return value


def buildParser() -> argparse.ArgumentParser:
    """
    The argument parser, with the C{demo} and C{serve} subcommands.
    """
    parser = argparse.ArgumentParser(
        prog="sasync",
        description="sAsync: SQLAlchemy made asynchronous for Twisted. The demo"
        " ingests a web-server access log through an AccessBroker and serves"
        " it over HTTP.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def urlOption(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            help="log more (info and up, with tracebacks)",
        )
        p.add_argument(
            "--url",
            default=DEFAULT_URL,
            help="SQLAlchemy database URL (default: %(default)s, a file in the"
            " current folder; or postgresql://user@host/db,"
            " mysql+pymysql://user@host/db)",
        )

    demo = commands.add_parser(
        "demo",
        help="ingest an access log through the broker and print a report",
        description="Generate a realistic access log (or read --log FILE),"
        " write it to the database through the broker with a progress bar,"
        " then print a report read back through the broker. Ctrl-C stops"
        " cleanly: committed batches stay.",
    )
    urlOption(demo)
    source = demo.add_mutually_exclusive_group()
    source.add_argument(
        "--lines",
        type=_count,
        default=DEFAULT_LINES,
        help="how many log lines to generate (default: %(default)s)",
    )
    source.add_argument(
        "--log",
        metavar="FILE",
        help="ingest this access log (combined or vhost_combined format,"
        " plain or gzipped) instead of generating one",
    )
    demo.add_argument("--seed", type=int, default=1, help="generator seed (default: 1)")
    demo.add_argument(
        "--days",
        type=_positive,
        default=2,
        help="days the generated log spans (default: 2)",
    )
    demo.add_argument(
        "--save-log",
        metavar="FILE",
        help="also write the generated log to FILE (.gz: gzipped)",
    )
    demo.add_argument(
        "--batch",
        type=_positive,
        default=2000,
        help="entries per transaction (default: %(default)s)",
    )
    demo.add_argument(
        "--top",
        type=_positive,
        default=10,
        help="rows in the top-N tables (default: 10)",
    )
    demo.add_argument(
        "--fresh",
        action="store_true",
        help="empty the demo's tables first (otherwise entries accumulate)",
    )
    demo.add_argument(
        "--json", metavar="FILE", help="also write the report as JSON to FILE"
    )
    demo.add_argument(
        "--plot",
        metavar="FILE.png",
        help="plot requests per hour to FILE.png (needs matplotlib: the 'demo' extra)",
    )
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    demo.set_defaults(work=runDemo)

    serve = commands.add_parser(
        "serve",
        help="serve the database over HTTP (/entries, /stats, /health)",
        description="Serve the demo's database with twisted.web: /entries"
        "?since=ISO&limit=N streams entries as NDJSON, /stats answers the"
        " report as JSON, /health answers at once.",
    )
    urlOption(serve)
    serve.add_argument(
        "--port", type=_port, default=8080, help="TCP port (default: 8080; 0: any free)"
    )
    serve.add_argument(
        "--interface",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)",
    )
    serve.add_argument(
        "--connections",
        type=_positive,
        help="database connections (worker threads) on PostgreSQL and MySQL;"
        " each /entries stream holds one while it runs, and a few more are"
        " added when all are held (default: the broker's, 4; SQLite: 1,"
        " shared by all streams)",
    )
    serve.add_argument(
        "--fetch",
        type=_positive,
        default=SERVE_FETCH,
        metavar="ROWS",
        help="rows fetched from the database per hop (default: %(default)s)",
    )
    serve.set_defaults(work=runServe)
    return parser


def main(argv: list[str] | None = None) -> int:
    """
    Run the C{sasync} command.

    @return: The exit status: 0 when done, 1 on an error, 2 for bad usage,
        130 after Ctrl-C, 141 once nobody reads its output (C{| head}).
    """
    parser = buildParser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        args.url = normalizeURL(args.url)
    except Exception as e:
        parser.error(f"--url: not a database URL: {e}")
    if args.command == "serve":
        missing = _missingDatabase(args.url)
        if missing is not None:
            sys.stderr.write(f"error: {missing}\n")
            return 1
    if args.command == "demo":
        if args.plot is not None:
            _checkPlotting(parser)
        if args.log is not None and not Path(args.log).is_file():
            parser.error(f"--log: no such file: {args.log}")
    work = args.work
    startLogging(args.verbose)

    async def run(reactor: Any, interrupt: Interrupt) -> int:
        code: int = await work(reactor, interrupt, args)
        return code

    return runReactor(run, verbose=args.verbose)


def _missingDatabase(url: str) -> str | None:
    """
    Why C{sasync serve} can't serve C{url}: a SQLite file that does not
    exist (opening it would make an empty database, and serve nothing).
    C{None}: it exists, or the database is a server's.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:") or Path(database).exists():
        return None
    return (
        f"no database {database} in {os.getcwd()}: serve shows what the demo"
        " wrote, so run the demo first (python -m sasync demo), here or with"
        " the same --url"
    )


def _checkPlotting(parser: argparse.ArgumentParser) -> None:
    """
    Fail at once, not after the ingestion, when --plot cannot work.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error(
            "--plot needs matplotlib: pip install 'sAsync[demo]' (or pip install"
            " matplotlib)"
        )
