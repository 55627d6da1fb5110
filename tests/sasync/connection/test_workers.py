"""
Connection workers, deterministic: C{ConnectionWorker} provides
C{IWorker}, and its socket watch notices a connection the server closed.
"""

from __future__ import annotations

import socket
import sys

import pytest
import sqlalchemy as SA
from zope.interface.verify import verifyObject

from asynqueue import IWorker
from sasync.connection import _workers
from sasync.connection._workers import SocketWatch


def test_connectionWorkerIsAWorker() -> None:
    """
    ConnectionWorker provides IWorker (without starting a connection).
    """
    from asynqueue.workers import MemoryJobRunner
    from sasync.connection._workers import ConnectionWorker

    engine = SA.create_engine("sqlite://")
    runner = MemoryJobRunner()
    done: list[object] = []
    worker = ConnectionWorker(
        engine,
        holdIterations=False,
        batchSize=10,
        name="w",
        runner=runner,
        callFromThread=lambda f, *a: done.append(f(*a)),
    )
    assert verifyObject(IWorker, worker)
    worker.stop()
    runner.performAll()
    assert runner.quitted
    engine.dispose()


@pytest.mark.parametrize("libcPoll", [True, False])
def test_serverClosedNoticed(libcPoll: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The socket watch says nothing while the peer is quiet or sends what a
    driver handles itself (a PostgreSQL ParameterStatus), and tells once
    the peer sends an error message or closes the connection: through the
    C library's poll() (which keeps the GIL) and through select.poll,
    where that can't be loaded.
    """
    if not libcPoll:
        monkeypatch.setattr(_workers, "_LIBC_POLL", None)

    class FakeConnection:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def fileno(self) -> int:
            return self.sock.fileno()

    ours, theirs = socket.socketpair()
    try:
        watch = SocketWatch.of(FakeConnection(ours), "postgresql")
        assert watch is not None
        assert not watch.serverClosed()
        theirs.sendall(b"S\x00\x00\x00\x08ab")
        assert not watch.serverClosed()
        ours.recv(100)
        theirs.sendall(b"E\x00\x00\x00\x08FATAL")
        assert watch.serverClosed()
    finally:
        ours.close()
        theirs.close()
    ours, theirs = socket.socketpair()
    try:
        watch = SocketWatch.of(FakeConnection(ours), "mysql")
        assert watch is not None
        theirs.sendall(b"\x05\x00\x00\x01\x03abcd")  # a row
        assert not watch.serverClosed()
        ours.recv(100)
        theirs.close()
        assert watch.serverClosed()
    finally:
        ours.close()
    assert SocketWatch.of(object(), "sqlite") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's poll()")
def test_watchKeepsTheGIL() -> None:
    """
    On Linux the socket watch polls with the GIL held (C{select.poll}
    lets it go around the system call, and a worker thread then waits for
    it behind the threads running Python: see the benchmark's system call
    counts), and still sees the socket turn readable.
    """
    ours, theirs = socket.socketpair()
    try:
        watch = SocketWatch(ours.fileno(), "postgresql")
        assert watch.holdsGIL
        assert not watch.poll(0)
        theirs.sendall(b"E")
        assert watch.poll(0)
    finally:
        ours.close()
        theirs.close()
