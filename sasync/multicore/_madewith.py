"""
What a broker was made with: the arguments of the call that made it, so
that under C{processes=N} each worker process makes its own instance the
same way.

The outermost C{__init__} of the broker's class records them before any
C{__init__} body runs: the broker's own is decorated with L{recordsArgs},
and L{recordArgsOfSubclass} decorates each subclass's (called from the
broker's C{__init_subclass__}). (A C{__new__} would do it too, but it hides
the real signature from documentation tools and C{inspect}.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., None])

#: Where the arguments are kept on the instance.
MADE_WITH = "_madeWith"
_RECORDS = "_sasyncRecordsArgs"


def recordsArgs(init: F) -> F:
    """
    Decorate an C{__init__}: the first (outermost) one called for an
    instance records its arguments as C{instance._madeWith = (args, kw)}.
    """

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kw: Any) -> None:  # noqa: N807 (wraps __init__)
        if MADE_WITH not in self.__dict__:
            setattr(self, MADE_WITH, (args, dict(kw)))
        init(self, *args, **kw)

    setattr(__init__, _RECORDS, True)
    return cast(F, __init__)


def recordArgsOfSubclass(cls: type) -> None:
    """
    Decorate C{cls}'s own C{__init__} (if it has one) with L{recordsArgs}.
    """
    init = cls.__dict__.get("__init__")
    if callable(init) and not getattr(init, _RECORDS, False):
        setattr(cls, "__init__", recordsArgs(init))  # noqa: B010


__all__ = ["MADE_WITH", "recordArgsOfSubclass", "recordsArgs"]
