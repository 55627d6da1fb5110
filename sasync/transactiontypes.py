"""
The static types of C{@transact} methods, for type checkers only.

A transaction method keeps its own signature, and a call may add any of the
call-time keywords (C{niceness=}, C{asList=}, ...). C{ParamSpec} cannot say
"these parameters plus some keywords", so a bound transaction has overloads:
the method's exact signature, giving C{Deferred[T]}; or that signature's
arguments with at least one call-time keyword, giving C{Deferred[Any]} (the
keywords change what is delivered: a list, the consumer, a Deferator).
A method returning a SQLAlchemy C{Result} delivers a L{Deferator} of rows.
"""

from __future__ import annotations

from typing import Any, ParamSpec, Protocol, TypeVar, overload

from twisted.internet.defer import Deferred

P = ParamSpec("P")
T = TypeVar("T")
B = TypeVar("B")


class BoundTransaction(Protocol[P, T]):
    """
    A C{@transact} method of a broker instance.
    """

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        niceness: int,
        doNext: bool = ...,
        doLast: bool = ...,
        consumer: Any = ...,
        asList: bool = ...,
        raw: bool = ...,
        timeout: float | None = ...,
        stream: bool | None = ...,
        readOnly: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        doNext: bool,
        niceness: int = ...,
        doLast: bool = ...,
        consumer: Any = ...,
        asList: bool = ...,
        raw: bool = ...,
        timeout: float | None = ...,
        stream: bool | None = ...,
        readOnly: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        doLast: bool,
        niceness: int = ...,
        doNext: bool = ...,
        consumer: Any = ...,
        asList: bool = ...,
        raw: bool = ...,
        timeout: float | None = ...,
        stream: bool | None = ...,
        readOnly: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        consumer: Any,
        niceness: int = ...,
        doNext: bool = ...,
        doLast: bool = ...,
        asList: bool = ...,
        raw: bool = ...,
        timeout: float | None = ...,
        stream: bool | None = ...,
        readOnly: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        asList: bool,
        niceness: int = ...,
        doNext: bool = ...,
        doLast: bool = ...,
        consumer: Any = ...,
        raw: bool = ...,
        timeout: float | None = ...,
        stream: bool | None = ...,
        readOnly: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        raw: bool,
        niceness: int = ...,
        doNext: bool = ...,
        doLast: bool = ...,
        consumer: Any = ...,
        asList: bool = ...,
        timeout: float | None = ...,
        stream: bool | None = ...,
        readOnly: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        timeout: float | None,
        niceness: int = ...,
        doNext: bool = ...,
        doLast: bool = ...,
        consumer: Any = ...,
        asList: bool = ...,
        raw: bool = ...,
        stream: bool | None = ...,
        readOnly: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        retries: int,
        niceness: int = ...,
        doNext: bool = ...,
        doLast: bool = ...,
        consumer: Any = ...,
        asList: bool = ...,
        raw: bool = ...,
        timeout: float | None = ...,
        stream: bool | None = ...,
        readOnly: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        stream: bool | None,
        niceness: int = ...,
        doNext: bool = ...,
        doLast: bool = ...,
        consumer: Any = ...,
        asList: bool = ...,
        raw: bool = ...,
        timeout: float | None = ...,
        readOnly: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        readOnly: bool | None,
        niceness: int = ...,
        doNext: bool = ...,
        doLast: bool = ...,
        consumer: Any = ...,
        asList: bool = ...,
        raw: bool = ...,
        timeout: float | None = ...,
        stream: bool | None = ...,
        after: str | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...

    @overload
    def __call__(
        self,
        *args: Any,
        after: str | None,
        niceness: int = ...,
        doNext: bool = ...,
        doLast: bool = ...,
        consumer: Any = ...,
        asList: bool = ...,
        raw: bool = ...,
        timeout: float | None = ...,
        stream: bool | None = ...,
        readOnly: bool | None = ...,
        **kwargs: Any,
    ) -> Deferred[Any]: ...


class Transaction(Protocol[B, P, T]):
    """
    A C{@transact} method, as found on the broker class.
    """

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Transaction[B, P, T]: ...

    @overload
    def __get__(self, instance: B, owner: type[Any]) -> BoundTransaction[P, T]: ...

    def __call__(
        self, instance: B, /, *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """
        Call through the class, passing the broker first.
        """
