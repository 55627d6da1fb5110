"""
Pickling for other processes is immune to the global reducer that
C{twisted.persisted.styles} (imported by twisted.web) registers for bound
methods, which breaks on classmethods such as the one SQLAlchemy tables
hold once their dialect options have been looked at.
"""

from __future__ import annotations

import pickle

import sqlalchemy as SA
import twisted.persisted.styles  # noqa: F401  (registers the reducer)

from asynqueue._child import dumps


def makeSelect() -> SA.Select[tuple[str]]:
    t = SA.Table(
        "t",
        SA.MetaData(),
        SA.Column("id", SA.Integer),
        SA.Column("ip", SA.String(15)),
    )
    SA.Index("ix_t_ip", t.c.ip).dialect_options["postgresql"]
    t.dialect_options["postgresql"]
    return SA.select(t.c.ip).where(t.c.id <= 5)


def test_plainPickleBreaks() -> None:
    """
    The problem is real: plain pickle can't round-trip such a statement.
    """
    try:
        pickle.loads(pickle.dumps(makeSelect()))
    except AttributeError as e:
        assert "_kw_reg_for_dialect_cls" in str(e)
    else:  # pragma: no cover - Twisted or SQLAlchemy changed
        raise AssertionError("expected the styles reducer to break the round trip")


def test_dumpsRoundTrip() -> None:
    """
    L{dumps} round-trips it, and the statement still compiles the same.
    """
    s = makeSelect()
    copy = pickle.loads(dumps(s))
    assert str(copy) == str(s)
