"""
Unit tests of asynqueue.wire's pieces: the secret's proofs and the
handshake over an in-memory connection (no sockets, no threads, no
sleeps), the AMP argument for big values, which callables may travel, the
arguments' checks, and the command line's handling of the secret.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.test.iosim import connectedServerAndClient
from zope.interface.verify import verifyObject

from asynqueue import IWorker
from asynqueue.wire import (
    AuthenticationError,
    TaskInterrupted,
    WireQueue,
    WireServer,
    WireWorker,
    idempotent,
)
from asynqueue.wire import __main__ as cli
from asynqueue.wire._calls import wireCall
from asynqueue.wire._connector import Link
from asynqueue.wire._interrupt import Interruptible
from asynqueue.wire._protocol import (
    BigBytes,
    Hello,
    NextBatch,
    NotAuthenticated,
    RunTask,
    VersionMismatch,
    proof,
    secretBytes,
)
from asynqueue.wire._server import _ServerLink, isLoopback

from . import tasks

SECRET = "sixteen bytes at least, surely"


class FakeReactor(Clock):
    """
    A clock that also takes C{callFromThread} (called at once).
    """

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


def connect(
    serverSecret: str = SECRET, workerSecret: str = SECRET, binding: bytes = b""
) -> tuple[WireWorker, Link, _ServerLink, Any, FakeReactor]:
    """
    A worker's link and a server's, connected in memory.
    """
    reactor = FakeReactor()
    server = WireServer(serverSecret, tls=False, reactor=reactor)
    server.binding = binding
    worker = WireWorker(
        "tcp:127.0.0.1:1", secret=workerSecret, tls=False, reactor=reactor
    )
    client, serverLink, pump = connectedServerAndClient(
        lambda: _ServerLink(server), Link
    )
    return worker, client, serverLink, pump, reactor


def authenticate(worker: WireWorker, client: Link, pump: Any) -> Deferred[None]:
    d = Deferred.fromCoroutine(worker._connector._authenticate(client))
    pump.flush()
    return d


def test_handshake() -> None:
    """
    The same secret on both sides: each proves it to the other, and the
    server then takes commands.
    """
    worker, client, serverLink, pump, _ = connect()
    d = authenticate(worker, client, pump)
    assert d.called and d.result is None
    assert serverLink.authenticated


@pytest.mark.parametrize("binding", [b"", b"\x01" * 32])
def test_wrongSecret(binding: bytes) -> None:
    """
    Another secret, or the same one bound to another TLS certificate than
    the worker saw (someone in between): the server refuses and hangs up,
    the worker fails with L{AuthenticationError}.
    """
    other = "another secret, also long enough" if not binding else SECRET
    worker, client, serverLink, pump, reactor = connect(
        serverSecret=other, binding=binding
    )
    d = authenticate(worker, client, pump)
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(AuthenticationError)
    assert "refused the secret" in str(failures[0].value)
    assert not serverLink.authenticated
    reactor.advance(0)
    assert serverLink.transport.disconnecting


def test_authenticationTimeout() -> None:
    """
    A connection that does not authenticate within C{authTimeout} is
    dropped; one that does is kept.
    """
    _, _, slow, _, reactor = connect()
    reactor.advance(29)
    assert not slow.connection.disconnecting
    reactor.advance(1)
    assert slow.connection.disconnecting
    worker, client, quick, pump, reactor = connect()
    authenticate(worker, client, pump)
    reactor.advance(60)
    assert not quick.connection.disconnecting


def test_commandsBeforeAuthentication() -> None:
    """
    Nothing is unpickled or run before the worker has proved its secret:
    L{RunTask} and L{NextBatch} are refused.
    """
    _, client, serverLink, pump, _ = connect()
    results: list[Any] = []
    client.callRemote(RunTask, rid=1, call=b"junk", raw=False, batchSize=1).addErrback(
        results.append
    )
    client.callRemote(NextBatch, rid=2, iterID=1).addErrback(results.append)
    pump.flush()
    assert [f.check(NotAuthenticated) for f in results] == [NotAuthenticated] * 2
    assert serverLink._thread is None


def test_versionMismatch() -> None:
    """
    A worker speaking another version of the commands is told so.
    """
    _, client, _, pump, _ = connect()
    results: list[Any] = []
    client.callRemote(Hello, version=999, nonce=b"n").addErrback(results.append)
    pump.flush()
    assert results[0].check(VersionMismatch)


def test_proofs() -> None:
    """
    A proof depends on the secret, the side, the order of the nonces and
    the channel binding.
    """
    base = proof(b"s" * 16, b"worker", b"a", b"b", b"")
    assert base == proof(b"s" * 16, b"worker", b"a", b"b", b"")
    assert base != proof(b"t" * 16, b"worker", b"a", b"b", b"")
    assert base != proof(b"s" * 16, b"server", b"a", b"b", b"")
    assert base != proof(b"s" * 16, b"worker", b"b", b"a", b"")
    assert base != proof(b"s" * 16, b"worker", b"a", b"b", b"x")


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 200_001])
def test_bigBytes(size: int) -> None:
    """
    Values of any size go through AMP, split into values of at most
    65,535 bytes.
    """
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    strings: dict[bytes, bytes] = {}
    BigBytes().toBox(b"call", strings, {"call": data}, None)
    assert all(len(v) <= 0xFFFF for v in strings.values())
    back: dict[str, Any] = {}
    BigBytes().fromBox(b"call", strings, back, None)
    assert back["call"] == data


def closure() -> Any:
    def inner() -> int:
        return 1

    return inner


class Callable:
    def __call__(self) -> int:
        return 1

    def method(self) -> int:
        return 1


def inMain() -> int:
    return 1


inMain.__module__ = "__main__"


@pytest.mark.parametrize(
    ("f", "match"),
    [
        (lambda: 1, "lambda"),
        (closure(), "inner"),
        (Callable().method, "method"),
        (Callable(), "Callable"),
        (inMain, "__main__"),
    ],
)
def test_refusedCallables(f: Any, match: str) -> None:
    """
    Only callables the server can import by name travel; others are
    refused with a C{TypeError} naming them and saying what to do.
    """
    with pytest.raises(TypeError, match=match) as info:
        wireCall(f, (), {})
    assert "importable by name" in str(info.value)


def test_acceptedCallables() -> None:
    """
    Functions and classes at the top level of a module travel; arguments
    that can't be pickled are refused, naming the callable.
    """
    assert wireCall(tasks.add, (1,), {"y": 2})
    assert wireCall(tasks.CustomError, ("x",), {})
    with pytest.raises(TypeError, match=r"arguments of .*add"):
        wireCall(tasks.add, (threading.Lock(),), {})


def test_idempotent() -> None:
    """
    L{idempotent} marks a function and gives it back; a builtin can't be
    marked.
    """
    assert getattr(tasks.onceSlow, "wireIdempotent", False)
    with pytest.raises(TypeError, match="idempotent"):
        idempotent(len)


def test_badArguments() -> None:
    """
    Bad arguments are refused, naming what was wrong.
    """
    with pytest.raises(ValueError, match="at least 16 bytes"):
        WireWorker("tcp:127.0.0.1:1", secret="short")
    with pytest.raises(TypeError, match="str or bytes"):
        secretBytes(12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="description"):
        WireWorker(("127.0.0.1", 1), secret=SECRET)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown endpoint type: 'foo'"):
        WireWorker("foo:127.0.0.1:1", secret=SECRET)
    with pytest.raises(ValueError, match="not a client endpoint description"):
        WireWorker("tcp:127.0.0.1", secret=SECRET)
    with pytest.raises(ValueError, match="connectTimeout"):
        WireWorker("tcp:127.0.0.1:1", secret=SECRET, connectTimeout=0)
    with pytest.raises(ValueError, match="TLS may be turned off only on a loopback"):
        WireServer(SECRET, tls=False, reactor=Clock()).listen(1, "0.0.0.0")
    with pytest.raises(ValueError, match="both a TLS certificate and its key"):
        WireServer(SECRET, certificate=b"x")
    assert isLoopback("127.0.0.2") and isLoopback("::1") and isLoopback("localhost")
    assert not isLoopback("10.0.0.1") and not isLoopback("example.com")


def test_isAWorker() -> None:
    """
    A L{WireWorker} provides L{IWorker}, and runs the "wire" and "remote"
    series as well as its own.
    """
    worker = WireWorker("tcp:127.0.0.1:1", secret=SECRET, series=["gpu"])
    assert verifyObject(IWorker, worker)
    assert worker.iQualified == ["gpu"]
    assert "remote" in worker.cQualified and "wire" in worker.cQualified


def test_interruptible() -> None:
    """
    A call run by L{Interruptible} in one thread is interrupted from
    another with L{TaskInterrupted}; once it has returned, an interruption
    is dropped, and never hits the code that ran it.
    """
    runner = Interruptible()
    running = threading.Event()
    outcome: list[object] = []

    def loop() -> None:
        running.set()
        while True:
            pass

    def thread() -> None:
        try:
            runner.run("a", loop)
        except TaskInterrupted as e:
            outcome.append(e)
        outcome.append(runner.run("b", lambda: "returned"))

    t = threading.Thread(target=thread)
    t.start()
    running.wait(60)
    assert not runner.interrupt("other")
    assert runner.interrupt("a")
    t.join(60)
    assert isinstance(outcome[0], TaskInterrupted)
    assert outcome[1] == "returned"
    assert not runner.interrupt("b")


def test_secretFromFileOrEnvironment(tmp_path: Path) -> None:
    """
    The server's secret comes from a file (without its final newline) or
    the environment, never the command line.
    """
    f = tmp_path / "secret"
    f.write_bytes(b"from the file, long enough\n")
    assert cli.readSecret(str(f), {}) == b"from the file, long enough"
    assert cli.readSecret(None, {cli.SECRET_ENV: "from env"}) == "from env"
    with pytest.raises(SystemExit, match="no secret"):
        cli.readSecret(None, {})
    with pytest.raises(SystemExit, match="can't read"):
        cli.readSecret(str(tmp_path / "missing"), {})
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["serve", "--port", "1", "--secret", SECRET])


def test_wireQueueRefusesAtCallTime() -> None:
    """
    A L{WireQueue} refuses a call that can't travel when it is made (the
    queue goes on), and a single description string.
    """
    q = WireQueue(["tcp:127.0.0.1:1"], secret=SECRET, tls=False, reactor=Clock())
    with pytest.raises(TypeError, match="importable by name"):
        q.call(closure())
    with pytest.raises(TypeError, match="arguments of"):
        q.call(tasks.add, threading.Lock())
    assert q.pending() == 0
    assert q.workers[0].requeue == q.submit
    with pytest.raises(TypeError, match="wrap it in a list"):
        WireQueue("tcp:127.0.0.1:1", secret=SECRET)


def test_backoff() -> None:
    """
    A server that refuses connections: the worker tries again after
    delays that double up to the longest, then fails the task with
    L{ServerLost} once C{connectTimeout} would be passed.
    """
    from twisted.internet.error import ConnectionRefusedError
    from twisted.internet.testing import MemoryReactorClock
    from twisted.python.failure import Failure

    from asynqueue import ServerLost, TaskQueue

    reactor = MemoryReactorClock()
    worker = WireWorker(
        "tcp:127.0.0.1:1",
        secret=SECRET,
        tls=False,
        connectTimeout=10,
        backoff=(1, 4),
        reactor=reactor,
    )
    q = TaskQueue(clock=reactor)
    q.attachWorker(worker)
    d = q.call(tasks.add, 1, 2)
    attempts: list[float] = []
    while not d.called:
        if len(reactor.tcpClients) > len(attempts):
            attempts.append(reactor.seconds())
            factory = reactor.tcpClients[-1][2]
            connector = reactor.connectors[-1]
            factory.clientConnectionFailed(
                connector,
                Failure(ConnectionRefusedError()),  # type: ignore[no-untyped-call]
            )
        else:
            reactor.advance(0.5)
        assert reactor.seconds() < 60
    assert attempts == [0, 1, 3, 7]
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures[0].check(ServerLost)
    assert "within 10 s" in str(failures[0].value)
    assert "ConnectionRefusedError" in str(failures[0].value)
