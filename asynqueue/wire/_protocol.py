"""
The AMP commands a L{WireWorker<asynqueue.wire.WireWorker>} and its
L{WireServer<asynqueue.wire.WireServer>} exchange, and the proofs of the
shared secret.

A connection starts with L{Hello} (the worker's nonce out, the server's
back) and L{Authenticate} (the worker's proof; the server answers with its
own). Only then does the server accept L{RunTask}, L{NextBatch},
L{CloseIteration} and L{CancelTask}. Calls, results and exceptions travel
as the pickles of L{asynqueue.process} (the replies of
L{asynqueue._child.ChildServer}, one per request): nothing is unpickled on
either side before both have proved that they know the secret.

A proof is an HMAC-SHA256, keyed with the secret, of a label naming the
side, both nonces and the TLS I{channel binding}: the SHA-256 of the
server's certificate, as the server knows it and as the worker saw it.
Someone relaying the handshake between the two over TLS connections of
their own presents another certificate, so the proofs do not match.
"""

# twisted.protocols.amp has no type hints: its calls are untyped here, and
# WireAMP gives the rest of asynqueue.wire typed ones.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp
from twisted.python.failure import Failure

#: Bumped when the commands change incompatibly.
VERSION = 1

#: How many bytes of randomness each side's nonce has.
NONCE_SIZE = 32

#: The least length of a secret, in bytes (UTF-8 for a str).
MIN_SECRET = 16

# AMP's limit for one value (a longer one is split over several keys).
_CHUNK = 0xFFFF


def secretBytes(secret: str | bytes, what: str = "the secret") -> bytes:
    """
    The secret as bytes, checked.

    @param what: How an error message names it.
    @raise TypeError: it is neither C{str} nor C{bytes}.
    @raise ValueError: it is shorter than L{MIN_SECRET} bytes.
    """
    if isinstance(secret, str):
        data = secret.encode("utf-8")
    elif isinstance(secret, bytes):
        data = secret
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(secret).__name__}")
    if len(data) < MIN_SECRET:
        raise ValueError(
            f"{what} must be at least {MIN_SECRET} bytes long, not {len(data)}"
            " (use a random one, e.g. python -c 'import secrets;"
            " print(secrets.token_urlsafe(32))')"
        )
    return data


def nonce() -> bytes:
    """
    A fresh random nonce.
    """
    return os.urandom(NONCE_SIZE)


def proof(
    secret: bytes, side: bytes, mine: bytes, theirs: bytes, binding: bytes
) -> bytes:
    """
    One side's proof that it knows C{secret}, for this connection.

    @param side: C{b"worker"} or C{b"server"}.
    @param mine: The nonce of the side proving.
    @param theirs: The other side's nonce.
    @param binding: The SHA-256 of the server's TLS certificate (C{b""}
        without TLS).
    """
    message = b"asynqueue-wire/%d %s\0%s\0%s\0%s" % (
        VERSION,
        side,
        mine,
        theirs,
        binding,
    )
    return hmac.new(secret, message, hashlib.sha256).digest()


def checkProof(expected: bytes, given: bytes) -> bool:
    """
    Whether a proof matches, in constant time.
    """
    return hmac.compare_digest(expected, given)


class BigBytes(amp.Argument):
    """
    Bytes of any length: AMP takes at most 65,535 bytes in one value, so a
    longer one is split over the keys C{name}, C{name.1}, C{name.2}...
    with the count in C{name.n}.
    """

    def toBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: object,
    ) -> None:
        value: bytes = objects[name.decode("ascii")]
        chunks = [value[i : i + _CHUNK] for i in range(0, len(value), _CHUNK)] or [b""]
        strings[name] = chunks[0]
        for i, chunk in enumerate(chunks[1:], 1):
            strings[b"%s.%d" % (name, i)] = chunk
        strings[name + b".n"] = b"%d" % len(chunks)

    def fromBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: object,
    ) -> None:
        count = int(strings[name + b".n"])
        parts = [strings[name]]
        parts.extend(strings[b"%s.%d" % (name, i)] for i in range(1, count))
        objects[name.decode("ascii")] = b"".join(parts)


class AuthenticationFailed(Exception):
    """
    On the wire: the server refused the worker's proof.
    """


class NotAuthenticated(Exception):
    """
    On the wire: a command came before the worker proved its secret.
    """


class VersionMismatch(Exception):
    """
    On the wire: the two sides speak different versions of these commands.
    """


_REFUSED: dict[type[Exception], bytes] = {
    NotAuthenticated: b"NOT_AUTHENTICATED",
}


class Hello(amp.Command):
    """
    The worker's first command: its nonce out, the server's nonce back.
    """

    arguments = [(b"version", amp.Integer()), (b"nonce", amp.String())]
    response = [(b"nonce", amp.String())]
    errors = {VersionMismatch: b"VERSION_MISMATCH"}


class Authenticate(amp.Command):
    """
    The worker's proof; the server's proof back, or L{AuthenticationFailed}
    (and the server hangs up).
    """

    arguments = [(b"proof", amp.String())]
    response = [(b"proof", amp.String())]
    errors = {AuthenticationFailed: b"AUTHENTICATION_FAILED"}


class RunTask(amp.Command):
    """
    Run a pickled call C{(f, args, kw)}. The reply is a pickled
    L{asynqueue._child.ChildServer} reply: a value, the first batch of an
    iteration (kept open under the ID C{rid}), or a failure.
    """

    arguments = [
        (b"rid", amp.Integer()),
        (b"call", BigBytes()),
        (b"raw", amp.Boolean()),
        (b"batchSize", amp.Integer()),
    ]
    response = [(b"reply", BigBytes())]
    errors = _REFUSED


class NextBatch(amp.Command):
    """
    The next batch of iteration C{iterID}: produced only when asked.
    """

    arguments = [(b"rid", amp.Integer()), (b"iterID", amp.Integer())]
    response = [(b"reply", BigBytes())]
    errors = _REFUSED


class CloseIteration(amp.Command):
    """
    Close iteration C{iterID} (the worker's L{Deferator} stopped early).
    """

    arguments = [(b"iterID", amp.Integer())]
    requiresAnswer = False


class CancelTask(amp.Command):
    """
    Stop the task run by request C{rid}: it is interrupted where possible,
    and its reply comes as usual (usually a failure).
    """

    arguments = [(b"rid", amp.Integer())]
    requiresAnswer = False


class WireAMP(amp.AMP):
    """
    AMP with type hints for what asynqueue.wire uses of it.
    """

    def __init__(self) -> None:
        super().__init__()

    def connectionMade(self) -> None:
        super().connectionMade()
        # Small requests and replies, each awaited: don't let Nagle's
        # algorithm hold them back (under TLS, the TCP transport is below).
        transport = self.transport
        while transport is not None:
            setNoDelay = getattr(transport, "setTcpNoDelay", None)
            if setNoDelay is not None:
                setNoDelay(True)
                break
            transport = getattr(transport, "transport", None)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)

    def call(self, command: type[amp.Command], **arguments: Any) -> Deferred[Any]:
        """
        C{callRemote}, typed.
        """
        d: Deferred[Any] = self.callRemote(command, **arguments)
        return d

    def tell(self, command: type[amp.Command], **arguments: Any) -> None:
        """
        C{callRemote} of a command that has no answer.
        """
        self.callRemote(command, **arguments)

    @property
    def connection(self) -> Any:
        """
        The transport (a TCP or TLS one), or C{None} before the connection.
        """
        return self.transport
