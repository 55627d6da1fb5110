"""
A broker's schema work (L{sasync._schema}), unit-tested with a L{Clock}
reactor and fake workers: C{table()} runs a L{SetupJob} first in line and
publishes the table, refuses names and late calls clearly, and a process
pool refuses setup jobs with a message instead of a pickling error.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as SA
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from asynqueue import Task
from sasync import AccessBroker
from sasync._schema import SetupJob
from sasync.errors import BrokerStopped, TableNameError
from sasync.multicore._pool import ProcessPool
from tests.sasync.fakes import FakeReactor, Workers


class SchemaTests(SynchronousTestCase):
    """
    C{table()} on a running broker with fake workers.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.workers = Workers()
        self.broker = AccessBroker(
            "sqlite://", reactor=self.reactor, createWorker=self.workers
        )
        self.reactor.advance(0)

    def tearDown(self) -> None:
        self.successResultOf(self.broker.shutdown())

    def test_tablePublished(self) -> None:
        """
        C{table()} hands a L{SetupJob} named after the call to a worker,
        first in line; once it ran, the table is C{broker.<name>}, and a
        second call (meanwhile or later) gives the same table without
        another job.
        """
        d = self.broker.table("url", SA.Column("id", SA.Integer, primary_key=True))
        again = self.broker.table("url")
        [task] = self.workers.only.received
        self.assertIsInstance(task.f, SetupJob)
        self.assertEqual(task.f.description, "AccessBroker.table('url')")
        self.assertEqual(task.niceness, -20)
        self.workers.only.succeed(None)
        table = self.successResultOf(d)
        self.assertIs(self.successResultOf(again), table)
        self.assertIs(self.broker.url, table)  # type: ignore[attr-defined]
        self.assertIs(self.successResultOf(self.broker.table("url")), table)
        self.assertEqual(len(self.workers.only.received), 1)

    def test_tableFailed(self) -> None:
        """
        A table whose job failed is forgotten: the call fails with the
        error, and a later call tries again.
        """
        d = self.broker.table("t", SA.Column("id", SA.Integer, primary_key=True))
        self.workers.only.fail(Failure(RuntimeError("no room")))
        self.failureResultOf(d, RuntimeError)
        self.assertFalse(hasattr(self.broker, "t"))
        d = self.broker.table("t", SA.Column("id", SA.Integer, primary_key=True))
        self.workers.only.succeed(None)
        self.assertEqual(self.successResultOf(d).name, "t")

    def test_secondCallAfterFailure(self) -> None:
        """
        A second C{table()} call made while the first is making the table
        does not hang when the first fails: it tries again by itself.
        """
        first = self.broker.table("t", SA.Column("id", SA.Integer, primary_key=True))
        second = self.broker.table("t", SA.Column("id", SA.Integer, primary_key=True))
        self.workers.only.fail(Failure(RuntimeError("no room")))
        self.failureResultOf(first, RuntimeError)
        self.assertEqual(len(self.workers.only.received), 2)
        self.workers.only.succeed(None)
        self.assertEqual(self.successResultOf(second).name, "t")

    def test_tableNameShadows(self) -> None:
        """
        A table name that would shadow a method is refused at once.
        """
        with self.assertRaises(TableNameError) as caught:
            self.broker.table("shutdown", SA.Column("id", SA.Integer))
        self.assertIn("AccessBroker.shutdown", str(caught.exception))
        self.assertEqual(self.workers.only.received, [])

    def test_tableAfterShutdown(self) -> None:
        """
        After shutdown, C{table()} and C{migrate()} fail with
        L{BrokerStopped} naming the call.
        """
        self.successResultOf(self.broker.shutdown())
        failure = self.failureResultOf(self.broker.table("x"), BrokerStopped)
        self.assertIn("table('x') was called after shutdown()", str(failure.value))
        failure = self.failureResultOf(self.broker.migrate("/m"), BrokerStopped)
        self.assertIn("migrate() was called after shutdown()", str(failure.value))


class PoolRefusesSetupJobs(SynchronousTestCase):
    """
    Under C{processes=N}, schema work belongs to the worker processes.
    """

    def test_message(self) -> None:
        """
        A setup job submitted to a process pool (C{table()} called in the
        parent) is refused with a C{TypeError} naming the call, not a
        pickling error.
        """
        pool = ProcessPool("LogBroker", 1, 1, b"", reactor=Clock())

        def create(connection: Any) -> None:
            pass

        job = SetupJob(create, "LogBroker.table('url')")
        with self.assertRaises(TypeError) as caught:
            pool.message(Task(job))
        message = str(caught.exception)
        self.assertIn("LogBroker.table('url')", message)
        self.assertIn("can't be called in the parent", message)
