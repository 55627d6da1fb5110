"""
What a broker counts about its calls, and L{BrokerStats}, the snapshot
C{AccessBroker.stats()} returns.

A broker keeps one L{CallStats}. Its counters change where a transaction
call ends: the Deferred its caller holds fires, in the reactor thread, and
L{CallStats.watch} put one callback on it (or the broker's one observer of
the call calls L{CallStats.ended}). That is the only place a call is
counted, so a call is counted once whatever path it took (refused at once,
run, retried, cancelled, timed out). Reading them (L{snapshot}) costs
a few attribute reads: cheap enough for every request of a health
endpoint.

Timings (queue wait, transaction time) are kept only while somebody looks
at them (L{keepTimings}: a registered L{sasync.metrics.PrometheusCollector}),
so that a broker nobody scrapes pays nothing for them.

Reactor thread only, except L{CallStats.addRows} and L{CallRecord.start}
(worker threads; see there).
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import monotonic
from types import MappingProxyType
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from asynqueue import checkNumber

from . import _tracing as tracing
from .errors import TransactionTimeout

T = TypeVar("T")

#: Outcomes of a transaction call (the C{outcome} label of
#: C{sasync_transactions_total}).
COMMITTED, FAILED, CANCELLED, TIMEOUT = "committed", "failed", "cancelled", "timeout"

#: Histogram bucket bounds in seconds: 100 µs to 30 s, about three per
#: decade (what database work spans, from a cached SELECT to a report).
BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

slowLog = Logger(namespace="sasync.slow")


@dataclass(frozen=True, slots=True)
class ServerStats:
    """
    One database server of a broker, as of a L{BrokerStats} snapshot.

    @ivar calls: Transaction calls that ended having run there (the
        primary: every call the broker answered).
    @ivar healthy: Whether it is taking work.
    @ivar lagSeconds: How far a replica is behind, in seconds (C{None} for
        the primary, or not known).
    """

    calls: int
    healthy: bool = True
    lagSeconds: float | None = None


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """
    A snapshot of a broker, from C{AccessBroker.stats()}. Brokers sharing
    an engine (same URL and keywords) share its queue and connections, so
    those fields are the engine's; the call counts are the broker's own.

    @ivar queued: Transactions waiting for a connection.
    @ivar running: Transactions handed to a worker and not done.
    @ivar connections: Connection workers (overflow ones included).
    @ivar idleConnections: Workers with nothing to do.
    @ivar heldByIterations: Workers held by an open row iteration.
    @ivar overflowConnections: Extra workers added while every regular one
        was held by an iteration.
    @ivar committed: Calls whose Deferred fired with a result.
    @ivar failed: Calls that failed (not counting the next two).
    @ivar cancelled: Calls cancelled (C{Deferred.cancel()}).
    @ivar timedOut: Calls that failed with
        L{sasync.errors.TransactionTimeout}.
    @ivar retried: Why transactions ran again: reason -> how many times.
    @ivar rowsStreamed: Rows handed out by row iterations (a L{Deferator}
        or a consumer).
    @ivar servers: Database URL (its password hidden) -> L{ServerStats}.
    @ivar writers: How many transactions that may write its writer gate
        lets run at once now (see L{sasync._writegate}); C{None} without a
        gate.
    """

    queued: int
    running: int
    connections: int
    idleConnections: int
    heldByIterations: int
    overflowConnections: int
    committed: int
    failed: int
    cancelled: int
    timedOut: int
    retried: Mapping[str, int]
    rowsStreamed: int
    servers: Mapping[str, ServerStats]
    writers: int | None = None


@dataclass(slots=True)
class Histogram:
    """
    Counts of observations per bucket of L{BUCKETS} (not cumulative), and
    their sum (see C{CallStats._timed}). Reactor thread only.
    """

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    @property
    def count(self) -> int:
        """
        How many observations were counted.
        """
        return sum(self.counts)


class CallRecord:
    """
    One transaction call, while it is timed (see L{CallStats.keepTimings}),
    or traced: when it was made, when its first attempt started in a
    worker, how many attempts started, and its span if it is traced.
    (Made for every call while a collector is registered: keep it small.)
    """

    __slots__ = ("attempts", "made", "span", "started")

    def __init__(self) -> None:
        self.made = monotonic()
        self.started: float | None = None
        self.attempts = 0
        self.span: Any = None

    def start(self) -> object:
        """
        Worker thread: an attempt starts; its span (if traced) becomes
        current in this thread. (The reactor reads these once the call's
        result came back through C{callFromThread}; a call abandoned while
        it runs may be read earlier, and then counts as never started.)

        @return: What L{stop} needs.
        """
        if self.started is None:
            self.started = monotonic()
        self.attempts += 1
        return None if self.span is None else tracing.enter(self.span)

    def sendable(self) -> dict[str, str] | None:
        """
        What a worker process needs of this record (C{processes=N}): the
        trace context of its span, or C{None}.
        """
        return None if self.span is None else tracing.carrier(self.span)

    def stop(self, token: object) -> None:
        """
        Worker thread: the attempt's transaction is over (called only if
        L{start} returned something).
        """
        tracing.leave(token)


def checkSlowTransaction(value: object) -> float | None:
    """
    The broker option C{slowTransaction}: seconds after which a call is
    logged as slow (C{None}: never).

    @raise ValueError: not a positive number.
    """
    if value is None:
        return None
    checkNumber(value, "slowTransaction", positive=True, typeError=ValueError)
    assert isinstance(value, int | float)
    return float(value)


#: Every live broker's stats (for the Prometheus collector).
_live: weakref.WeakSet[CallStats] = weakref.WeakSet()


def liveStats() -> list[CallStats]:
    """
    The L{CallStats} of every broker alive.
    """
    return list(_live)


class CallStats:
    """
    A broker's counters. Reactor thread only (except L{addRows}).

    @ivar broker: The broker's name (its class's), a metric label.
    @ivar describeServers: What watches the broker's other servers (its
        replicas): URL (password hidden) -> C{calls}, C{healthy},
        C{lagSeconds}; read for each snapshot. C{None}: no other servers.
    @ivar slowTransaction: Seconds; a call that takes longer is logged
        (C{sasync.slow}), or C{None}.
    """

    #: How many collectors look at timings (see L{keepTimings}).
    _timingUsers = 0

    def __init__(
        self,
        broker: str,
        url: str,
        queue: object,
        slowTransaction: float | None = None,
    ) -> None:
        """
        @param broker: The broker's name.
        @param url: Its database URL, password hidden.
        @param queue: Its work queue (an engine handle or a process pool):
            read for the queue and connection fields.
        @param slowTransaction: See L{checkSlowTransaction}.
        """
        self.broker = broker
        self.url = url
        #: What OpenTelemetry calls the database (its db.system.name).
        self.system = url.split(":", 1)[0].split("+", 1)[0]
        self.queue = queue
        self.slowTransaction = slowTransaction
        #: Calls ended, by method and outcome.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.retried: Counter[str] = Counter()
        self.rowsStreamed = 0
        self._rowsLock = threading.Lock()
        # Bound once: every call would make its own (and hold it while it
        # waits in the queue).
        self._endedBound = self.ended
        #: Method -> its queue wait and transaction time histograms.
        self.timings: dict[str, tuple[Histogram, Histogram]] = {}
        self.describeServers: Callable[[], Mapping[str, Mapping[str, Any]]] | None = (
            None
        )
        _live.add(self)

    @classmethod
    def keepTimings(cls, keep: bool) -> None:
        """
        Start (C{True}) or stop (C{False}) timing calls, for one user of
        the timings (a registered collector).
        """
        cls._timingUsers += 1 if keep else -1

    def begin(
        self, method: str, niceness: int, parent: dict[str, str] | None = None
    ) -> CallRecord | None:
        """
        A call of C{method} is made: its record if calls are timed, slow
        ones logged, or calls traced (then its span starts here, as the
        child of the span current in this thread, or of C{parent}, trace
        context headers from another process), else C{None}.
        """
        if (
            # (tracing.untraced(), inline: this runs per call.)
            tracing._trace._TRACER_PROVIDER is tracing.untracedWith
            and not CallStats._timingUsers
            and self.slowTransaction is None
        ):
            # The common case: nothing times, logs or traces calls.
            return None
        traced = tracing.active()
        if traced or CallStats._timingUsers > 0 or self.slowTransaction is not None:
            record = CallRecord()
            if traced:
                record.span = tracing.startSpan(
                    f"{self.broker}.{method}", self.system, niceness, parent
                )
            return record
        return None

    def watch(
        self, method: str, d: Deferred[T], record: CallRecord | None = None
    ) -> Deferred[T]:
        """
        Count the call of C{method} whose caller holds C{d} when C{d}
        fires.

        @return: C{d}.
        """
        d.addBoth(self._endedBound, method, record)
        return d

    def ended(self, result: object, method: str, record: CallRecord | None) -> object:
        """
        Count the call of C{method} that ended with C{result} (a value or
        a L{Failure}), timed by C{record} if given.

        @return: C{result}.
        """
        if result.__class__ is Failure:
            error = result.value
            if isinstance(error, TransactionTimeout):
                outcome = TIMEOUT
            elif isinstance(error, CancelledError):
                outcome = CANCELLED
            else:
                outcome = FAILED
        else:
            outcome = COMMITTED
        self.outcomes[method, outcome] += 1
        if record is not None:
            self._timed(record, method, outcome, result)
        return result

    def _timed(
        self, record: CallRecord, method: str, outcome: str, result: object
    ) -> None:
        now = monotonic()
        started = record.started
        if started is None:
            wait, ran = now - record.made, 0.0
        else:
            wait, ran = started - record.made, now - started
        if CallStats._timingUsers > 0:
            timings = self.timings.get(method)
            if timings is None:
                timings = self.timings[method] = (Histogram(), Histogram())
            # An observation: its bucket's count, and the sum. (Inline, no
            # method: this runs for every call.)
            waits, took = timings
            waits.counts[bisect_left(BUCKETS, wait)] += 1
            waits.total += wait
            if started is not None:
                took.counts[bisect_left(BUCKETS, ran)] += 1
                took.total += ran
        if record.span is not None:
            error = result.value if isinstance(result, Failure) else None
            tracing.endSpan(record.span, record.attempts, wait, error)
        slow = self.slowTransaction
        if slow is not None and wait + ran > slow:
            slowLog.warn(
                "{broker}.{method} took {seconds:.3f} s ({queueWait:.3f} s of it"
                " queued, {attempts} attempts): {outcome}",
                broker=self.broker,
                method=method,
                seconds=wait + ran,
                queueWait=wait,
                attempts=record.attempts,
                outcome=outcome,
                threshold=slow,
            )

    def retry(self, reason: str) -> None:
        """
        A transaction runs again because of C{reason}.
        """
        self.retried[reason] += 1

    def addRows(self, n: int) -> None:
        """
        Any thread (worker threads, as an iteration ends): C{n} more rows
        were streamed.
        """
        with self._rowsLock:
            self.rowsStreamed += n

    def _servers(self) -> dict[str, ServerStats]:
        # The primary, then each replica; a read a replica served counts
        # there, not on the primary.
        others = {} if self.describeServers is None else self.describeServers()
        servers = {
            url: ServerStats(int(d["calls"]), bool(d["healthy"]), d["lagSeconds"])
            for url, d in others.items()
        }
        elsewhere = sum(s.calls for s in servers.values())
        return {self.url: ServerStats(max(0, self.calls() - elsewhere)), **servers}

    @property
    def counts(self) -> Counter[str]:
        """
        Calls ended, by outcome: summed from L{outcomes} when asked (a
        second counter would cost every call).
        """
        counts: Counter[str] = Counter()
        # (A C-level copy: a collector's thread may ask while the reactor
        # thread counts.)
        for (_, outcome), n in dict.copy(self.outcomes).items():
            counts[outcome] += n
        return counts

    def calls(self) -> int:
        """
        How many calls ended.
        """
        return sum(dict.copy(self.outcomes).values())

    def snapshot(self, waiting: int = 0, writers: int | None = None) -> BrokerStats:
        """
        The broker's stats now.

        @param waiting: Calls waiting for the broker's start-up (counted as
            queued).
        @param writers: Its writer gate's places now, if it has a gate.
        """
        queue = getattr(self.queue, "queue", None)
        workers: list[Any] = [] if queue is None else list(queue.workers)
        held = sum(1 for w in workers if getattr(w, "held", False))
        idle = sum(
            1
            for w in workers
            if getattr(w, "task", None) is None and not getattr(w, "held", False)
        )
        counts = self.counts
        servers = self._servers()
        pending = running = 0
        if queue is not None:
            # A task handed to a busy worker, to run after its current one,
            # counts as running in the queue: here it is queued.
            running = int(queue.running())
            handedAhead = max(0, running - len(workers))
            pending = int(queue.pending()) + handedAhead
            running -= handedAhead
        return BrokerStats(
            queued=pending + waiting,
            running=running,
            connections=len(workers),
            idleConnections=idle,
            heldByIterations=held,
            overflowConnections=sum(
                1 for w in workers if getattr(w, "overflow", False)
            ),
            committed=counts[COMMITTED],
            failed=counts[FAILED],
            cancelled=counts[CANCELLED],
            timedOut=counts[TIMEOUT],
            retried=MappingProxyType(dict(self.retried)),
            rowsStreamed=self.rowsStreamed,
            servers=MappingProxyType(servers),
            writers=writers,
        )


__all__ = [
    "BUCKETS",
    "BrokerStats",
    "CallRecord",
    "CallStats",
    "Histogram",
    "ServerStats",
    "checkSlowTransaction",
    "liveStats",
]
