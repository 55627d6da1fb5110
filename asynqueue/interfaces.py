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
    """

    iQualified = Attribute(
        "A list of series names. Besides tasks of no series, the worker runs "
        "only tasks whose series is in this list."
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
