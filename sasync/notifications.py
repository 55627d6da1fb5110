"""
LISTEN/NOTIFY (PostgreSQL): L{sasync.Listener}, and the NOTIFY a
transaction sends.

A listener has a connection of its own, in a thread of its own: the thread
connects, runs C{LISTEN}, then blocks in C{select()} on the connection's
socket (and on a wake-up socket, for L{sasync.Listener.stop}) and hands
each batch of notifications received to the reactor thread through
C{callFromThread}, which keeps them in the order the server sent them.
A thread rather than the reactor's C{addReader}: connecting and C{LISTEN}
block, and a thread works the same with psycopg2 and psycopg 3 without
putting either in non-blocking mode; the connection lives and dies in that
one thread.

When the connection is lost (a terminated backend, a restarted server),
the thread connects again, waiting longer each time (the broker's
L{sasync.retry.Backoff}, as for a database that is not up), runs
C{LISTEN} again, and the callback object's C{onReconnect()} is called if it
has one. Notifications sent while the listener had no connection are
missed: PostgreSQL keeps none for a session that was not listening.
C{onReconnect()} is the place to catch up (reread what they would have
announced).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as SA
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.logger import Logger

from .errors import NotSupported
from .retry import NO_CONNECTION, Backoff

log = Logger()

#: PostgreSQL's limits: a channel is an identifier (NAMEDATALEN - 1 bytes),
#: a payload shorter than 8000 bytes.
MAX_CHANNEL_BYTES = 63
MAX_PAYLOAD_BYTES = 7999

#: Starts C{f} in a new thread named C{name}; tests pass their own.
ThreadStarter = Callable[[Callable[[], None], str], object]


def _startThread(f: Callable[[], None], name: str) -> None:
    threading.Thread(target=f, name=name, daemon=True).start()


def requirePostgreSQL(dialectName: str, what: str) -> None:
    """
    @raise NotSupported: C{dialectName} is not C{postgresql}.
    """
    if dialectName != "postgresql":
        raise NotSupported(
            f"{what}: LISTEN/NOTIFY needs PostgreSQL; this broker's database"
            f" is {dialectName}"
        )


def checkChannel(channel: object) -> str:
    """
    @return: C{channel}, a name PostgreSQL takes (matched exactly, case
        included).
    @raise ValueError: It is not a non-empty string of at most 63 bytes.
    """
    if not isinstance(channel, str) or not channel:
        raise ValueError(f"channel {channel!r}: not a non-empty string")
    if len(channel.encode()) > MAX_CHANNEL_BYTES or "\0" in channel:
        raise ValueError(
            f"channel {channel!r}: longer than {MAX_CHANNEL_BYTES} bytes, or holds NUL"
        )
    return channel


def checkPayload(payload: object) -> str:
    """
    @return: C{payload}.
    @raise ValueError: It is not a string shorter than 8000 bytes.
    """
    if not isinstance(payload, str):
        raise ValueError(f"payload {payload!r}: not a string")
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"payload of {len(payload.encode())} bytes: PostgreSQL takes at most"
            f" {MAX_PAYLOAD_BYTES}"
        )
    return payload


def notifyIn(connection: Connection, channel: str, payload: str) -> None:
    """
    Worker thread, inside a transaction: queue a notification, delivered
    when the transaction commits, never if it rolls back.

    @raise NotSupported: Not on PostgreSQL.
    """
    requirePostgreSQL(connection.dialect.name, f"notify({channel!r})")
    checkChannel(channel)
    checkPayload(payload)
    # A plain client-side cursor of the transaction's own connection: a
    # server-side one (streaming transactions get them for SELECTs) would
    # run pg_notify only once fetched.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SELECT pg_notify(%s, %s)", (channel, payload))
    finally:
        cursor.close()


def listenerEngine(url: SA.URL, engineKw: dict[str, Any]) -> Engine:
    """
    An engine for listeners: the broker's URL and connection arguments, no
    pool (each listener keeps its one connection).
    """
    return SA.create_engine(
        url, poolclass=NullPool, connect_args=dict(engineKw.get("connect_args", {}))
    )


def _drain(dbapiConnection: Any) -> list[Any]:
    # Listener thread: the notifications received so far, oldest first.
    notifies = getattr(dbapiConnection, "notifies", None)
    if callable(notifies):
        # psycopg 3: a generator; timeout=0 takes only what has arrived.
        return list(notifies(timeout=0))
    dbapiConnection.poll()  # psycopg2: reads the socket, fills .notifies
    received = list(dbapiConnection.notifies)
    del dbapiConnection.notifies[:]
    return received


class Listener:
    """
    A C{LISTEN} on one channel, on a connection and thread of its own; made
    by L{sasync.AccessBroker.listen}.

    @ivar channel: The channel listened to.
    @ivar active: Whether C{LISTEN} is active now (false while the
        connection is being made again, and once stopped).
    @ivar reconnects: How many times the listener listened again after its
        connection was lost.
    """

    def __init__(
        self,
        engine: Engine,
        channel: str,
        callback: Callable[[str], object],
        *,
        backoff: Backoff,
        reactor: Any,
        onEnded: Callable[[Listener], object] | None = None,
        startThread: ThreadStarter | None = None,
    ) -> None:
        """
        @param engine: Where to connect; disposed of when the listener ends.
        @param onEnded: Called (reactor thread) once the listener's thread
            has ended.
        """
        self.channel = channel
        self.callback = callback
        self.active = False
        self.reconnects = 0
        self._engine = engine
        self._backoff = backoff
        self._reactor = reactor
        self._onEnded = onEnded
        self._startThread = startThread or _startThread
        # Set by stop() in the reactor thread, read by the listener thread.
        self._stopping = threading.Event()
        self._wakeReader, self._wakeWriter = socket.socketpair()
        self._started: Deferred[Listener] | None = None
        self._stopped: list[Deferred[None]] = []
        self._ended = False

    def __repr__(self) -> str:
        return f"<Listener {self.channel!r}{' active' if self.active else ''}>"

    # Reactor thread -----------------------------------------------------------

    def start(self) -> Deferred[Listener]:
        """
        Start the thread; the Deferred fires with this listener once
        C{LISTEN} is active, or fails with the error of the first
        connection attempt. Cancelling it stops the listener.
        """
        assert self._started is None, "a Listener starts once"
        self._started = Deferred(lambda d: self._stop())
        self._startThread(self._run, f"sasync listener {self.channel}")
        return self._started

    def stop(self) -> Deferred[None]:
        """
        Stop listening and close the connection. Idempotent; fires once the
        listener's thread has ended (no callback runs after that).
        """
        if self._ended:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stopped.append(d)
        self._stop()
        return d

    def _stop(self) -> None:
        self.active = False
        self._stopping.set()
        # (OSError: the thread has ended and closed it.)
        with contextlib.suppress(OSError):
            self._wakeWriter.send(b"x")

    def _listening(self, first: bool) -> None:
        if self._stopping.is_set():
            return
        self.active = True
        if first:
            assert self._started is not None
            self._started.callback(self)
            return
        self.reconnects += 1
        log.info("{listener}: listening again", listener=self)
        onReconnect = getattr(self.callback, "onReconnect", None)
        if onReconnect is not None:
            self._call(onReconnect)

    def _deliver(self, payloads: list[str]) -> None:
        for payload in payloads:
            if self._stopping.is_set():
                return
            self._call(self.callback, payload)

    def _call(self, f: Callable[..., object], *args: Any) -> None:
        try:
            result = f(*args)
        except Exception:
            log.failure("{listener}: {f!r} failed", listener=self, f=f)
            return
        if isinstance(result, Deferred):
            result.addErrback(
                lambda failure: log.failure(
                    "{listener}: {f!r} failed", failure, listener=self, f=f
                )
            )

    def _lost(self, error: str) -> None:
        self.active = False
        log.warn(
            "{listener}: connection lost ({error}); connecting again",
            listener=self,
            error=error,
        )

    def _failedToStart(self, error: BaseException) -> None:
        assert self._started is not None
        if not self._started.called:
            self._started.errback(error)

    def _end(self) -> None:
        self._ended = True
        self.active = False
        if self._started is not None and not self._started.called:
            self._started.errback(CancelledError(f"{self!r} was stopped"))
        stopped, self._stopped = self._stopped, []
        for d in stopped:
            d.callback(None)
        if self._onEnded is not None:
            self._onEnded(self)

    # Listener thread ----------------------------------------------------------

    def _run(self) -> None:
        # Listener thread: the connection lives and dies here.
        call = self._reactor.callFromThread
        failures = 0
        first = True
        try:
            while not self._stopping.is_set():
                try:
                    raw = self._connect()
                except Exception as e:
                    if first:
                        call(self._failedToStart, e)
                        return
                    failures += 1
                    self._stopping.wait(self._backoff.delay(failures, NO_CONNECTION))
                    continue
                failures = 0
                call(self._listening, first)
                first = False
                try:
                    self._receive(raw.dbapi_connection)
                except Exception as e:
                    call(
                        self._lost,
                        str(e).strip().splitlines()[0] if str(e) else repr(e),
                    )
                finally:
                    try:
                        raw.invalidate()
                    except Exception:
                        log.failure("{listener}: could not close", listener=self)
        finally:
            self._wakeReader.close()
            self._wakeWriter.close()
            self._engine.dispose()
            call(self._end)

    def _connect(self) -> Any:
        # Listener thread: a new connection, in autocommit, listening.
        raw = self._engine.raw_connection()
        try:
            dbapiConnection = raw.dbapi_connection
            dbapiConnection.autocommit = True  # type: ignore[union-attr]
            quoted = self._engine.dialect.identifier_preparer.quote_identifier(
                self.channel
            )
            cursor = dbapiConnection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(f"LISTEN {quoted}")
            finally:
                cursor.close()
        except BaseException:
            raw.invalidate()
            raise
        return raw

    def _receive(self, dbapiConnection: Any) -> None:
        # Listener thread: hand notifications over until stopped (returns)
        # or the connection is lost (raises).
        fd = dbapiConnection.fileno()
        wake = self._wakeReader.fileno()
        call = self._reactor.callFromThread
        while True:
            # (Some may have come with LISTEN's own answer.)
            received = _drain(dbapiConnection)
            if received:
                call(self._deliver, [n.payload for n in received])
            ready, _, _ = select.select([fd, wake], [], [])
            if wake in ready or self._stopping.is_set():
                return
            if getattr(dbapiConnection, "closed", False):
                raise ConnectionError("the connection was closed")


def listen(
    url: SA.URL,
    engineKw: dict[str, Any],
    channel: str,
    callback: Callable[[str], object],
    *,
    backoff: Backoff,
    listeners: ListenerSet,
    whenRunning: Deferred[None],
    reactor: Any,
    startThread: ThreadStarter | None = None,
) -> Deferred[Listener]:
    """
    Reactor thread: once C{whenRunning} fires (the broker runs), start a
    L{sasync.Listener} on C{channel}, tracked by C{listeners}; see
    L{sasync.AccessBroker.listen}.

    @raise NotSupported: (In the Deferred.) Not PostgreSQL.
    @raise ValueError: (In the Deferred.) A bad channel, or a callback that
        is not callable.
    """
    try:
        requirePostgreSQL(url.get_backend_name(), f"listen({channel!r})")
        checkChannel(channel)
        if not callable(callback):
            raise ValueError(
                f"listen({channel!r}): callback {callback!r} is not callable"
            )
    except Exception as e:
        whenRunning.addErrback(lambda _: None)
        return fail(e)

    def running(_: None) -> Deferred[Listener]:
        listener = Listener(
            listenerEngine(url, engineKw),
            channel,
            callback,
            backoff=backoff,
            reactor=reactor,
            onEnded=listeners.discard,
            startThread=startThread,
        )
        listeners.add(listener)
        return listener.start()

    return whenRunning.addCallback(running)


class ListenerSet:
    """
    A broker's live listeners, stopped together by its shutdown. Reactor
    thread only.
    """

    def __init__(self) -> None:
        self._listeners: set[Listener] = set()

    def add(self, listener: Listener) -> None:
        """
        Track C{listener} until it ends.
        """
        self._listeners.add(listener)

    def discard(self, listener: Listener) -> None:
        """
        Forget C{listener} (it has ended).
        """
        self._listeners.discard(listener)

    def stopAll(self) -> Deferred[Any]:
        """
        Stop every listener; fires once all have ended.
        """
        return DeferredList([listener.stop() for listener in list(self._listeners)])


__all__ = [
    "Listener",
    "ListenerSet",
    "checkChannel",
    "checkPayload",
    "listen",
    "listenerEngine",
    "notifyIn",
    "requirePostgreSQL",
]
