"""
The errors AsynQueue raises, in one small hierarchy.

Errors raised by the callables you queue are never wrapped: the
Deferred from L{TaskQueue.call} fails with the original exception.
"""

from __future__ import annotations


class QueueError(Exception):
    """
    Base class of every error AsynQueue itself raises.
    """


class QueueStopped(QueueError):
    """
    A call was made on a queue that has been shut down (or is shutting
    down) and accepts no more work.
    """


class UnknownSeries(QueueError):
    """
    A call named a series that no attached worker is qualified for (by its
    C{iQualified} list or its class's C{cQualified}): when it was made, or
    once the last qualified worker was detached. It would wait forever.
    """


class TaskTimeout(QueueError, TimeoutError):
    """
    A task did not finish within its C{timeout}. If it was running, the
    worker was asked to stop it (see L{asynqueue.task.Task.onInterrupt})
    before this error was delivered.
    """


class OutcomeUnknown(QueueError):
    """
    The caller stopped waiting for a running call whose stop it had asked
    for before (a second cancel, or a cancel after a timeout): the call had
    gone past its point of no return (sAsync: its transaction's COMMIT was
    sent) or could not be stopped at once, so it may still take effect.
    Never a C{CancelledError}: that one means the call will not. The reason
    for the last stop is the exception's C{__cause__}.
    """


class WorkerError(QueueError):
    """
    A worker could not run a task: it was detached, crashed or died.
    """


class IterationStopped(QueueError):
    """
    A L{Deferator} was asked for an item after it was stopped or
    exhausted.
    """


class RemoteTaskError(QueueError):
    """
    A task run in another process raised an exception whose type could
    not be recreated here; C{remoteType} and C{remoteTraceback} describe
    it.
    """

    def __init__(self, remoteType: str, message: str, remoteTraceback: str) -> None:
        super().__init__(f"{remoteType}: {message}\n{remoteTraceback}")
        self.remoteType = remoteType
        self.remoteTraceback = remoteTraceback


class ServerLost(WorkerError):
    """
    A remote worker (L{asynqueue.wire.WireWorker}) lost its server, or could
    not reach it in time, while a task was on its way or running there: the
    task may or may not have run. Tasks marked
    L{idempotent<asynqueue.wire.idempotent>} are sent again instead, once
    the worker has reconnected.
    """


class AuthenticationError(QueueError):
    """
    A remote worker and its server do not share the same secret (or a
    third party sits between them): the connection was refused before
    any task was sent.
    """
