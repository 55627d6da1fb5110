"""
Alembic migrations for
L{AccessBroker.migrate<sasync.broker.AccessBroker.migrate>}: the upgrade
runs in a worker thread on that worker's connection, which reaches the
script directory's C{env.py} as C{config.attributes["connection"]}, the
recipe Alembic documents for sharing a connection::

    from alembic import context

    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()

Brokers and processes migrating one database at once take turns: the first
to get the database's lock migrates, the others wait for it and then find
nothing left to do. The lock: on PostgreSQL a session advisory lock (behind
a transaction-mode pooler, C{pooled=True}, a transaction advisory lock held
by a transaction of its own on a second connection), on
MySQL/MariaDB C{GET_LOCK()} (named after the database), on SQLite the
write lock of the migration's own transaction (C{BEGIN IMMEDIATE}).

The whole upgrade runs in one transaction that sAsync opens (Alembic sees
it as the caller's and leaves it alone): on PostgreSQL and SQLite a failing
migration leaves nothing of the upgrade behind; MySQL/MariaDB commit each
DDL statement at once, so there the revisions before the failing one stay
applied. A failure is a L{MigrationFailed} naming the revision whose script
failed, with the original error as its C{__cause__}.

Needs the extra C{sAsync[migrations]} (Alembic); imported only when used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as SA
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from twisted.logger import Logger

from .errors import MigrationFailed

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

log = Logger()

#: The name of the migration lock (PostgreSQL: hashed to its bigint key).
LOCK_NAME = "sasync.migrate"

#: Alembic's C{context} and C{op} are module globals while an upgrade runs:
#: one upgrade at a time in a process. Taken before the database's lock
#: (always in that order, so two threads never wait for each other).
_inProcess = threading.Lock()

#: Seconds MySQL/MariaDB wait for the lock: a week (MariaDB takes no
#: "forever").
MYSQL_LOCK_WAIT = 7 * 24 * 3600
#: Seconds between tries of the lock behind a transaction-mode pooler.
POOLED_LOCK_POLL = 0.1


def requireAlembic() -> None:
    """
    Make sure Alembic can be imported.

    @raise ImportError: it can't, saying which extra to install.
    """
    try:
        import alembic  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "broker.migrate() needs Alembic: pip install 'sAsync[migrations]'"
        ) from e


def upgrade(
    connection: Connection, scriptLocation: str, revision: str, pooled: bool = False
) -> str:
    """
    Worker thread: upgrade the database to C{revision} with the Alembic
    script directory at C{scriptLocation}, holding the migration lock.

    @param pooled: Whether the connection goes through a transaction-mode
        pooler (the lock then lives in a transaction, see above).

    @return: The revision the database is at now (heads joined with
        C{","}; C{""} if none).
    @raise MigrationFailed: a migration (or C{env.py}) failed.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", scriptLocation)
    config.attributes["connection"] = connection
    script = ScriptDirectory.from_config(config)
    with _inProcess, migrationLock(connection, pooled):
        try:
            with connection.begin():
                if connection.dialect.name == "sqlite":
                    # The lock, and DDL inside the transaction.
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                command.upgrade(config, revision)
        except Exception as e:
            if isinstance(e, DBAPIError) and e.connection_invalidated:
                raise  # A lost connection: the start-up may run it again.
            if connection.in_transaction():
                connection.rollback()
            raise _failed(e, script, revision, _current(connection)) from e
    return _current(connection)


def _current(connection: Connection) -> str:
    from alembic.runtime.migration import MigrationContext

    with connection.begin():
        heads = MigrationContext.configure(connection).get_current_heads()
    return ",".join(sorted(heads))


@contextlib.contextmanager
def migrationLock(connection: Connection, pooled: bool = False) -> Iterator[None]:
    """
    Worker thread: hold the database's migration lock in the block (on
    SQLite nothing: there the migration's transaction must begin with
    C{BEGIN IMMEDIATE}). C{connection} must be outside any transaction.

    @param pooled: C{connection} goes through a transaction-mode pooler
        (PostgreSQL: a transaction lock on a second connection instead of
        a session lock).
    @raise MigrationFailed: MySQL/MariaDB did not give the lock.
    """
    # Session locks, taken and let go in transactions of their own, so
    # that the migration's transaction (and its snapshot) starts only once
    # the lock is held.
    name = connection.dialect.name
    if name == "postgresql":
        key = int.from_bytes(
            hashlib.sha1(LOCK_NAME.encode()).digest()[:8], "big", signed=True
        )
        if pooled:
            with _transactionLock(connection, key):
                yield
            return
        take = SA.text("SELECT pg_advisory_lock(:key)").bindparams(key=key)
        let = SA.text("SELECT pg_advisory_unlock(:key)").bindparams(key=key)
    elif name in ("mysql", "mariadb"):
        with connection.begin():
            database = connection.exec_driver_sql("SELECT DATABASE()").scalar()
        lockName = f"{LOCK_NAME}.{database}"
        if len(lockName) > 64:
            lockName = f"{LOCK_NAME}.{hashlib.sha1(lockName.encode()).hexdigest()}"
        take = SA.text("SELECT GET_LOCK(:name, :wait)").bindparams(
            name=lockName, wait=MYSQL_LOCK_WAIT
        )
        let = SA.text("SELECT RELEASE_LOCK(:name)").bindparams(name=lockName)
    else:
        yield  # SQLite: the transaction's BEGIN IMMEDIATE is the lock.
        return
    with connection.begin():
        got = connection.execute(take).scalar()
    if name != "postgresql" and got != 1:
        raise MigrationFailed(
            f"could not take the migration lock {lockName!r} (GET_LOCK gave {got!r})",
            None,
            "",
        )
    try:
        yield
    finally:
        try:
            if connection.in_transaction():
                connection.rollback()
            with connection.begin():
                connection.execute(let)
        except DBAPIError:
            # A lost connection let go of its lock with it.
            log.failure("Could not release the migration lock")


@contextlib.contextmanager
def _transactionLock(connection: Connection, key: int) -> Iterator[None]:
    # Behind a transaction-mode pooler a session lock would stay on
    # whichever server connection the pooler lent: a transaction lock, in a
    # transaction on a connection of its own (so that the migration's
    # snapshot starts once the lock is held) that lasts as long as the
    # migration. Tried, not waited for: a waiting migrator would hold one
    # of the pooler's few server connections, maybe the one the lock
    # holder's migration needs.
    tryLock = SA.text("SELECT pg_try_advisory_xact_lock(:key)").bindparams(key=key)
    with connection.engine.connect() as holder:
        while True:
            holder.begin()
            if holder.execute(tryLock).scalar():
                break
            holder.rollback()
            time.sleep(POOLED_LOCK_POLL)
        try:
            yield
        finally:
            holder.rollback()


def _failed(
    error: BaseException, script: ScriptDirectory, target: str, current: str
) -> MigrationFailed:
    revision, doc = _failingRevision(error, script)
    where = f"migration {revision}" + (f" ({doc})" if doc else "")
    if revision is None:
        where = f"migrating to {target!r}"
    first = (str(error).strip().splitlines() or [""])[0]
    return MigrationFailed(
        f"{where} failed: {type(error).__name__}: {first}. The database is at"
        f" revision {current or '(none)'}",
        revision,
        current,
    )


def _failingRevision(
    error: BaseException, script: ScriptDirectory
) -> tuple[str | None, str]:
    # The revision whose script file is the innermost in the traceback.
    files: dict[str, Any] = {}
    for each in script.walk_revisions():
        if each.path:
            files[os.path.realpath(each.path)] = each
    found: Any = None
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        for frame in traceback.extract_tb(cause.__traceback__):
            rev = files.get(os.path.realpath(frame.filename))
            if rev is not None:
                found = rev
        cause = cause.__cause__ or cause.__context__
    if found is None:
        return None, ""
    return str(found.revision), str(found.doc or "")


__all__ = ["LOCK_NAME", "migrationLock", "requireAlembic", "upgrade"]
