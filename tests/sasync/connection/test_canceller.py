"""
The canceller's timing, deterministic (a L{Clock}, cancel jobs kept in a
list): a cancel is repeated while its task runs on the connection, and a
connection whose server does not stop the task is cut.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.task import Clock

from asynqueue import Task
from sasync.connection._cancel import (
    CANCEL_TIMEOUT,
    CUT_AFTER,
    RESEND_INTERVAL,
    Canceller,
)


class FakeServerConnection:
    """
    A psycopg2-like connection: a cancel stops the statement running now,
    and is lost if none runs (as PostgreSQL's cancel request is). Its socket
    is one end of a socket pair; the test holds the other (the "server").
    """

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.cancels = 0
        self.running = False
        self.stopped = 0
        self._sock = sock

    def cancel(self) -> None:
        self.cancels += 1
        if self.running:
            self.running = False
            self.stopped += 1

    def fileno(self) -> int:
        if self._sock is None:
            return -1
        return self._sock.fileno()


class Sent:
    """
    Stands in for the cancel thread: keeps the jobs until L{run}.
    """

    def __init__(self) -> None:
        self.jobs: list[Callable[[], object]] = []

    def __call__(self, job: Callable[[], object]) -> None:
        self.jobs.append(job)

    def run(self) -> int:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()
        return len(jobs)


def running(canceller: Canceller) -> Task[Any]:
    """
    A task running on the canceller's connection.
    """
    task: Task[Any] = Task(lambda: None)
    task.start(object())
    canceller.enter(task)
    return task


def interrupted(
    connection: FakeServerConnection,
) -> tuple[Canceller, Sent, Task[Any], Clock]:
    """
    A canceller on C{connection}, just asked to stop its running task.
    """
    sent = Sent()
    canceller = Canceller("postgresql", None, sent)
    canceller.attach(connection)
    task = running(canceller)
    clock = Clock()
    canceller.interrupt(task, clock)
    return canceller, sent, task, clock


@pytest.fixture
def socketPair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, server = socket.socketpair()
    server.setblocking(False)
    try:
        yield ours, server
    finally:
        ours.close()
        server.close()


def test_cancelRepeatedUntilTaskLeaves() -> None:
    """
    A first cancel that arrives between statements finds nothing to stop
    (the server drops it); the statement that starts next is stopped by the
    repeat, RESEND_INTERVAL later. Repeats go on while the task runs on the
    connection, and end when it leaves: nothing is sent after that, and no
    timer is left.
    """
    connection = FakeServerConnection()
    canceller, sent, _task, clock = interrupted(connection)
    assert sent.run() == 1
    assert (connection.cancels, connection.stopped) == (1, 0)
    connection.running = True  # The next statement starts.
    clock.advance(RESEND_INTERVAL)
    assert sent.run() == 1
    assert (connection.cancels, connection.stopped) == (2, 1)
    clock.advance(RESEND_INTERVAL)
    assert sent.run() == 1
    canceller.leave()
    clock.advance(RESEND_INTERVAL)
    assert sent.run() == 0
    assert connection.cancels == 3
    assert not clock.getDelayedCalls()


def test_settleWaitsForTheCancelBeingSent() -> None:
    """
    Canceller.settle (what a transaction calls once it cleared activeTask
    itself, for a task asked to stop) returns only once a cancel being
    sent (under the canceller's lock) is done.
    """
    canceller = Canceller("postgresql", None)
    settled = threading.Event()

    def settle() -> None:
        canceller.settle()
        settled.set()

    with canceller._lock:
        thread = threading.Thread(target=settle)
        thread.start()
        thread.join(0.05)
        assert not settled.is_set()
    thread.join()
    assert settled.is_set()


def test_cancelOnlyForItsTask() -> None:
    """
    A repeat never reaches the next task on the connection.
    """
    connection = FakeServerConnection()
    canceller, sent, _task, clock = interrupted(connection)
    sent.run()
    canceller.leave()
    running(canceller)
    connection.running = True
    clock.advance(RESEND_INTERVAL)
    sent.run()
    assert (connection.cancels, connection.stopped) == (1, 0)


def test_cutAfterGrace(socketPair: tuple[socket.socket, socket.socket]) -> None:
    """
    A task still running CUT_AFTER seconds after the first cancel (the
    server does not answer) has its connection's socket shut down: the
    server side sees the end of the stream at once (and the driver's
    blocked read returns). Not a moment before.
    """
    ours, server = socketPair
    connection = FakeServerConnection(ours)
    canceller, sent, _task, clock = interrupted(connection)
    try:
        while clock.seconds() + RESEND_INTERVAL < CUT_AFTER:
            clock.advance(RESEND_INTERVAL)
            with pytest.raises(BlockingIOError):
                server.recv(1)
        clock.advance(RESEND_INTERVAL)
        assert server.recv(1) == b""
        assert not clock.getDelayedCalls()
        assert sent.run() == CUT_AFTER / RESEND_INTERVAL
    finally:
        # As the worker does when it replaces the connection: the
        # canceller's duplicate of the socket is closed.
        canceller.detach()


def test_noCutAfterLeaving(socketPair: tuple[socket.socket, socket.socket]) -> None:
    """
    A task that stopped in time leaves its connection alone, even if the
    next task runs on it when the grace would have run out; and a detached
    connection (closed, or replaced) is never cut.
    """
    ours, server = socketPair
    connection = FakeServerConnection(ours)
    canceller, _sent, task, clock = interrupted(connection)
    clock.advance(RESEND_INTERVAL)
    canceller.leave()
    running(canceller)
    clock.advance(CUT_AFTER)
    assert not canceller.cut(task)
    with pytest.raises(BlockingIOError):
        server.recv(1)
    canceller.detach()
    assert not canceller.cut(canceller.activeTask)  # type: ignore[arg-type]
    with pytest.raises(BlockingIOError):
        server.recv(1)


def test_sqliteHasNothingToSend() -> None:
    """
    SQLite: the progress handler stops the statement; nothing is sent, no
    timer set.
    """
    sent = Sent()
    canceller = Canceller("sqlite", None, sent)
    task = running(canceller)
    clock = Clock()
    canceller.interrupt(task, clock)
    assert sent.jobs == []
    assert not clock.getDelayedCalls()


class FakePsycopg3Connection(FakeServerConnection):
    """
    A psycopg 3-like connection: C{cancel_safe(timeout=...)} is the cancel
    to use; its old C{cancel()} must not be.
    """

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float] = []

    def cancel_safe(self, *, timeout: float = 30.0) -> None:
        self.timeouts.append(timeout)
        super().cancel()

    def cancel(self) -> None:
        raise AssertionError("cancel() used where cancel_safe() is there")


def test_psycopg3UsesCancelSafe() -> None:
    """
    On psycopg 3 the cancel is C{cancel_safe()} (libpq 17's cancel, which
    keeps the connection's SSL settings), with a bounded timeout.
    """
    connection = FakePsycopg3Connection()
    connection.running = True
    _canceller, sent, _task, _clock = interrupted(connection)
    assert sent.run() == 1
    assert connection.stopped == 1
    assert connection.timeouts == [CANCEL_TIMEOUT]


# Cancelling ----------------------------------------------------------------------


class FakePG:
    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> None:
        self.cancels += 1


def test_cancellerTargetsItsTask() -> None:
    """
    A cancel is sent only while the task it is for runs on the connection.
    """
    target = FakePG()
    canceller = Canceller("postgresql", None)
    canceller.attach(target)
    task: Task[Any] = Task(lambda: None)
    other: Task[Any] = Task(lambda: None)
    canceller.sendCancel(task)
    assert target.cancels == 0
    canceller.enter(task)
    canceller.sendCancel(other)
    assert target.cancels == 0
    canceller.sendCancel(task)
    assert target.cancels == 1
    canceller.leave()
    canceller.sendCancel(task)
    assert target.cancels == 1


def test_cancellerMySQL() -> None:
    """
    On MySQL the cancel is KILL QUERY of the connection's thread id.
    """
    killed: list[int] = []

    class FakeMySQL:
        def thread_id(self) -> int:
            return 42

    canceller = Canceller("mysql", killed.append)
    canceller.attach(FakeMySQL())
    task: Task[Any] = Task(lambda: None)
    canceller.enter(task)
    canceller.sendCancel(task)
    assert killed == [42]
