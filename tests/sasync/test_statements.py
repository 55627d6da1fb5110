"""
The statement cache of C{self.s()}, deterministic.
"""

from __future__ import annotations

import pytest
import sqlalchemy as SA

from sasync.errors import NotInTransaction
from sasync.statements import StatementCache


def test_statementCache() -> None:
    """
    s(name) selects and reports; s([cols], where) and s(statement) cache;
    s() returns; misuse is a clear error.
    """
    t = SA.table("t", SA.column("id"), SA.column("v"))
    cache = StatementCache()
    with pytest.raises(LookupError, match="no statement name"):
        cache.s()
    assert cache.s("a") is False
    with pytest.raises(LookupError, match="nothing is cached"):
        cache.s()
    cache.s([t.c.id], t.c.v == SA.bindparam("v"))
    assert cache.s("a") is True
    assert "WHERE t.v = :v" in str(cache.s().statement)
    cache.s("b")
    ready = SA.select(t.c.v)
    cache.s(ready)
    assert cache.s().statement is ready
    with pytest.raises(TypeError):
        cache.s(42)
    with pytest.raises(NotInTransaction):
        cache.s().execute()
