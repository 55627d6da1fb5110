"""
L{WireWorker}: an L{IWorker} whose tasks run on a
L{WireServer<asynqueue.wire.WireServer>} in another process or machine,
over Twisted AMP.

Everything here runs in the reactor thread.
"""

from __future__ import annotations

import importlib
import itertools
import pickle
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._util import Waiters, checkNumber, follow, globalReactor
from ..deferator import DEFAULT_BATCH, Deferator, checkBatchSize
from ..errors import AuthenticationError, ServerLost, WorkerError
from ..info import callableName
from ..interfaces import IWorker
from ..process import decodeReply, finishFromReply, pickleCall, remoteDeferator
from ..task import Task
from ._protocol import (
    VERSION,
    Authenticate,
    AuthenticationFailed,
    CancelTask,
    CloseIteration,
    Hello,
    NextBatch,
    RunTask,
    WireAMP,
    checkProof,
    nonce,
    proof,
    secretBytes,
)

log = Logger()

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute L{idempotent} sets on a callable.
IDEMPOTENT = "wireIdempotent"


def idempotent(f: F) -> F:
    """
    Mark C{f} as safe to run twice: if its server is lost while it runs,
    a L{WireWorker} sends it again once it has reconnected, instead of
    failing it with L{ServerLost<asynqueue.wire.ServerLost>}. Use as a
    decorator on a function at the top level of a module.

    @raise TypeError: C{f} takes no attributes (a builtin).
    """
    try:
        setattr(f, IDEMPOTENT, True)
    except (AttributeError, TypeError) as e:
        raise TypeError(
            f"{callableName(f)} can't be marked idempotent (it takes no"
            " attributes): wrap it in a function of your own"
        ) from e
    return f


#: The errors of an attempt to connect that another attempt may not meet:
#: the server is down or restarting, the network or the handshake failed.
_TRANSIENT = (
    ConnectError,
    ConnectionClosed,
    OSError,
    TimeoutError,
    defer.TimeoutError,
)


def checkDescription(description: object) -> None:
    """
    @raise TypeError: C{description} is not a string.
    @raise ValueError: it is no client endpoint description (the message
        says why).
    """
    from twisted.internet.endpoints import clientFromString

    if not isinstance(description, str):
        raise TypeError(
            "a WireWorker's description must be a client endpoint"
            " description string such as 'tcp:127.0.0.1:8790', not"
            f" {description!r}"
        )
    try:
        # Parsed only (with no reactor): nothing connects.
        clientFromString(object(), description)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(
            f"{description!r} is not a client endpoint description such as"
            f" 'tcp:127.0.0.1:8790' ({e})"
        ) from e


def wireCall(f: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]) -> bytes:
    """
    The call C{f(*args, **kw)}, pickled for a server.

    @raise TypeError: C{f} is not importable by its module and qualified
        name (a lambda, a closure, a bound method, a callable object, or
        anything in C{__main__}), or it or its arguments can't be pickled.
    """
    name = callableName(f)
    module = getattr(f, "__module__", None)
    qualname = getattr(f, "__qualname__", None)
    found: Any = None
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        try:
            found = importlib.import_module(module)
            for part in qualname.split("."):
                found = getattr(found, part)
        except Exception:
            found = None
    if found is not f or module == "__main__":
        where = " (it is in __main__, which the server can't import)" * (
            module == "__main__"
        )
        raise TypeError(
            f"{name} can't run on a remote worker{where}: a task must be"
            " importable by name on the server, as a function (or class) at"
            " the top level of a module, not a lambda, closure, bound method"
            " or callable object: move it to a module the server can import"
        )
    return pickleCall(f, args, kw)


class _Link(WireAMP):
    """
    The worker's end of one connection to a server.
    """

    def __init__(self) -> None:
        super().__init__()
        self.alive = True
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        # Marked dead before AMP fails the requests on their way, so that
        # their errbacks know why they fail.
        self.alive = False
        super().connectionLost(reason)
        self.closed.callback(None)


class _Call:
    """
    A task on its way to, or running on, the server.
    """

    def __init__(self, task: Task[Any], payload: bytes, freed: Deferred[None]) -> None:
        self.task = task
        self.payload = payload
        self.freed = freed
        self.idempotent = bool(getattr(task.f, IDEMPOTENT, False))
        self.link: _Link | None = None
        self.rid = 0
        self.done = False
        # Set when the caller asked the server to stop it.
        self.interrupted = False
        self.giveUp: Any = None


@implementer(IWorker)
class WireWorker:
    """
    Runs tasks one at a time on a L{WireServer<asynqueue.wire.WireServer>}
    reached through a Twisted client endpoint description, such as
    C{"tcp:127.0.0.1:8790"} (or C{"tcp:host=server.example:port=8790"},
    C{"unix:/run/wire.sock"}).

    A task is a callable importable by name on the server (a function at
    the top level of a module), with picklable arguments; others fail at
    once with C{TypeError}. Its value comes back; its exception comes back
    as the same type where that can be rebuilt here, else as
    L{RemoteTaskError<asynqueue.wire.RemoteTaskError>}; an iterator comes
    back as a L{Deferator} whose batches the server reads only when asked.

    The connection is made when the first task comes, retried with
    exponential backoff (up to C{connectTimeout} seconds), and made again
    the same way after it is lost. A task running when its server is lost
    fails with L{ServerLost<asynqueue.wire.ServerLost>} (it may or may
    not have run), unless it is L{idempotent}: then it is sent again once
    the worker has reconnected.

    Cancelling a running task, or its timeout, asks the server to stop it
    (see L{asynqueue.wire}); the caller hears of it when the server has,
    or after C{cancelGrace} seconds, when the worker drops the connection
    (the server then abandons the task) and reconnects for the next one.

    @cvar cQualified: The series every WireWorker runs besides its own:
        C{"wire"} and C{"remote"}, as in the original AsynQueue.
    """

    cQualified: tuple[str, ...] = ("wire", "remote")

    def __init__(
        self,
        description: str,
        *,
        secret: str | bytes,
        series: Sequence[str] = (),
        tls: bool = True,
        batchSize: int = DEFAULT_BATCH,
        connectTimeout: float = 60.0,
        cancelGrace: float = 10.0,
        backoff: tuple[float, float] = (0.1, 5.0),
        reactor: Any = None,
    ) -> None:
        """
        @param description: Where the server listens, as a Twisted client
            endpoint description (without TLS: see C{tls}).
        @param secret: The secret the server was started with (at least 16
            bytes).
        @param series: The series this worker is qualified for.
        @param tls: Speak TLS to the server (as it does unless started with
            C{--no-tls}). No certificate authority is involved: the secret,
            bound to the certificate the worker sees, authenticates the
            server.
        @param batchSize: How many items of an iteration one fetch takes.
        @param connectTimeout: How long to keep trying to reach the server
            for a task before failing it with L{ServerLost}.
        @param cancelGrace: How long a cancelled task may take to stop on
            the server before the worker drops the connection.
        @param backoff: The first and the longest delay between two
            attempts to connect (the delay doubles each time).
        @param reactor: The reactor (C{IReactorTCP}, C{IReactorTime}); the
            global one by default, resolved on first use.
        @raise TypeError: C{description} is no str, or C{secret} neither
            str nor bytes.
        @raise ValueError: C{description} can't be parsed, C{secret} is too
            short, or a number is out of range.
        """
        checkDescription(description)
        self.description = description
        self._secret = secretBytes(secret, "a WireWorker's secret")
        self.iQualified = list(series)
        self.tls = tls
        self.batchSize = checkBatchSize(batchSize)
        self.connectTimeout = checkNumber(
            connectTimeout, "connectTimeout (seconds)", positive=True
        )
        self.cancelGrace = checkNumber(
            cancelGrace, "cancelGrace (seconds)", positive=True
        )
        first, longest = backoff
        checkNumber(first, "backoff's first delay (seconds)", positive=True)
        checkNumber(longest, "backoff's longest delay (seconds)", low=first)
        self.backoff = (first, longest)
        self._reactor = reactor
        #: The task running now, or None.
        self.task: Task[Any] | None = None
        self._call: _Call | None = None
        self._link: _Link | None = None
        self._connecting = False
        self._connected = Waiters()
        self._rids = itertools.count(1)
        self._stopping: Deferred[None] | None = None
        self._idle = Waiters()
        #: How an idempotent task lost with its server moves to another
        #: worker: C{requeue(task)} queues a new task and gives its
        #: Deferred (a L{WireQueue<asynqueue.wire.WireQueue>} sets it to
        #: its C{submit}). C{None}: it waits for this worker to reconnect.
        self.requeue: Callable[[Task[Any]], Deferred[Any]] | None = None

    def __repr__(self) -> str:
        return f"<WireWorker {self.description}>"

    @property
    def reactor(self) -> Any:
        """
        The reactor, resolved lazily.
        """
        if self._reactor is None:
            self._reactor = globalReactor()
        return self._reactor

    @property
    def connected(self) -> bool:
        """
        Whether the worker holds an authenticated connection now.
        """
        return self._link is not None and self._link.alive

    # The connection ----------------------------------------------------------

    def _connection(self) -> Deferred[_Link]:
        # The authenticated connection: at once, or once (re)made.
        link = self._link
        if link is not None and link.alive:
            return succeed(link)
        waiting = self._connected.wait()
        if not self._connecting:
            self._connecting = True
            Deferred.fromCoroutine(self._connect()).addBoth(self._madeConnection)

        def ready(_: None) -> _Link:
            assert self._link is not None
            return self._link

        return waiting.addCallback(ready)

    def _madeConnection(self, result: _Link | Failure) -> None:
        self._connecting = False
        if isinstance(result, Failure):
            self._connected.fail(result)
            return
        if self._stopping is not None and self._call is None:
            result.connection.loseConnection()
            self._connected.fail(Failure(WorkerError(f"{self!r} has stopped")))  # type: ignore[no-untyped-call]
            return
        self._link = result
        self._connected.fire()

    async def _connect(self) -> _Link:
        clock: IReactorTime = self.reactor
        deadline = clock.seconds() + self.connectTimeout
        delay, longest = self.backoff
        while True:
            try:
                return await self._connectOnce()
            except _TRANSIENT as e:
                why = f"{type(e).__name__}: {e}"
            if self._stopping is not None:
                raise WorkerError(f"{self!r} has stopped")
            if clock.seconds() + delay > deadline:
                raise ServerLost(
                    f"{self!r} could not reach its server within"
                    f" {self.connectTimeout:g} s (last: {why})"
                )
            log.info(
                "{worker}: can't reach the server ({why}); again in {delay:g} s",
                worker=self,
                why=why,
                delay=delay,
            )
            await deferLater(clock, delay)
            delay = min(delay * 2, longest)

    async def _connectOnce(self) -> _Link:
        from twisted.internet.endpoints import (
            clientFromString,
            connectProtocol,
            wrapClientTLS,
        )

        endpoint = clientFromString(self.reactor, self.description)  # type: ignore[no-untyped-call]
        if self.tls:
            from ._tls import clientCreator

            endpoint = wrapClientTLS(clientCreator(), endpoint)
        link: _Link = await connectProtocol(endpoint, _Link())  # type: ignore[no-untyped-call]
        try:
            await self._authenticate(link)
        except BaseException:
            link.connection.abortConnection()
            raise
        return link

    async def _authenticate(self, link: _Link) -> None:
        mine = nonce()
        answer = await link.call(Hello, version=VERSION, nonce=mine).addTimeout(
            self.connectTimeout, self.reactor
        )
        theirs = answer["nonce"]
        binding = b""
        peer = getattr(link.connection, "getPeerCertificate", None)
        if self.tls and peer is not None:
            from ._tls import fingerprint

            binding = fingerprint(peer())
        secret = self._secret
        try:
            answer = await link.call(
                Authenticate, proof=proof(secret, b"worker", mine, theirs, binding)
            ).addTimeout(self.connectTimeout, self.reactor)
        except AuthenticationFailed:
            raise AuthenticationError(
                f"the server at {self.description} refused the secret of"
                f" {self!r}: the secrets differ (or something between them"
                " presented another TLS certificate)"
            ) from None
        if not checkProof(
            proof(secret, b"server", theirs, mine, binding), answer["proof"]
        ):
            raise AuthenticationError(
                f"the server at {self.description} could not prove that it"
                f" knows the secret of {self!r}"
            )

    # IWorker -------------------------------------------------------------------

    def run(self, task: Task[Any]) -> Deferred[None]:
        """
        Run C{task} on the server; see L{IWorker.run}.

        @raise RuntimeError: the worker was stopped.
        """
        if self._stopping is not None:
            raise RuntimeError(f"{self!r} is stopped")
        if task.stopRequested:
            task.fail(Failure(task.stopReason))  # type: ignore[no-untyped-call]
            return succeed(None)
        try:
            payload = task.payload
            if not isinstance(payload, bytes):
                payload = wireCall(task.f, task.args, task.kw)
        except TypeError:
            task.fail(Failure())  # type: ignore[no-untyped-call]
            return succeed(None)
        freed: Deferred[None] = Deferred()
        call = self._call = _Call(task, payload, freed)
        self.task = task
        task.onInterrupt(lambda reason: self._interrupt(call))
        self._send(call)
        return freed

    def _send(self, call: _Call) -> None:
        def failed(failure: Failure) -> None:
            self._end(call, failure)

        self._connection().addCallbacks(lambda link: self._runOn(link, call), failed)

    def _runOn(self, link: _Link, call: _Call) -> None:
        if call.done:
            return
        task = call.task
        if task.stopRequested:
            # Cancelled while the connection was being made.
            self._end(call, Failure(task.stopReason))  # type: ignore[no-untyped-call]
            return
        call.link = link
        rid = call.rid = next(self._rids)
        d = link.call(
            RunTask, rid=rid, call=call.payload, raw=task.raw, batchSize=self.batchSize
        )
        d.addCallbacks(
            lambda answer: self._replied(call, link, rid, answer),
            lambda failure: self._sendFailed(call, link, rid, failure),
        )

    def _replied(
        self, call: _Call, link: _Link, rid: int, answer: dict[str, Any]
    ) -> None:
        if call.done or call.rid != rid:
            return
        try:
            kind, body, exhausted = decodeReply(pickle.loads(answer["reply"]))
        except Exception:
            self._end(call, Failure())  # type: ignore[no-untyped-call]
            return
        self._end(
            call,
            None,
            lambda: finishFromReply(
                call.task,
                kind,
                body,
                exhausted,
                lambda items, done: self._deferator(link, rid, items, done),
            ),
        )

    def _sendFailed(self, call: _Call, link: _Link, rid: int, failure: Failure) -> None:
        if call.done or call.rid != rid:
            return
        call.link = None
        task = call.task
        if link.alive:
            # The server answered with an error of its own.
            error = WorkerError(
                f"the server at {self.description} could not run {task.info}:"
                f" {failure.getErrorMessage()}"
            )
            self._end(call, Failure(error))  # type: ignore[no-untyped-call]
            return
        if self._link is link:
            self._link = None
        if call.idempotent and not task.stopRequested:
            log.info(
                "{worker} lost its server while {task} ran there: it is"
                " idempotent, so it runs again",
                worker=self,
                task=task.info,
            )
            if self.requeue is not None and task.pinnedTo is None:
                self._moveOn(call)
                return
            if self._stopping is None:
                self._send(call)
                return
        self._end(
            call,
            Failure(  # type: ignore[no-untyped-call]
                ServerLost(
                    f"{self!r} lost its server while {task.info} ran there"
                    f" ({failure.getErrorMessage()}): it may or may not have"
                    " run (mark it idempotent to have it sent again)"
                )
            ),
        )

    def _moveOn(self, call: _Call) -> None:
        # The same call, queued again as a new task (first in its queue),
        # whose outcome becomes the old one's: the worker is free, and
        # whichever worker is free first runs it.
        assert self.requeue is not None
        task = call.task
        again: Task[Any] = Task(
            task.f, task.args, task.kw, doNext=True, series=task.series, raw=task.raw
        )
        again.payload = call.payload
        try:
            d = self.requeue(again)
        except Exception:
            self._end(call, Failure())  # type: ignore[no-untyped-call]
            return
        task.onInterrupt(lambda reason: d.cancel())

        def deliver() -> None:
            d.addCallbacks(task.finish, task.fail)

        self._end(call, None, deliver)

    def _end(
        self,
        call: _Call,
        failure: Failure | None,
        deliver: Callable[[], None] | None = None,
    ) -> None:
        # Free the worker first, then deliver (as ThreadWorker does).
        if call.done:
            return
        call.done = True
        if call.giveUp is not None and call.giveUp.active():
            call.giveUp.cancel()
        if self._call is call:
            self._call = None
            self.task = None
        call.freed.callback(None)
        if failure is not None:
            call.task.fail(failure)
        elif deliver is not None:
            deliver()
        if self._call is None:
            self._idle.fire()

    def _interrupt(self, call: _Call) -> None:
        # Reactor thread: the task was cancelled or timed out.
        if call.done or call.interrupted:
            return
        call.interrupted = True
        link = call.link
        if link is None or not link.alive:
            # Not on the server (yet): nothing to stop there.
            self._end(call, Failure(call.task.stopReason))  # type: ignore[no-untyped-call]
            return
        link.tell(CancelTask, rid=call.rid)
        call.giveUp = self.reactor.callLater(self.cancelGrace, self._giveUp, call, link)

    def _giveUp(self, call: _Call, link: _Link) -> None:
        # The server did not stop the task in time: drop the connection (the
        # server abandons what it runs for it), and fail the task.
        if call.done:
            return
        log.warn(
            "{worker}: {task} did not stop within {grace:g} s of its"
            " cancellation; dropping the connection",
            worker=self,
            task=call.task.info,
            grace=self.cancelGrace,
        )
        if self._link is link:
            self._link = None
        link.connection.abortConnection()
        self._end(call, Failure(call.task.stopReason))  # type: ignore[no-untyped-call]

    def _deferator(
        self, link: _Link, iterID: int, items: list[Any], exhausted: bool
    ) -> Deferator[Any]:
        gone = f"{self!r} lost the server holding this iteration"

        def ask(handle: Callable[[str, Any, bool], None]) -> None:
            d = link.call(NextBatch, rid=next(self._rids), iterID=iterID)

            def answered(answer: dict[str, Any]) -> None:
                handle(*decodeReply(pickle.loads(answer["reply"])))

            def failed(failure: Failure) -> None:
                error = WorkerError(f"{gone}: {failure.getErrorMessage()}")
                handle("failure", Failure(error), False)  # type: ignore[no-untyped-call]

            d.addCallbacks(answered, failed)

        return remoteDeferator(
            items,
            exhausted,
            ask=ask,
            close=lambda: link.tell(CloseIteration, iterID=iterID),
            alive=lambda: link.alive,
            gone=gone,
            reactor=self.reactor,
        )

    def stop(self) -> Deferred[None]:
        """
        Let the task running now finish, then close the connection. An
        iteration still open fails with L{WorkerError} when it next
        fetches.
        """
        if self._stopping is None:
            self._stopping = Deferred()
            Deferred.fromCoroutine(self._stop()).chainDeferred(self._stopping)
        return follow(self._stopping)

    async def _stop(self) -> None:
        if self._call is not None:
            await self._idle.wait()
        link, self._link = self._link, None
        if link is not None and link.alive:
            link.connection.loseConnection()
            await link.closed

    def crash(self) -> list[Task[Any]]:
        """
        Drop the connection now; hand back the task that was running (the
        server abandons it).
        """
        call, self._call = self._call, None
        self.task = None
        if self._stopping is None:
            self._stopping = succeed(None)
        link, self._link = self._link, None
        if link is not None and link.alive:
            link.connection.abortConnection()
        if call is None:
            return []
        call.done = True
        if call.giveUp is not None and call.giveUp.active():
            call.giveUp.cancel()
        return [call.task]
