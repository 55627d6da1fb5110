"""
The bodies of the broker's conveniences (C{execute}, C{sql},
C{selectorator}, C{produceRows}): plain functions of values, so that
L{sasync.broker} keeps only their signatures and docstrings.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import sqlalchemy as SA
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from asynqueue import checkNumber

T = TypeVar("T")


@functools.lru_cache(maxsize=512)
def sqlText(sql: str) -> SA.TextClause:
    """
    C{sqlalchemy.text(sql)}, parsed once: the same SQL text gives the same
    (immutable) C{TextClause}.
    """
    return SA.text(sql)


def checkGroupSize(N: object) -> None:
    """
    @raise ValueError: C{N} (C{selectorator}'s rows per item) is not a
        positive int.
    """
    checkNumber(
        N, "selectorator()'s N", integer=True, positive=True, typeError=ValueError
    )


def fireFirst(result: T, d: Deferred[None]) -> T:
    """
    A callback: fire C{d} (if nobody did), then pass C{result} on.
    """
    if not d.called:
        d.callback(None)
    return result


def insertRows(
    connection: Connection,
    f: Callable[[Any], Any] | None,
    iterator: Iterable[Any],
    table: SA.Table,
    colName: str,
    constants: Mapping[str, Any],
) -> list[Any]:
    """
    Worker thread: insert a row into C{table} for each item, C{colName}
    set to C{f(item)} (the item if C{f} is C{None}) and the other columns
    to C{constants}.

    @return: The new rows' primary keys, in order.
    @raise TypeError: C{f} returned a Deferred or an awaitable.
    """
    keys = []
    for item in iterator:
        value = item if f is None else f(item)
        if isinstance(value, Deferred) or inspect.isawaitable(value):
            raise TypeError(
                f"produceRows: {f!r} returned {value!r} for {item!r}; f runs in"
                " a worker thread and must return the value: resolve the"
                " values first and pass f=None (see docs/originals.md)"
            )
        result = connection.execute(
            table.insert().values({colName: value, **constants})
        )
        primaryKey = result.inserted_primary_key
        keys.append(
            primaryKey[0]
            if primaryKey is not None and len(primaryKey) == 1
            else primaryKey
        )
    return keys


__all__ = ["checkGroupSize", "fireFirst", "insertRows", "sqlText"]
