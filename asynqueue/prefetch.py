"""
L{Prefetcherator}: deferred iteration over a source of Deferreds (an
iterator of them, or a callable returning one per call), fetching one item
ahead of the reader.

Reactor thread only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from .deferator import Batch, Deferator

T = TypeVar("T")

_END = object()
_UNKNOWN = object()


class Prefetcherator(Deferator[T]):
    """
    A L{Deferator} over values that arrive one at a time as Deferreds: from
    an iterator (of Deferreds or plain values), or from a callable called
    again for each value. Iterate it like any Deferator (C{for d in pf:
    x = yield d}, or C{async for x in pf}).

    It keeps one value in hand ahead of the reader, so that it knows
    truthfully whether another follows, and fetches the next while the
    reader works on the current one. Values are fetched one after another,
    never two at once, and in order.

    The source ends when the iterator is exhausted, or when the callable
    raises C{StopIteration} (or its Deferred fails with it). Any other
    exception is handed to the reader after the values before it, and ends
    the iteration.

    With C{for d in pf} and a source that answers later (not at once), the
    very first Deferred may fail with L{IterationStopped} if the source
    turns out to be empty; C{yield pf.fetchMore()} before the loop avoids
    that. C{async for} needs no such care.
    """

    # One value at a time, in order.
    _fetchDepth = 1

    def __init__(
        self,
        source: Iterator[Any] | Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        """
        @param source: An iterator of values or Deferreds (or coroutines),
            or a callable returning one of those per call.
        @param args: Arguments for each call of C{source}, if callable.
        @param kw: Keywords for each call of C{source}, if callable.
        @raise TypeError: C{source} is neither an iterator nor callable.
        """
        if isinstance(source, Iterator):
            if args or kw:
                raise TypeError("arguments go with a callable source, not an iterator")
            self._next: Callable[[], Any] = source.__next__
            self._close = getattr(source, "close", None)
        elif callable(source):
            self._next = lambda: source(*args, **kw)
            self._close = None
        else:
            raise TypeError(
                f"a Prefetcherator needs an iterator or a callable, not {source!r}"
            )
        self._ahead: Any = _UNKNOWN
        self._error: Failure | None = None
        super().__init__((), self._fetchOne, stop=self._closeSource)

    def _get(self) -> Deferred[Any]:
        """
        The next value of the source, or C{_END}.
        """
        try:
            value = self._next()
        except StopIteration:
            return succeed(_END)
        except Exception:
            return fail()
        if inspect.iscoroutine(value):
            value = Deferred.fromCoroutine(value)
        if isinstance(value, Deferred):
            return value.addErrback(_endOnStop)
        return succeed(value)

    def _fetchOne(self) -> Deferred[Batch[T]]:
        # The Deferator fetches one "batch" at a time: the value in hand, and
        # whether another follows (known by fetching it).
        if self._error is not None:
            error, self._error = self._error, None
            return fail(error)
        if self._ahead is _UNKNOWN:
            return self._get().addCallback(self._first)
        return self._advance(self._ahead)

    def _first(self, value: Any) -> Deferred[Batch[T]] | Batch[T]:
        if value is _END:
            return [], True
        return self._advance(value)

    def _advance(self, current: Any) -> Deferred[Batch[T]]:
        def got(following: Any) -> Batch[T]:
            self._ahead = following
            return [current], following is _END

        def failed(failure: Failure) -> Batch[T]:
            # Hand out the current value; the failure comes next.
            self._error = failure
            self._ahead = _END
            return [current], False

        return self._get().addCallbacks(got, failed)

    def _closeSource(self) -> None:
        if self._close is not None:
            self._close()


def _endOnStop(failure: Failure) -> object:
    if isinstance(failure.value, StopIteration):
        return _END
    return failure


__all__ = ["Prefetcherator"]
