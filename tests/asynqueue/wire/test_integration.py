"""
Integration tests: L{WireWorker}s in a L{TaskQueue} with real
C{python -m asynqueue.wire serve} processes on loopback (see
L{tests.asynqueue.wire.servers}). Each C{async def} test runs in the
reactor thread; waits are for events (files the tasks write, replies),
with generous limits, never for fixed times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThread

from asynqueue import Deferator, ListConsumer, TaskQueue, TaskTimeout, WorkerError
from asynqueue.wire import (
    AuthenticationError,
    RemoteTaskError,
    ServerLost,
    WireQueue,
    WireWorker,
)

from . import tasks
from .servers import SECRET, Server


def pause(seconds: float) -> Deferred[None]:
    """
    Reactor thread: a Deferred that fires after C{seconds}.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds)  # type: ignore[arg-type]


async def waitFor(path: Path, seconds: float = 60) -> str:
    """
    Wait until C{path} exists (a task wrote it); its text.
    """
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {seconds:g} s")
        await pause(0.02)
    return path.read_text()


@pytest.fixture(params=["tls", "plain"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """
    A running server: with a generated TLS certificate, and with --no-tls.
    """
    s = Server(tmp_path, tls=request.param == "tls").start()
    yield s
    s.stop()


@pytest.fixture
def tlsServer(tmp_path: Path) -> Iterator[Server]:
    """
    A running server with a generated TLS certificate.
    """
    s = Server(tmp_path).start()
    yield s
    s.stop()


def queueFor(*servers: Server, **kw: Any) -> TaskQueue:
    """
    A queue with a worker for each server.
    """
    q = TaskQueue()
    for s in servers:
        q.attachWorker(WireWorker(s.description, secret=SECRET, tls=s.tls, **kw))
    return q


async def test_callsAndErrors(server: Server) -> None:
    """
    Values come back from the server's process, big ones too; exceptions
    come back as their own type where this side can rebuild them (with
    the remote traceback), else as L{RemoteTaskError} (a type that exists
    only on the server, or can't be rebuilt); a callable the
    server can't import by name is refused with a message saying so.
    """
    q = queueFor(server)
    try:
        assert await q.call(tasks.add, 2, y=3) == 5
        assert await q.call(tasks.pid) == server.pid
        assert await q.call(tasks.big, 300_000) == b"x" * 300_000
        with pytest.raises(tasks.CustomError, match="remote trouble") as info:
            await q.call(tasks.raiseCustom, "remote trouble")
        assert "raiseCustom" in info.value.remoteTraceback  # type: ignore[attr-defined]
        with pytest.raises(RemoteTaskError) as info2:
            await q.call(tasks.raiseUnrebuildable)
        assert info2.value.remoteType.endswith("Unrebuildable")
        assert "raiseUnrebuildable" in info2.value.remoteTraceback
        with pytest.raises(RemoteTaskError, match="made on the server") as info3:
            await q.call(tasks.raiseServerOnly)
        assert info3.value.remoteType == "wire_server_only.OnlyHere"
        with pytest.raises(TypeError, match="importable by name"):
            await q.call(lambda: 1)
        assert await q.call(tasks.add, 1) == 1
    finally:
        await q.shutdown()


async def test_iterationBackpressure(tlsServer: Server, tmp_path: Path) -> None:
    """
    An iterator comes back as a L{Deferator}; the server reads its items
    only as batches are asked for (a bounded look-ahead, not the whole
    iteration), and all of them in order once consumed.
    """
    q = queueFor(tlsServer, batchSize=2)
    path = str(tmp_path / "produced")
    try:
        dr = await q.call(tasks.counted, 100, path)
        assert isinstance(dr, Deferator)
        # The same server thread answers this after the batches already
        # asked for: what it says is all that was produced by then.
        early = await q.call(tasks.produced, path)
        # The first batch and two fetched ahead, one item looked ahead each.
        assert early <= 3 * (2 + 1)
        assert [x async for x in dr] == list(range(100))
        assert await q.call(tasks.produced, path) == 100
        # Stopped early: the server closes it.
        dr2 = await q.call(tasks.counted, 100, path)
        assert await next(dr2) == 0
        dr2.stop()
        assert await q.call(tasks.produced, path) < 100
    finally:
        await q.shutdown()


@pytest.mark.reactorTimeout(120)
async def test_cancellationReachesServer(tlsServer: Server, tmp_path: Path) -> None:
    """
    Cancelling a running call interrupts it in the server's thread (even a
    loop that never looks), and the caller hears L{CancelledError} once it
    has stopped there; a call that checks C{currentTask().stopRequested}
    sees it, and its own interrupter is called. A timeout does the same
    with L{TaskTimeout}. The worker goes on with the next call.
    """
    q = queueFor(tlsServer)
    try:
        marker = tmp_path / "spin"
        d = q.call(tasks.spin, str(marker))
        await waitFor(Path(str(marker) + ".started"))
        d.cancel()
        with pytest.raises(CancelledError):
            await d
        assert marker.read_text() == "TaskInterrupted"

        polite = tmp_path / "polite"
        d = q.call(tasks.politely, str(polite))
        await waitFor(Path(str(polite) + ".started"))
        d.cancel()
        with pytest.raises(CancelledError):
            await d
        assert polite.read_text() == "CancelledError"
        timed = tmp_path / "timed"
        with pytest.raises(TaskTimeout):
            await q.call(tasks.spin, str(timed), timeout=2)
        assert timed.read_text() == "TaskInterrupted"
        assert await q.call(tasks.add, 40, 2) == 42
    finally:
        await q.shutdown()


@pytest.mark.reactorTimeout(180)
async def test_killedServer(tlsServer: Server, tmp_path: Path) -> None:
    """
    kill -9 of the server mid-task: the task fails with L{ServerLost}; an
    idempotent task is sent again once the server is back (on its port)
    and the worker has reconnected; later calls work.
    """
    q = queueFor(tlsServer, connectTimeout=120)
    try:
        started = tmp_path / "slow"
        d = q.call(tasks.sleepThenAdd, str(started), 600, 1)
        await waitFor(Path(str(started) + ".started"))
        await deferToThread(tlsServer.kill)
        with pytest.raises(ServerLost, match="may or may not have run"):
            await d
        await deferToThread(tlsServer.start)
        assert await q.call(tasks.add, 2, 3) == 5

        marker = tmp_path / "once"
        firstPid = tlsServer.pid
        d = q.call(tasks.onceSlow, str(marker))
        await waitFor(marker)
        await deferToThread(tlsServer.kill)
        # Back after a while: the worker keeps trying, with backoff.
        await pause(0.5)
        await deferToThread(tlsServer.start)
        assert tlsServer.pid != firstPid
        assert await d == f"again in {tlsServer.pid}"
    finally:
        await q.shutdown()


async def test_wrongSecret(tlsServer: Server, tmp_path: Path) -> None:
    """
    A worker with another secret is refused: its call fails with
    L{AuthenticationError} and its task never runs, and the server logs
    the refusal.
    """
    q = TaskQueue()
    q.attachWorker(WireWorker(tlsServer.description, secret="not the right secret!"))
    marker = tmp_path / "never"
    try:
        with pytest.raises(AuthenticationError, match="refused the secret"):
            await q.call(tasks.sleepThenAdd, str(marker), 0, 1)
        assert not Path(str(marker) + ".started").exists()
        deadline = time.monotonic() + 30
        while "refused the worker" not in tlsServer.logText():
            assert time.monotonic() < deadline, tlsServer.logText()
            await pause(0.05)
        assert "wrong secret" in tlsServer.logText()
    finally:
        await q.shutdown()


@pytest.mark.reactorTimeout(120)
async def test_twoServersShareLoad(tmp_path: Path) -> None:
    """
    Two servers, one worker each, in one queue: calls made together run on
    both.
    """
    servers = [Server(tmp_path).start(), Server(tmp_path).start()]
    q = queueFor(*servers)
    try:
        ds = [q.call(tasks.pidAfter, 0.2) for _ in range(6)]
        pids = [await d for d in ds]
        assert set(pids) == {s.pid for s in servers}
        assert os.getpid() not in pids
    finally:
        await q.shutdown()
        for s in servers:
            s.stop()


async def test_unreachableServer() -> None:
    """
    A server that can't be reached: the worker tries again with backoff,
    then fails the call with L{ServerLost} saying so.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # (Nothing listens there now.)
    q = TaskQueue()
    q.attachWorker(
        WireWorker(
            f"tcp:127.0.0.1:{port}",
            secret=SECRET,
            connectTimeout=1,
            backoff=(0.05, 0.2),
        )
    )
    try:
        with pytest.raises(ServerLost, match="could not reach its server within 1 s"):
            await q.call(tasks.add, 1, 2)
    finally:
        await q.shutdown()


@pytest.mark.reactorTimeout(120)
async def test_cancelGrace(tlsServer: Server, tmp_path: Path) -> None:
    """
    A task that can't be interrupted in time (blocked in C): after
    C{cancelGrace} the worker drops the connection, the caller hears of
    the cancellation, and the worker reconnects for its next call.
    """
    q = queueFor(tlsServer, cancelGrace=0.5)
    try:
        marker = tmp_path / "blocked"
        d = q.call(tasks.blockedInC, str(marker), 300)
        await waitFor(Path(str(marker) + ".started"))
        d.cancel()
        with pytest.raises(CancelledError):
            await d
        assert await q.call(tasks.add, 1, 1) == 2
    finally:
        await q.shutdown()


@pytest.mark.reactorTimeout(120)
async def test_consumerAndLostIteration(tlsServer: Server, tmp_path: Path) -> None:
    """
    An iteration written to a consumer arrives whole; an iteration left
    open on a server that is then killed fails with L{WorkerError} at its
    next fetch, and nothing hangs.
    """
    q = queueFor(tlsServer, batchSize=3, connectTimeout=120)
    path = str(tmp_path / "produced")
    try:
        consumer = ListConsumer()
        assert await q.call(tasks.counted, 50, path, consumer=consumer) is consumer
        assert consumer.items == list(range(50))
        dr = await q.call(tasks.counted, 1000, path)
        assert await next(dr) == 0
        await deferToThread(tlsServer.kill)
        with pytest.raises(WorkerError, match="lost the server"):
            async for _ in dr:
                pass
        await deferToThread(tlsServer.start)
        assert await q.call(tasks.add, 2, 2) == 4
    finally:
        await q.shutdown()


@pytest.mark.reactorTimeout(120)
async def test_idempotentMovesOn(tmp_path: Path) -> None:
    """
    In a L{WireQueue}, an idempotent task whose server is killed under it
    runs again on the other server, without waiting for the first to come
    back; a call that can't travel is refused when it is made.
    """
    servers = {s.pid: s for s in (Server(tmp_path).start(), Server(tmp_path).start())}
    q = WireQueue([s.description for s in servers.values()], secret=SECRET)
    try:
        with pytest.raises(TypeError, match="importable by name"):
            q.call(lambda: 1)
        marker = tmp_path / "once"
        d = q.call(tasks.onceSlow, str(marker))
        first = int(await waitFor(marker))
        await deferToThread(servers.pop(first).kill)
        (other,) = servers
        assert await d == f"again in {other}"
    finally:
        await q.shutdown()
        for s in servers.values():
            s.stop()


@pytest.mark.reactorTimeout(120)
async def test_workersShareAServer(tlsServer: Server, tmp_path: Path) -> None:
    """
    Two workers of one server: their tasks run at the same time there,
    each in its connection's thread.
    """
    q = WireQueue([tlsServer.description] * 2, secret=SECRET)
    try:
        a = q.call(tasks.meet, str(tmp_path), "a", "b")
        b = q.call(tasks.meet, str(tmp_path), "b", "a")
        assert [await a, await b] == [tlsServer.pid] * 2
    finally:
        await q.shutdown()


async def test_givenCertificate(tmp_path: Path) -> None:
    """
    A server started with a certificate and key of its own uses them: the
    fingerprint it prints is theirs, and workers connect.
    """
    from asynqueue.wire._tls import fingerprint, selfSignedPEM

    certificate, key = selfSignedPEM("wire-test")
    (tmp_path / "cert.pem").write_bytes(certificate)
    (tmp_path / "key.pem").write_bytes(key)
    extra = ("--certificate", str(tmp_path / "cert.pem"))
    extra += ("--key", str(tmp_path / "key.pem"))
    server = await deferToThread(Server(tmp_path, extra=extra).start)
    q = queueFor(server)
    try:
        assert fingerprint(certificate).hex() in server.banner
        assert await q.call(tasks.add, 20, 22) == 42
    finally:
        await q.shutdown()
        server.stop()


async def test_notOnTheServer(tlsServer: Server, tmp_path: Path) -> None:
    """
    A function the server can't import (its module is only here) fails
    with a C{TypeError} saying why; the worker goes on.
    """
    import importlib
    import sys

    (tmp_path / "wire_client_only.py").write_text("def f():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("wire_client_only")
        q = queueFor(tlsServer)
        try:
            with pytest.raises(TypeError, match=r"could not be unpickled.*wire_client"):
                await q.call(module.f)
            assert await q.call(tasks.add, 1, 2) == 3
        finally:
            await q.shutdown()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("wire_client_only", None)
