"""
L{WireWorker}: an L{IWorker} whose tasks run on a
L{WireServer<asynqueue.wire.WireServer>} in another process or machine,
over Twisted AMP.

Everything here runs in the reactor thread.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._util import Waiters, checkNumber, follow
from ..deferator import DEFAULT_BATCH, Deferator, checkBatchSize
from ..errors import ServerLost, WorkerError
from ..interfaces import IWorker
from ..process import decodeReply, finishFromReply, payloadOrFail, remoteDeferator
from ..task import Task
from ._calls import IDEMPOTENT, checkDescription, wireCall
from ._connector import Connector, Link
from ._protocol import CancelTask, CloseIteration, NextBatch, RunTask, secretBytes

log = Logger()


class _Call:
    """
    A task on its way to, or running on, the server.
    """

    def __init__(self, task: Task[Any], payload: bytes, freed: Deferred[None]) -> None:
        self.task = task
        self.payload = payload
        self.freed = freed
        self.idempotent = bool(getattr(task.f, IDEMPOTENT, False))
        self.link: Link | None = None
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
    C{"tcp:127.0.0.1:8790"} (or C{"tcp:host=server.example:port=8790"}).

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
        self.iQualified = list(series)
        self.batchSize = checkBatchSize(batchSize)
        self.cancelGrace = checkNumber(
            cancelGrace, "cancelGrace (seconds)", positive=True
        )
        first, longest = backoff
        checkNumber(first, "backoff's first delay (seconds)", positive=True)
        checkNumber(longest, "backoff's longest delay (seconds)", low=first)
        self._connector = Connector(
            description,
            secretBytes(secret, "a WireWorker's secret"),
            tls=tls,
            connectTimeout=checkNumber(
                connectTimeout, "connectTimeout (seconds)", positive=True
            ),
            backoff=(first, longest),
            # A call may still need a connection while the worker stops.
            wanted=lambda: self._stopping is None or self._call is not None,
            who=self,
            reactor=reactor,
        )
        #: The task running now, or None.
        self.task: Task[Any] | None = None
        self._call: _Call | None = None
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
        return self._connector.reactor

    @property
    def connected(self) -> bool:
        """
        Whether the worker holds an authenticated connection now.
        """
        link = self._connector.link
        return link is not None and link.alive

    # IWorker -------------------------------------------------------------------

    def run(self, task: Task[Any]) -> Deferred[None]:
        """
        Run C{task} on the server; see L{IWorker.run}.

        @raise RuntimeError: the worker was stopped.
        """
        if self._stopping is not None:
            raise RuntimeError(f"{self!r} is stopped")
        payload = payloadOrFail(task, wireCall)
        if payload is None:
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

        self._connector.connection().addCallbacks(
            lambda link: self._runOn(link, call), failed
        )

    def _runOn(self, link: Link, call: _Call) -> None:
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
        self, call: _Call, link: Link, rid: int, answer: dict[str, Any]
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

    def _sendFailed(self, call: _Call, link: Link, rid: int, failure: Failure) -> None:
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
        self._connector.forget(link)
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

    def _giveUp(self, call: _Call, link: Link) -> None:
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
        self._connector.forget(link)
        link.connection.abortConnection()
        self._end(call, Failure(call.task.stopReason))  # type: ignore[no-untyped-call]

    def _deferator(
        self, link: Link, iterID: int, items: list[Any], exhausted: bool
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
        link = self._connector.link
        if link is not None:
            self._connector.forget(link)
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
        link = self._connector.link
        if link is not None:
            self._connector.forget(link)
        if link is not None and link.alive:
            link.connection.abortConnection()
        if call is None:
            return []
        call.done = True
        if call.giveUp is not None and call.giveUp.active():
            call.giveUp.cancel()
        return [call.task]
