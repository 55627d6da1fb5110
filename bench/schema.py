"""The article's two ORM models, plus the wide table the streaming runs read."""

from __future__ import annotations

import datetime

import sqlalchemy as SA
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base holding the benchmark's metadata."""


class A(Base):
    """The article's parent row: gets 2, 1 or 2 L{B} children per write."""

    __tablename__ = "a"
    id: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[str | None] = mapped_column(SA.String)
    create_date: Mapped[datetime.datetime | None] = mapped_column(
        SA.DateTime, server_default=SA.func.now()
    )
    bs: Mapped[list[B]] = relationship("B")


class B(Base):
    """The article's child row."""

    __tablename__ = "b"
    id: Mapped[int] = mapped_column(primary_key=True)
    a_id: Mapped[int | None] = mapped_column(SA.ForeignKey("a.id"))
    data: Mapped[str | None] = mapped_column(SA.String)


# Streamed by workload 3: four columns of mixed types, about 80 bytes a row.
stream = SA.Table(
    "stream",
    Base.metadata,
    SA.Column("id", SA.Integer, primary_key=True),
    SA.Column("k", SA.Integer),
    SA.Column("txt", SA.String(32)),
    SA.Column("val", SA.Float),
)
