"""
Connection workers, deterministic: C{ConnectionWorker} provides
C{IWorker}, and its socket watch notices a connection the server closed.
"""

from __future__ import annotations

import socket

import sqlalchemy as SA
from zope.interface.verify import verifyObject

from asynqueue import IWorker
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


def test_serverClosedNoticed() -> None:
    """
    The socket watch says nothing while the peer is quiet or sends what a
    driver handles itself (a PostgreSQL ParameterStatus), and tells once
    the peer sends an error message or closes the connection.
    """

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
