"""
A broker's schema work: L{Schema.table} (create or evolve a table, see
L{sasync.tables}), L{Schema.migrate} (Alembic, see L{sasync.migrations}),
and the tables a worker process's broker made (C{processes=N}).

Both run as L{SetupJob}s: in a worker thread, outside any user
transaction, first in line. L{Schema} holds no broker: it is handed how to
check and publish a table name, when to refuse, and where jobs run.
Reactor thread only, except where a docstring says "Worker thread".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import sqlalchemy as SA
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from asynqueue import follow

from . import migrations, retry, tables
from .connection import state

T = TypeVar("T")


class SetupJob(Generic[T]):
    """
    Worker thread: runs C{setup(connection)} on the thread's connection,
    outside any user transaction. Setup jobs are idempotent, so a missing
    or lost connection allows running one again.

    @ivar description: How the job is named (C{"LogBroker.table('url')"}).
    """

    def __init__(self, setup: Callable[[Connection], T], description: str) -> None:
        self._setup = setup
        self.description = description
        self.__qualname__ = description

    def __call__(self) -> T:
        worker = state.worker
        assert worker is not None, "setup jobs run in sAsync worker threads"
        try:
            connection = worker.connection()
        except DBAPIError as e:
            retry.markRetryable(e, retry.NO_CONNECTION)
            raise
        try:
            return self._setup(connection)
        except DBAPIError as e:
            if e.connection_invalidated:
                # (The worker replaces the connection before its next job.)
                retry.markRetryable(e, retry.LOST)
            raise
        finally:
            # Whatever it raised: the connection is shared by every broker
            # on this database, and must not stay inside a transaction.
            worker.leaveTransaction()


class Schema:
    """
    The tables of one broker.

    @ivar tables: Its tables by name (made, or learned from a worker
        process).
    """

    def __init__(
        self,
        *,
        name: str,
        checkName: Callable[[str, Mapping[str, SA.Table]], None],
        publish: Callable[[str, SA.Table], None],
        refusal: Callable[[str], Deferred[Any] | None],
        run: Callable[[SetupJob[Any]], Deferred[Any]],
        pooled: bool = False,
    ) -> None:
        """
        @param name: The broker's class name, for descriptions.
        @param checkName: Raises if a table name can't be used.
        @param publish: Makes a table reachable (C{self.<name>}).
        @param refusal: A failed Deferred if work named by its argument is
            refused now (after shutdown, or a failed start-up), else
            C{None}.
        @param run: Runs a setup job in a worker thread.
        @param pooled: The broker's URL is a transaction-mode pooler (the
            migration lock must be a transaction's).
        """
        self._name = name
        self._checkName = checkName
        self._publish = publish
        self._refusal = refusal
        self._run = run
        self._pooled = pooled
        self._metadata = SA.MetaData()
        self.tables: dict[str, SA.Table] = {}
        self._pending: dict[str, Deferred[SA.Table]] = {}

    def learnTables(self, tables: dict[str, SA.Table]) -> None:
        """
        Under C{processes=N}: the tables a worker process's broker made,
        kept (and published) here too for building statements in the
        reactor thread. The first process to tell wins.
        """
        if self.tables:
            return
        for name, table in tables.items():
            self.tables[name] = table
            self._publish(name, table)

    def table(
        self, name: str, columns: tuple[Any, ...], kw: dict[str, Any]
    ) -> Deferred[SA.Table]:
        """
        See C{AccessBroker.table}.
        """
        if name in self.tables:
            return succeed(self.tables[name])
        if name in self._pending:
            # Once the call making it is done: its table, or another try.
            return follow(self._pending[name]).addCallback(
                lambda _: self.table(name, columns, kw)
            )
        refused = self._refusal(f"table({name!r})")
        if refused is not None:
            return refused
        self._checkName(name, self.tables)
        indexes, tableKw = tables.splitIndexKeywords(name, kw)
        table = tables.defineTable(self._metadata, name, columns, indexes, tableKw)
        create = functools.partial(tables.createTable, table=table)
        done = self._run(SetupJob(create, f"{self._name}.table({name!r})"))

        def created(_: None) -> SA.Table:
            del self._pending[name]
            self.tables[name] = table
            self._publish(name, table)
            return table

        def failed(failure: Failure) -> Failure:
            del self._pending[name]
            self._metadata.remove(table)
            return failure

        pending = self._pending[name] = done.addCallbacks(created, failed)
        return pending

    def migrate(
        self, scriptLocation: str | os.PathLike[str], revision: str
    ) -> Deferred[str]:
        """
        See C{AccessBroker.migrate}.
        """
        location = os.fspath(scriptLocation)
        refused = self._refusal("migrate()")
        if refused is not None:
            return refused
        try:
            migrations.requireAlembic()
        except ImportError:
            return fail()
        upgrade = functools.partial(
            migrations.upgrade,
            scriptLocation=location,
            revision=revision,
            pooled=self._pooled,
        )
        return self._run(SetupJob(upgrade, f"{self._name}.migrate({location!r})"))


__all__ = ["Schema", "SetupJob"]
