"""
L{WireServer}: runs the tasks of L{WireWorker<asynqueue.wire.WireWorker>}s
that connect to it, each connection's tasks in a thread of its own.

The reactor thread speaks AMP; a connection's thread (a
L{ThreadWorker<asynqueue.workers.ThreadWorker>}) unpickles each call, runs
it and reads the batches of the iterations it returned, through an
L{asynqueue._child.ChildServer} used in that thread only. Deferreds are
made and fired in the reactor thread.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._child import ChildServer, dumps
from .._util import LazyReactor, checkNumber
from ..task import Task, setCurrentTask
from ..workers import ThreadWorker
from ._interrupt import Interruptible
from ._protocol import (
    VERSION,
    Authenticate,
    AuthenticationFailed,
    CancelTask,
    CloseIteration,
    Hello,
    NextBatch,
    NotAuthenticated,
    RunTask,
    VersionMismatch,
    WireAMP,
    checkProof,
    secretBytes,
)
from ._protocol import nonce as newNonce
from ._protocol import proof as makeProof

log = Logger()


def _remoteCall() -> None:
    """
    What the server's L{Task} of a call names (the call itself is still
    pickled when the task is made).
    """


class _Calls(ChildServer):
    """
    A connection's calls and open iterations, in its thread: each call is
    interruptible (L{Interruptible}) and sees its task as
    L{currentTask<asynqueue.task.currentTask>}, so that it can check
    C{stopRequested} or register an interrupter of its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self.interruptible = Interruptible()
        # Written in the reactor thread before the call is queued to the
        # thread; read there.
        self.tasks: dict[int, Task[Any]] = {}

    def invoke(
        self, rid: int, f: Any, args: tuple[Any, ...], kw: dict[str, Any]
    ) -> Any:
        task = self.tasks.get(rid)
        setCurrentTask(task)
        try:
            return self.interruptible.run(rid, lambda: f(*args, **kw))
        finally:
            setCurrentTask(None)


class _ServerLink(WireAMP):
    """
    The server's end of one worker's connection.
    """

    def __init__(self, server: WireServer) -> None:
        super().__init__()
        self.server = server
        self.authenticated = False
        self._nonces: tuple[bytes, bytes] | None = None
        self._calls = _Calls()
        self._thread: ThreadWorker | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.peer = str(self.connection.getPeer())
        self.server.links.add(self)
        # A connection that does not authenticate in time is dropped.
        self._deadline = self.server.reactor.callLater(
            self.server.authTimeout, self._tooSlow
        )

    def _tooSlow(self) -> None:
        log.warn(
            "asynqueue.wire: the worker at {peer} did not authenticate within"
            " {seconds:g} s",
            peer=self.peer,
            seconds=self.server.authTimeout,
        )
        self.connection.abortConnection()

    def _stopDeadline(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None and deadline.active():
            deadline.cancel()

    # Authentication ----------------------------------------------------------

    @Hello.responder
    def hello(self, version: int, nonce: bytes) -> dict[str, Any]:
        if version != VERSION:
            raise VersionMismatch(
                f"this server speaks version {VERSION}, the worker {version}"
            )
        mine = newNonce()
        self._nonces = (nonce, mine)
        return {"nonce": mine}

    @Authenticate.responder
    def authenticate(self, proof: bytes) -> dict[str, Any]:
        server = self.server
        if self._nonces is None or self.authenticated:
            self._refuse("authenticated out of turn")
        assert self._nonces is not None
        theirs, mine = self._nonces
        expected = makeProof(server.secret, b"worker", theirs, mine, server.binding)
        if not checkProof(expected, proof):
            self._refuse("a wrong secret (or another TLS certificate in between)")
        self.authenticated = True
        self._stopDeadline()
        log.info("asynqueue.wire: worker at {peer} authenticated", peer=self.peer)
        return {
            "proof": makeProof(server.secret, b"server", mine, theirs, server.binding)
        }

    def _refuse(self, why: str) -> None:
        log.warn(
            "asynqueue.wire: refused the worker at {peer}: {why}",
            peer=self.peer,
            why=why,
        )
        # Hang up once the refusal is written.
        self.server.reactor.callLater(0, self.connection.loseConnection)
        raise AuthenticationFailed(why)

    def _inThread(self, message: tuple[Any, ...]) -> Deferred[dict[str, Any]]:
        # Run one request of the ChildServer in this connection's thread.
        if not self.authenticated:
            raise NotAuthenticated("authenticate first")
        if self._thread is None:
            # Made with the first task: this connection's tasks run there.
            self._thread = ThreadWorker(
                name=f"asynqueue-wire {self.peer}",
                callFromThread=self.server.reactor.callFromThread,
            )
        calls = self._calls
        d = self._thread.call(lambda: calls.handle(message))
        return d.addCallback(lambda replies: {"reply": dumps(replies[0])})

    # Tasks ---------------------------------------------------------------------

    @RunTask.responder
    def runTask(
        self, rid: int, call: bytes, raw: bool, batchSize: int
    ) -> Deferred[dict[str, Any]]:
        if not self.authenticated:
            raise NotAuthenticated("authenticate first")
        calls = self._calls
        task: Task[Any] = Task(_remoteCall)
        calls.tasks[rid] = task
        interruptible = calls.interruptible
        task.onInterrupt(lambda reason: interruptible.interrupt(rid))

        def done(result: object) -> object:
            calls.tasks.pop(rid, None)
            return result

        return self._inThread(("call", rid, call, raw, batchSize)).addBoth(done)

    @NextBatch.responder
    def nextBatch(self, rid: int, iterID: int) -> Deferred[dict[str, Any]]:
        return self._inThread(("next", rid, iterID))

    @CloseIteration.responder
    def closeIteration(self, iterID: int) -> dict[str, Any]:
        if self.authenticated:
            self._inThread(("close", iterID)).addErrback(self._logged)
        return {}

    @CancelTask.responder
    def cancelTask(self, rid: int) -> dict[str, Any]:
        task = self._calls.tasks.get(rid)
        if task is not None:
            task.requestStop(CancelledError(f"cancelled by the worker at {self.peer}"))
        return {}

    def _logged(self, failure: Failure) -> None:
        log.failure("asynqueue.wire: {peer}", failure, peer=self.peer)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.server.links.discard(self)
        self.authenticated = False
        self._stopDeadline()
        # Abandon what runs for this worker: interrupt it, close its
        # iterations, end its thread.
        for task in list(self._calls.tasks.values()):
            task.requestStop(CancelledError(f"the worker at {self.peer} is gone"))
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.call(self._calls.closeAll).addErrback(self._logged)
            thread.stop()
        log.info("asynqueue.wire: the worker at {peer} disconnected", peer=self.peer)
        super().connectionLost(reason)


def isLoopback(interface: str) -> bool:
    """
    Whether C{interface} (an address, or C{"localhost"}) is a loopback one.
    """
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


class WireServer(LazyReactor):
    """
    Runs the tasks of the L{WireWorker<asynqueue.wire.WireWorker>}s that
    connect and prove they know its secret; each connection's tasks run in
    a thread of its own, one at a time, with their iterations. A cancelled
    task is interrupted where Python allows it (see L{asynqueue.wire}).

    Anyone who knows the secret can run any importable code here, with
    this process's rights: see C{docs/remote.md}.
    """

    def __init__(
        self,
        secret: str | bytes,
        *,
        tls: bool = True,
        certificate: bytes | None = None,
        key: bytes | None = None,
        authTimeout: float = 30.0,
        reactor: Any = None,
    ) -> None:
        """
        @param secret: What workers must prove they know (at least 16 bytes).
        @param tls: Speak TLS (turn it off only on loopback, for tests).
        @param certificate: The PEM certificate for TLS; with C{key}, or
            neither (a self-signed one is made).
        @param key: Its PEM private key.
        @param authTimeout: How long a new connection may take to
            authenticate before it is dropped.
        @param reactor: The reactor; the global one by default, resolved
            on first use.
        @raise ValueError: a bad secret, certificate or key, or only one of
            the last two.
        """
        self.secret = secretBytes(secret, "a WireServer's secret")
        self.tls = tls
        self.authTimeout = checkNumber(
            authTimeout, "authTimeout (seconds)", positive=True
        )
        self._reactor = reactor
        #: The connections open now.
        self.links: set[_ServerLink] = set()
        self.options: Any = None
        #: The SHA-256 of the TLS certificate (C{b""} without TLS).
        self.binding = b""
        if (certificate is None) != (key is None):
            raise ValueError(
                "a WireServer needs both a TLS certificate and its key, or"
                " neither (a self-signed certificate is made)"
            )
        if tls:
            from ._tls import fingerprint, selfSignedPEM, serverOptions

            if certificate is None or key is None:
                certificate, key = selfSignedPEM()
            self.options = serverOptions(certificate, key)
            self.binding = fingerprint(certificate)
        elif certificate is not None:
            raise ValueError("a TLS certificate was given, but TLS is off")

    def factory(self) -> Any:
        """
        A factory of the server's connections (TLS not included: see
        L{listen}).
        """
        return ServerFactory.forProtocol(lambda: _ServerLink(self))

    def listen(self, port: int, interface: str = "127.0.0.1") -> Deferred[Any]:
        """
        Listen on TCP C{port} (0: any free one) of C{interface}, with TLS
        unless it is off.

        @return: A Deferred firing with the C{IListeningPort}.
        @raise ValueError: TLS is off and C{interface} is not a loopback
            address.
        """
        from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint

        endpoint: Any
        if self.tls:
            endpoint = SSL4ServerEndpoint(  # type: ignore[no-untyped-call]
                self.reactor, port, self.options, interface=interface
            )
        else:
            if not isLoopback(interface):
                raise ValueError(
                    f"TLS may be turned off only on a loopback interface, not"
                    f" {interface!r}: the secret's proof does not protect the"
                    " tasks and results that follow it"
                )
            endpoint = TCP4ServerEndpoint(  # type: ignore[no-untyped-call]
                self.reactor, port, interface=interface
            )
        d: Deferred[Any] = endpoint.listen(self.factory())
        return d
