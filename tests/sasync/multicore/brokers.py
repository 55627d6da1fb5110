"""
Brokers for the multicore tests, in a module of their own: a worker process
makes its own instance of the class by importing it by name.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as SA
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from twisted.internet import defer

from sasync import transact
from tests.sasync.brokers import LogBroker


class Base(DeclarativeBase):
    """The declarative base of the ORM class below."""


class Note(Base):
    """An ORM class, for results that are detached ORM objects."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(SA.String(100))


class SimulatedConflict(Exception):
    """A driver error that says "serialization failure" (SQLSTATE 40001)."""

    pgcode = "40001"


class Unpicklable:
    """Something that can't be pickled (it holds a lock)."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()


class MultiBroker(LogBroker):
    """
    The seed's broker plus what the multicore tests need.
    """

    def __init__(self, url: str, label: str = "", **kw: Any) -> None:
        # A constructor argument of its own: the worker processes get it too.
        self.label = label
        super().__init__(url, **kw)

    @defer.inlineCallbacks
    def startup(self):  # type: ignore[no-untyped-def]
        yield LogBroker.startup(self)
        # The ORM class's table, made the race-free way (two worker
        # processes start at once).
        yield self.table(
            "notes",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("text", SA.String(100), nullable=False),
        )

    @transact
    def pid(self) -> int:
        """The worker process's ID."""
        return os.getpid()

    @transact
    def whoAmI(self) -> tuple[str, int]:
        """The label this broker was made with, and its process ID."""
        return self.label, os.getpid()

    @transact
    def sleep(self, seconds: float) -> Any:
        """Sleep in the database (cancellable at the driver)."""
        if self.conn.dialect.name == "postgresql":
            sql = "SELECT pg_sleep(:s)"
        else:
            sql = "SELECT SLEEP(:s)"
        return self.conn.execute(SA.text(sql), {"s": seconds}).scalar()

    @transact
    def sleepThenPid(self, seconds: float) -> int:
        """Sleep in the database, then say which process this is."""
        self.sleep(seconds)
        return os.getpid()

    @transact
    def addNotes(self, texts: list[str]) -> list[int]:
        """Insert notes through the ORM; their IDs."""
        notes = [Note(text=t) for t in texts]
        self.session.add_all(notes)
        self.session.flush()
        return [n.id for n in notes]

    @transact
    def allNotes(self) -> list[Note]:
        """Every note, as ORM objects."""
        return list(self.session.scalars(SA.select(Note).order_by(Note.id)))

    @transact
    def insertValue(self, value: str) -> Any:
        """A result without rows (an INSERT's)."""
        return self.conn.execute(self.url.insert().values(value=value))

    @transact
    def numbers(self, n: int) -> Any:
        """A row-returning result of C{n} rows."""
        if self.conn.dialect.name == "postgresql":
            sql = "SELECT generate_series(1, :n) AS x"
        else:
            sql = "SELECT seq AS x FROM seq_1_to_1000000 WHERE seq <= :n"
        return self.conn.execute(SA.text(sql), {"n": n})

    @transact
    def echo(self, value: Any) -> Any:
        """C{value} itself (to see what crosses over)."""
        return value

    @transact
    def unpicklable(self) -> Unpicklable:
        """A result that can't be pickled."""
        return Unpicklable()

    #: How many times flaky() ran in this process.
    runs = 0

    @transact
    def flaky(self, failures: int) -> int:
        """Fail with a (simulated) serialization failure C{failures} times."""
        self.runs += 1
        if self.runs <= failures:
            raise OperationalError("UPDATE ...", {}, SimulatedConflict("simulated"))
        return self.runs

    @transact
    def runCount(self) -> int:
        """How many times flaky() ran here."""
        return self.runs

    @transact
    def fail(self, message: str) -> None:
        """Raise a ValueError."""
        raise ValueError(message)


def helperPid() -> int:
    """For deferToQueue: the process it runs in."""
    return os.getpid()


class FirstBroker(MultiBroker):
    """
    A broker with a C{first()}: it must run once, however many processes.
    """

    def first(self) -> None:
        """Insert one row, naming the process it ran in."""
        self.setNameValue("url", f"first-{os.getpid()}")


class FailingBroker(MultiBroker):
    """
    A broker whose startup() fails (in each worker process).
    """

    def startup(self) -> None:
        """Fail."""
        raise RuntimeError("no database for you")
