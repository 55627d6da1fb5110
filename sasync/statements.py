"""
The C{s()} statement cache, and the C{selex} select placeholder.

C{s()} keeps statements made once and run many times, by name::

    if not self.s("s_url"):                       # selects the name "s_url"
        self.s([t.c.id], t.c.value == SA.bindparam("value"))   # caches it
    ID = self.s().execute(value=v).scalar()       # runs it, in this transaction

The cache is the broker's, shared by its worker threads (statements are
immutable); which name is selected is per thread, so concurrent transactions
on several connections don't disturb each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as SA
from sqlalchemy.engine import Result
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.dml import UpdateBase

from .connection import currentConnection, inTransaction

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class CachedStatement:
    """
    A statement from the cache, ready to run in the current transaction.
    """

    def __init__(self, name: str, statement: Executable) -> None:
        self.name = name
        self.statement = statement

    def __repr__(self) -> str:
        return f"<CachedStatement {self.name!r}: {self.statement}>"

    def execute(self, **params: Any) -> Result[Any]:
        """
        Run the statement with C{params} on the current transaction's
        connection (worker thread only).

        @raise NotInTransaction: called outside a transaction.
        """
        return currentConnection().execute(self.statement, params)


class StatementCache:
    """
    One broker's named statements.
    """

    def __init__(self) -> None:
        self._statements: dict[str, CachedStatement] = {}
        self._local = threading.local()

    def _name(self) -> str | None:
        return getattr(self._local, "name", None)

    def s(self, *args: Any) -> Any:
        """
        C{s(name)}: select C{name} (in this thread); return whether a
        statement is cached under it.

        C{s([cols], *where)}: cache C{select(*cols).where(*where)} under the
        selected name. C{s(statement)}: cache a ready statement.

        C{s()}: the L{CachedStatement} under the selected name.

        @raise LookupError: C{s()} with no name selected, or nothing cached
            under it; caching with no name selected.
        @raise TypeError: arguments of none of these forms.
        """
        if not args:
            name = self._name()
            if name is None:
                raise LookupError("s(): no statement name selected; call s(name) first")
            cached = self._statements.get(name)
            if cached is None:
                raise LookupError(
                    f"s(): nothing is cached under {name!r}; cache a statement with"
                    " s([columns], *where) or s(statement) first"
                )
            return cached
        first = args[0]
        if isinstance(first, str) and len(args) == 1:
            self._local.name = first
            return first in self._statements
        name = self._name()
        if name is None:
            raise LookupError(
                "s(...): select a statement name with s(name) before caching"
            )
        if isinstance(first, Executable) and len(args) == 1:
            statement: Executable = first
        elif isinstance(first, Sequence) and not isinstance(first, str):
            select = SA.select(*first)
            if len(args) > 1:
                select = select.where(*args[1:])
            statement = select
        else:
            raise TypeError(
                "s() takes a name, a list of columns and where-clauses, a"
                f" statement, or nothing; not {args!r}"
            )
        self._statements[name] = CachedStatement(name, statement)
        return None


class SelectHolder:
    """
    What C{broker.selex(...)} yields: a stand-in for a C{Select} (or
    another statement, such as a C{Delete}) whose generative methods
    (C{where}, C{order_by}, ...) change the statement it holds. Call it for
    the result: inside a transaction, the C{Result}; outside, a Deferred
    from a transaction (the call-time keywords given to C{selex} and to the
    call apply).
    """

    def __init__(
        self, execute: Callable[..., Deferred[Any]], select: Any, kw: dict[str, Any]
    ) -> None:
        """
        @param execute: Runs a statement as a transaction (the broker's
            C{execute}).
        """
        self._execute = execute
        self._select = select
        self._kw = kw

    @property
    def select(self) -> Any:
        """
        The select as it stands now.
        """
        return self._select

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._select, name)
        if not callable(value):
            return value

        def generative(*args: Any, **kw: Any) -> Any:
            result = value(*args, **kw)
            if isinstance(result, type(self._select)):
                self._select = result
                return self
            return result

        return generative

    def __call__(self, **kw: Any) -> Result[Any] | Deferred[Any]:
        if inTransaction():
            return currentConnection().execute(self._select)
        return self._execute(self._select, **{**self._kw, **kw})


def selectHolder(
    execute: Callable[..., Deferred[Any]], args: tuple[Any, ...], kw: dict[str, Any]
) -> Iterator[SelectHolder]:
    """
    The body of C{broker.selex(*args, **kw)}: C{args} are columns, or a
    ready statement (a select, insert, update or delete), or a callable
    making one and its arguments (C{selex(table.delete)}, as in the original
    sAsync); C{kw} call-time keywords for when it is called outside a
    transaction, by C{execute} (the broker's).

    @raise TypeError: the callable returned something else than a
        statement.
    """
    first = args[0] if args else None
    statement: Any
    if callable(first) and not isinstance(first, ClauseElement):
        statement = first(*args[1:])
        if not isinstance(statement, Executable):
            raise TypeError(
                f"selex({first!r}, ...): the callable returned {statement!r},"
                " not a statement such as table.delete() or select(...)"
            )
    elif len(args) == 1 and isinstance(first, SA.Select | UpdateBase):
        statement = first
    else:
        statement = SA.select(*args)
    yield SelectHolder(execute, statement, kw)


__all__ = ["CachedStatement", "SelectHolder", "StatementCache", "selectHolder"]
