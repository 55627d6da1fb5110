"""
What may travel to a L{WireServer<asynqueue.wire.WireServer>}: a call of
a callable importable by name there (L{wireCall}), marked L{idempotent}
when it may run twice; and where a worker connects (L{checkDescription}).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from ..info import callableName
from ..process import pickleCall

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute L{idempotent} sets on a callable.
IDEMPOTENT = "wireIdempotent"


def idempotent(f: F) -> F:
    """
    Mark C{f} as safe to run twice: if its server is lost while it runs,
    a L{WireWorker} sends it again once it has reconnected, instead of
    failing it with L{ServerLost<asynqueue.wire.ServerLost>}. Use as a
    decorator on a function at the top level of a module.

    @raise TypeError: C{f} takes no attributes (a builtin).
    """
    try:
        setattr(f, IDEMPOTENT, True)
    except (AttributeError, TypeError) as e:
        raise TypeError(
            f"{callableName(f)} can't be marked idempotent (it takes no"
            " attributes): wrap it in a function of your own"
        ) from e
    return f


def checkDescription(description: object) -> None:
    """
    @raise TypeError: C{description} is not a string.
    @raise ValueError: it is no client endpoint description (the message
        says why).
    """
    from twisted.internet.endpoints import clientFromString

    if not isinstance(description, str):
        raise TypeError(
            "a WireWorker's description must be a client endpoint"
            " description string such as 'tcp:127.0.0.1:8790', not"
            f" {description!r}"
        )
    try:
        # Parsed only (with no reactor): nothing connects.
        clientFromString(object(), description)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(
            f"{description!r} is not a client endpoint description such as"
            f" 'tcp:127.0.0.1:8790' ({e})"
        ) from e


def wireCall(f: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]) -> bytes:
    """
    The call C{f(*args, **kw)}, pickled for a server.

    @raise TypeError: C{f} is not importable by its module and qualified
        name (a lambda, a closure, a bound method, a callable object, or
        anything in C{__main__}), or it or its arguments can't be pickled.
    """
    name = callableName(f)
    module = getattr(f, "__module__", None)
    qualname = getattr(f, "__qualname__", None)
    found: Any = None
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        try:
            found = importlib.import_module(module)
            for part in qualname.split("."):
                found = getattr(found, part)
        except Exception:
            found = None
    if found is not f or module == "__main__":
        where = " (it is in __main__, which the server can't import)" * (
            module == "__main__"
        )
        raise TypeError(
            f"{name} can't run on a remote worker{where}: a task must be"
            " importable by name on the server, as a function (or class) at"
            " the top level of a module, not a lambda, closure, bound method"
            " or callable object: move it to a module the server can import"
        )
    return pickleCall(f, args, kw)
