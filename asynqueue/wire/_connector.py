"""
A L{WireWorker<asynqueue.wire.WireWorker>}'s connection to its server:
made when needed, tried again with exponential backoff, and authenticated
(see L{asynqueue.wire._protocol}) before it is used.

Everything here runs in the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._util import LazyReactor, Waiters
from ..errors import AuthenticationError, ServerLost, WorkerError
from ._protocol import (
    VERSION,
    Authenticate,
    AuthenticationFailed,
    Hello,
    WireAMP,
    checkProof,
    nonce,
    proof,
)

log = Logger()

#: The errors of an attempt to connect that another attempt may not meet:
#: the server is down or restarting, the network or the handshake failed.
_TRANSIENT = (
    ConnectError,
    ConnectionClosed,
    OSError,
    TimeoutError,
    defer.TimeoutError,
)


class Link(WireAMP):
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


class Connector(LazyReactor):
    """
    Makes, and makes again once lost, one authenticated connection to a
    server.
    """

    def __init__(
        self,
        description: str,
        secret: bytes,
        *,
        tls: bool,
        connectTimeout: float,
        backoff: tuple[float, float],
        wanted: Callable[[], bool],
        who: object,
        reactor: Any = None,
    ) -> None:
        """
        @param wanted: Whether a connection is still wanted (C{False}: its
            worker stopped and has nothing left to send).
        @param who: Names the worker in messages.
        @param reactor: The reactor; the global one by default, resolved
            on first use.
        """
        self.description = description
        self._secret = secret
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.backoff = backoff
        self.wanted = wanted
        self.who = who
        self._reactor = reactor
        #: The connection now, if any (it may have been lost since).
        self.link: Link | None = None
        self._connecting = False
        self._connected = Waiters()

    def forget(self, link: Link) -> None:
        """
        C{link} is lost or dropped: the next L{connection} makes another.
        """
        if self.link is link:
            self.link = None

    def connection(self) -> Deferred[Link]:
        """
        The authenticated connection: at once, or once (re)made, trying
        again with backoff for up to C{connectTimeout} seconds.

        @return: A Deferred firing with the L{Link}, or failing with
            L{ServerLost<asynqueue.wire.ServerLost>} (not reached in
            time), L{AuthenticationError<asynqueue.wire.AuthenticationError>}
            or L{asynqueue.errors.WorkerError} (not wanted any
            more).
        """
        link = self.link
        if link is not None and link.alive:
            return succeed(link)
        waiting = self._connected.wait()
        if not self._connecting:
            self._connecting = True
            Deferred.fromCoroutine(self._connect()).addBoth(self._madeConnection)

        def ready(_: None) -> Link:
            assert self.link is not None
            return self.link

        return waiting.addCallback(ready)

    def _madeConnection(self, result: Link | Failure) -> None:
        self._connecting = False
        if isinstance(result, Failure):
            self._connected.fail(result)
            return
        if not self.wanted():
            result.connection.loseConnection()
            self._connected.fail(Failure(WorkerError(f"{self.who!r} has stopped")))  # type: ignore[no-untyped-call]
            return
        self.link = result
        self._connected.fire()

    async def _connect(self) -> Link:
        clock: IReactorTime = self.reactor
        deadline = clock.seconds() + self.connectTimeout
        delay, longest = self.backoff
        while True:
            try:
                return await self._connectOnce()
            except _TRANSIENT as e:
                why = f"{type(e).__name__}: {e}"
            if not self.wanted():
                raise WorkerError(f"{self.who!r} has stopped")
            if clock.seconds() + delay > deadline:
                raise ServerLost(
                    f"{self.who!r} could not reach its server within"
                    f" {self.connectTimeout:g} s (last: {why})"
                )
            log.info(
                "{worker}: can't reach the server ({why}); again in {delay:g} s",
                worker=self.who,
                why=why,
                delay=delay,
            )
            await deferLater(clock, delay)
            delay = min(delay * 2, longest)

    async def _connectOnce(self) -> Link:
        from twisted.internet.endpoints import (
            clientFromString,
            connectProtocol,
            wrapClientTLS,
        )

        endpoint = clientFromString(self.reactor, self.description)  # type: ignore[no-untyped-call]
        if self.tls:
            from ._tls import clientCreator

            endpoint = wrapClientTLS(clientCreator(), endpoint)
        link: Link = await connectProtocol(endpoint, Link())  # type: ignore[no-untyped-call]
        try:
            await self._authenticate(link)
        except BaseException:
            link.connection.abortConnection()
            raise
        return link

    async def _authenticate(self, link: Link) -> None:
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
                f" {self.who!r}: the secrets differ (or something between them"
                " presented another TLS certificate)"
            ) from None
        if not checkProof(
            proof(secret, b"server", theirs, mine, binding), answer["proof"]
        ):
            raise AuthenticationError(
                f"the server at {self.description} could not prove that it"
                f" knows the secret of {self.who!r}"
            )
