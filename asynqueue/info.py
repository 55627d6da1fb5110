"""
Readable descriptions of calls, for error messages and logs.
"""

from __future__ import annotations

import functools
import reprlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .moved import deprecated, movedNames

F = TypeVar("F", bound=Callable[..., Any])

log = Logger()

_shortRepr = reprlib.Repr()
_shortRepr.maxstring = 40
_shortRepr.maxother = 40
_shortRepr.maxlist = 4
_shortRepr.maxdict = 4


def callableName(f: Callable[..., Any]) -> str:
    """
    The dotted name of a callable, as a person would write it: bound methods
    as C{Class.method}, functions as C{module.function}.
    """
    self = getattr(f, "__self__", None)
    name = getattr(f, "__qualname__", None) or getattr(f, "__name__", None)
    if name is None:
        return repr(f)
    if self is not None and not isinstance(self, type) and "." not in name:
        return f"{type(self).__name__}.{name}"
    module = getattr(f, "__module__", None)
    if module and module not in ("builtins", "__main__") and self is None:
        return f"{module}.{name}"
    return str(name)


class Info:
    """
    A description of one call: C{f(*args, **kw)}, shortened so that it fits
    on a line. C{str(info)} gives something like C{"Broker.load('x', n=3)"}.
    """

    def __init__(
        self,
        f: Callable[..., Any],
        args: Sequence[Any] = (),
        kw: Mapping[str, Any] | None = None,
    ) -> None:
        self.f = f
        self.args = tuple(args)
        self.kw = dict(kw or {})

    @property
    def name(self) -> str:
        """
        The callable's readable name, without its arguments.
        """
        return callableName(self.f)

    def __str__(self) -> str:
        parts = [_shortRepr.repr(a) for a in self.args]
        parts.extend(f"{k}={_shortRepr.repr(v)}" for k, v in self.kw.items())
        return f"{self.name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return f"<Info {self}>"


def showResult(f: F) -> F:
    """
    Deprecated (the original's debugging decorator): log each call of C{f}
    and its result, at level info in the C{asynqueue.info} namespace,
    through C{twisted.logger}; a Deferred's result is logged when it fires
    (and passed on unchanged). The original printed to stdout. Write a
    C{Logger} call of your own instead, or use C{Info(f, args, kw)} to
    describe the call.
    """
    deprecated("asynqueue.info.showResult", "twisted.logger and asynqueue.Info")

    @functools.wraps(f)
    def shown(*args: Any, **kw: Any) -> Any:
        call = str(Info(f, args, kw))
        result = f(*args, **kw)
        if isinstance(result, Deferred):
            return result.addBoth(_logResult, call)
        return _logResult(result, call)

    return cast(F, shown)


def _logResult(result: object, call: str) -> object:
    log.info("{call} -> {result!r}", call=call, result=result)
    return result


__getattr__ = movedNames(
    __name__,
    {},
    {"whichThread": "log threading.current_thread().name yourself"},
)
