"""
The interface every worker of a L{TaskQueue} provides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from .task import Task


class IWorker(Interface):
    """
    Something that runs the tasks a L{TaskQueue} hands it, one at a time.

    All methods are called in the reactor thread, and every Deferred a
    worker returns or fires is fired there.

    Optionally, a worker may I{take tasks ahead}: with a true C{takesAhead}
    attribute, the queue may call L{run} once more while the worker runs
    one task (never more), so that the worker can go on to the next task
    without waiting for the reactor; the worker runs them in order. Such a
    worker also has C{takeBack(task) -> bool}: give up that second task if
    it has not started it yet (the queue then queues it again, for a task
    of higher priority, an idle worker or a cancellation). If it may have
    to stop taking tasks ahead for a while (a L{ThreadWorker
    <asynqueue.workers.ThreadWorker>} with C{holdIterations}, while an
    iteration holds it), it has a C{pauseAhead} attribute, which the queue
    sets to a callable: the worker calls C{pauseAhead(True)} then (the
    queue takes back the task it gave ahead, if any, and gives it none
    until told), and C{pauseAhead(False)} when it may take ahead again.

    A worker may also have C{give(task, onFreed)}: L{run} without a
    Deferred, calling C{onFreed(worker, task)} once instead (the queue then
    uses it: one Deferred less per task).
    """

    iQualified = Attribute(
        "A list of series names. Besides tasks of no series, the worker runs "
        "only tasks whose series is in this list, or in the optional class "
        "attribute C{cQualified} (the series every worker of its class runs: "
        "'thread' for ThreadWorker, 'process' for ProcessWorker)."
    )

    def run(task: Task[Any]) -> object:
        """
        Start running C{task} (an L{asynqueue.task.Task}).

        The worker delivers the task's outcome exactly once, through
        C{task.finish(result)} or C{task.fail(failure)}, in the reactor
        thread. The Deferred returned here fires (with C{None}) when the
        worker can take another task; that may be later than the delivery,
        for instance while the worker holds an iteration open.

        @return: C{Deferred[None]}
        """

    def stop() -> object:
        """
        Finish what is running, then stop for good.

        @return: C{Deferred[None]} that fires when the worker has stopped.
        """

    def crash() -> object:
        """
        Stop at once, abandoning what is running.

        @return: the list of tasks that the worker accepted but did not
            finish, so that the queue can give them to another worker.
        """
