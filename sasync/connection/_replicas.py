"""
Read replicas (PostgreSQL hot standbys): which one a read-only call runs
on, and how each one is doing.

Each replica is an L{EngineHandle} of its own (its own connection
workers). A probe thread per replica, with one connection of its own, asks
the standby every L{PROBE_INTERVAL} seconds how far it has replayed the
primary's WAL (C{pg_last_wal_replay_lsn()}) and how far behind it is in
seconds; reads never ask. Only while a read waits for a replica to catch up
(session consistency) is it probed every L{FAST_PROBE_INTERVAL} seconds.

A replica whose probe fails is marked down (logged in the namespace
C{sasync.replicas}), skipped, and probed again at the same pace; when a
probe succeeds again it is marked up. With no healthy replica, reads run on
the primary: no call fails because a replica is down.

Everything here runs in the reactor thread, except the probe jobs, which
run in their replica's probe thread (and own its probe connection).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from asynqueue.workers import JobThread

from .. import retry
from ..errors import ReplicaError
from ._engines import EngineHandle, EngineSpec, acquire, release
from ._positions import parseLSN
from ._replicaoptions import DEFAULT_REPLICA_WAIT, ReplicaOptions

log = Logger(namespace="sasync.replicas")

#: Seconds between two probes of a replica.
PROBE_INTERVAL = 0.5
#: Seconds between probes while a read waits for a replica to catch up.
FAST_PROBE_INTERVAL = 0.001
#: Seconds a probe may wait to connect.
PROBE_CONNECT_TIMEOUT = 2


#: One round trip: in recovery?, replayed position, lag in seconds (0 when
#: everything received is replayed: an idle primary is not lag).
_PROBE_SQL = (
    "SELECT pg_is_in_recovery(),"
    " COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text,"
    " CASE WHEN NOT pg_is_in_recovery()"
    " OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0"
    " ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)"
    " END::float8"
)


@dataclass(eq=False)
class Replica:
    """
    One standby: its engine handle and what its last probe said.

    @ivar healthy: Whether its last probe succeeded (C{False} until the
        first one did).
    @ivar replayed: The WAL position it had replayed at its last probe.
    @ivar lagSeconds: How far behind it was then, in seconds.
    @ivar calls: How many read-only calls were sent to it.
    """

    handle: EngineHandle
    name: str
    healthy: bool = False
    replayed: int = -1
    lagSeconds: float | None = None
    calls: int = 0
    probing: bool = False
    thread: JobThread = field(default_factory=JobThread)
    # Probe thread only.
    connection: Any = None


class ReplicaSet:
    """
    The replicas of one broker, probed in the background.
    """

    def __init__(
        self,
        options: ReplicaOptions,
        primary: EngineSpec,
        user: object,
        *,
        reactor: Any = None,
    ) -> None:
        options.check(primary.url)
        self.options = options
        self._user = user
        self._closed = False
        self._waiters: list[_Waiter] = []
        self._timers: dict[int, Any] = {}
        self._turn = itertools.count()
        kw: dict[str, Any] = dict(primary.engineKw)
        # A hot standby refuses SERIALIZABLE; its snapshots are consistent.
        if kw.get("isolation_level", "SERIALIZABLE") == "SERIALIZABLE":
            kw["isolation_level"] = "REPEATABLE READ"
        if primary.connections is not None:
            kw["connections"] = primary.connections
        if primary.pooler is not None:
            # Behind poolers too, of the same size.
            kw["pooled"] = True
            kw["poolerConnections"] = primary.pooler.connections
        self.replicas: list[Replica] = []
        for url in options.urls:
            spec = EngineSpec.fromArgs(url, kw)
            handle = acquire(spec, user, reactor=reactor)
            handle.tracksWritePosition = False
            name = url.render_as_string(hide_password=True)
            self.replicas.append(
                Replica(
                    handle,
                    name,
                    thread=JobThread(f"sasync-probe-{url.host}:{url.port}"),
                )
            )
        if self.replicas:
            self.reactor.callLater(0, self._probeAll)

    @property
    def reactor(self) -> Any:
        """
        The reactor (the replicas' engine handles resolve it lazily).
        """
        return self.replicas[0].handle.reactor

    # Choosing -----------------------------------------------------------------

    def choose(
        self, position: int | None, after: int | None
    ) -> Deferred[EngineHandle | None]:
        """
        The replica a read-only call runs on, or C{None} for the primary.

        @param position: The broker's write position (session consistency
            waits for it; C{None}: it wrote nothing yet).
        @param after: A position the call asked for with C{after=} (waited
            for in either consistency).
        """
        need = after
        if self.options.consistency == "session" and position is not None:
            need = position if need is None else max(need, position)
        replica = self._pick(need)
        if replica is not None:
            return succeed(self._sent(replica))
        if (
            need is None
            or self.options.replicaWait == 0
            or not any(self._usable(r) for r in self.replicas)
        ):
            return succeed(None)
        waiter = _Waiter(need, Deferred())
        self._waiters.append(waiter)
        waiter.timer = self.reactor.callLater(
            self.options.replicaWait, self._giveUp, waiter
        )
        for r in self.replicas:
            if self._usable(r):
                self._schedule(r, 0)
        return waiter.d

    def route(
        self,
        position: int | None,
        after: int | None,
        run: Callable[[EngineHandle | None], Deferred[Any]],
    ) -> Deferred[Any]:
        """
        Run a read-only call (C{run(handle)}; C{None}: the primary) where
        L{choose} says. If its replica cannot be reached, the replica is
        marked down and the call runs on the primary instead; so does a
        call the replica could not serve yet (see L{runsOnPrimary}).
        """

        async def routed() -> Any:
            handle = await self.choose(position, after)
            if handle is None:
                return await run(None)
            try:
                return await run(handle)
            except Exception as e:
                if isUnreachable(e):
                    self.failed(handle, e)
                elif not runsOnPrimary(e):
                    raise
                return await run(None)

        return Deferred.fromCoroutine(routed())

    def _usable(self, replica: Replica) -> bool:
        lag = self.options.maxReplicaLag
        return replica.healthy and (
            lag is None
            or (replica.lagSeconds is not None and replica.lagSeconds <= lag)
        )

    def _pick(self, need: int | None) -> Replica | None:
        ready = [
            r
            for r in self.replicas
            if self._usable(r) and (need is None or r.replayed >= need)
        ]
        if not ready:
            return None
        turn = next(self._turn)
        # The least busy; ties taken in turn.
        return min(
            ready,
            key=lambda r: (
                r.handle.queue.pending() + r.handle.queue.running(),
                (self.replicas.index(r) - turn) % len(self.replicas),
            ),
        )

    def _sent(self, replica: Replica) -> EngineHandle:
        replica.calls += 1
        return replica.handle

    def _giveUp(self, waiter: _Waiter) -> None:
        # replicaWait ran out: the read runs on the primary.
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            waiter.d.callback(None)

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            replica = self._pick(waiter.need)
            if replica is None and any(self._usable(r) for r in self.replicas):
                continue
            self._waiters.remove(waiter)
            waiter.timer.cancel()
            waiter.d.callback(None if replica is None else self._sent(replica))

    def failed(self, handle: EngineHandle, error: BaseException) -> None:
        """
        A call on C{handle} could not reach its replica: mark it down now
        (its probe brings it back).
        """
        for replica in self.replicas:
            if replica.handle is handle and replica.healthy:
                self._down(replica, error)

    # Probing ------------------------------------------------------------------

    def _probeAll(self) -> None:
        for replica in self.replicas:
            self._probe(replica)

    def _schedule(self, replica: Replica, delay: float) -> None:
        if self._closed:
            return
        key = id(replica)
        timer = self._timers.get(key)
        if timer is not None and timer.active():
            if timer.getTime() <= self.reactor.seconds() + delay:
                return
            timer.cancel()
        self._timers[key] = self.reactor.callLater(delay, self._probe, replica)

    def _probe(self, replica: Replica) -> None:
        if self._closed or replica.probing:
            return
        replica.probing = True
        url = replica.handle.spec.url
        callFromThread = self.reactor.callFromThread

        def job() -> None:
            # Probe thread: the probe connection lives and dies here.
            try:
                result: tuple[bool, str, float] | BaseException = _ask(replica, url)
            except Exception as e:
                result = e
                _closeProbe(replica)
            callFromThread(self._probed, replica, result)

        replica.thread.do(job)

    def _probed(
        self, replica: Replica, result: tuple[bool, str, float] | BaseException
    ) -> None:
        replica.probing = False
        if self._closed:
            return
        if isinstance(result, BaseException):
            if replica.healthy or replica.lagSeconds is None:
                self._down(replica, result)
                replica.lagSeconds = -1.0  # (Logged once.)
        else:
            _, replayed, lag = result
            replica.replayed = parseLSN(replayed, "pg_last_wal_replay_lsn()")
            replica.lagSeconds = lag
            if not replica.healthy:
                replica.healthy = True
                log.info(
                    "Replica {replica} is up (replayed {replayed}, {lag:.3f} s behind)",
                    replica=replica.name,
                    replayed=replayed,
                    lag=lag,
                    state="up",
                )
        self._wake()
        waiting = replica.healthy and bool(self._waiters)
        self._schedule(replica, FAST_PROBE_INTERVAL if waiting else PROBE_INTERVAL)

    def _down(self, replica: Replica, error: BaseException) -> None:
        replica.healthy = False
        log.warn(
            "Replica {replica} is down ({error}); reads go elsewhere until it"
            " answers again",
            replica=replica.name,
            error=str(error).strip().splitlines()[0]
            if str(error).strip()
            else repr(error),
            state="down",
        )
        self._wake()

    # Closing ------------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """
        Stop probing, let go of the replicas' engine handles.
        """
        self._closed = True
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        for waiter in self._waiters:
            waiter.timer.cancel()
            waiter.d.callback(None)
        self._waiters = []
        closing = []
        for replica in self.replicas:
            replica.thread.quit(functools.partial(_closeProbe, replica))
            closing.append(release(replica.handle, self._user))
        return _gather(closing)

    def describe(self) -> Mapping[str, Mapping[str, Any]]:
        """
        Per replica (URL without password): C{calls}, C{healthy},
        C{lagSeconds}.
        """
        return {
            r.name: {"calls": r.calls, "healthy": r.healthy, "lagSeconds": r.lagSeconds}
            for r in self.replicas
        }


@dataclass(eq=False)
class _Waiter:
    need: int
    d: Deferred[EngineHandle | None]
    timer: Any = None


def _ask(replica: Replica, url: URL) -> tuple[bool, str, float]:
    # Probe thread.
    if replica.connection is None:
        engine = replica.handle.engine
        cargs, cparams = engine.dialect.create_connect_args(url)
        cparams.setdefault("connect_timeout", PROBE_CONNECT_TIMEOUT)
        connection = engine.dialect.connect(*cargs, **cparams)
        connection.autocommit = True
        replica.connection = connection
    cursor = replica.connection.cursor()
    try:
        cursor.execute(_PROBE_SQL)
        inRecovery, replayed, lag = cursor.fetchone()
    finally:
        cursor.close()
    return bool(inRecovery), str(replayed), float(lag)


def _closeProbe(replica: Replica) -> None:
    # Probe thread.
    connection, replica.connection = replica.connection, None
    if connection is not None:
        try:
            connection.close()
        except Exception:
            log.failure("Could not close the probe connection of {r}", r=replica.name)


def _gather(ds: list[Deferred[None]]) -> Deferred[None]:
    return gatherResults(ds).addCallback(lambda _: None)


def closeBoth(primary: Deferred[None], replicas: ReplicaSet) -> Deferred[None]:
    """
    Reactor thread: a broker closing its primary handle and its replicas.
    """
    return _gather([primary, replicas.close()])


def attach(
    options: ReplicaOptions | None,
    primary: EngineSpec,
    user: object,
    processes: int | None,
    *,
    reactor: Any = None,
) -> ReplicaSet | None:
    """
    A broker's replica set, or C{None} if it has no replicas.

    @raise ReplicaError: the broker is not PostgreSQL, or runs in worker
        processes (not supported with replicas yet).
    """
    if options is None:
        return None
    if processes:
        raise ReplicaError(
            "replicas= with processes= is not supported: give the replicas to a"
            " broker without worker processes"
        )
    return ReplicaSet(options, primary, user, reactor=reactor)


#: SQLSTATEs of a read a standby could not serve, which the primary can:
#: a table or column the standby has not replayed yet (tables made by a
#: broker's start-up, a migration), and a query cancelled by a conflict
#: with recovery.
_PRIMARY_SQLSTATES = frozenset({"42P01", "42703", "40001"})


def runsOnPrimary(error: BaseException) -> bool:
    """
    Whether a read-only call that failed on a replica with C{error} runs
    again on the primary (it wrote nothing: it was READ ONLY).
    """
    return (
        isinstance(error, DBAPIError) and retry.errorCode(error) in _PRIMARY_SQLSTATES
    )


def isUnreachable(error: BaseException) -> bool:
    """
    Whether a call failed because its server could not be reached (it may
    run elsewhere): no connection, or a connection lost.
    """
    if not isinstance(error, DBAPIError):
        return False
    return (
        bool(error.connection_invalidated)
        or retry.retryReason(error) == retry.NO_CONNECTION
    )


__all__ = [
    "DEFAULT_REPLICA_WAIT",
    "FAST_PROBE_INTERVAL",
    "PROBE_INTERVAL",
    "Replica",
    "ReplicaOptions",
    "ReplicaSet",
    "attach",
    "closeBoth",
    "isUnreachable",
    "runsOnPrimary",
]
