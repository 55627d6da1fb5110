"""
The original AsynQueue's and sAsync's module paths, kept working: a module
that only stands for names now spelled elsewhere gets its C{__getattr__}
from L{movedNames}. Looking up a moved name warns (C{DeprecationWarning},
naming the new spelling) and returns the real object; looking up a name
that is gone raises L{Gone}, whose message says what to write instead. A
class whose original had methods that are gone gets its C{__getattr__}
from L{goneAttributes}, to the same end.

See C{docs/originals.md} for every old spelling and its replacement.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


class Gone(ImportError):
    """
    A name of the original AsynQueue or sAsync that did not come back; the
    message names its replacement.

    An C{ImportError}, so that C{from module import name} shows that
    message (Python would replace an C{AttributeError}'s by its own).
    """


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """
    Warn that the original's spelling C{old} is deprecated for C{new}.

    @param stacklevel: As for C{warnings.warn}; the default points at the
        caller of the function that calls this one.
    """
    warnings.warn(
        f"{old} is deprecated: use {new} (see docs/originals.md)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def resolve(dotted: str) -> object:
    """
    The object named by C{dotted}, C{"package.module.name"}.
    """
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def movedNames(
    module: str,
    moved: Mapping[str, str],
    gone: Mapping[str, str] | None = None,
) -> Callable[[str], object]:
    """
    A module's C{__getattr__} for the original's names.

    @param module: The module's dotted name, for the messages.
    @param moved: Old name -> the dotted name of its replacement (say
        C{"Deferator": "asynqueue.Deferator"}).
    @param gone: Old name -> what to do instead, a sentence.
    @return: The function to assign to the module's C{__getattr__}.
    """
    goneNames = dict(gone or {})

    def __getattr__(name: str) -> object:  # noqa: N807 (a module __getattr__)
        new = moved.get(name)
        if new is not None:
            deprecated(f"{module}.{name}", new)
            return resolve(new)
        why = goneNames.get(name)
        if why is not None:
            raise Gone(f"{module}.{name} is gone: {why}", name=name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def goneAttributes(owner: str, gone: Mapping[str, str]) -> Callable[[Any, str], Any]:
    """
    A class's C{__getattr__} for the original's methods that did not come
    back: looking one up raises L{Gone} naming what to do instead; any
    other missing attribute is the usual C{AttributeError}. (Called only
    for attributes the object lacks: the others cost nothing more.)

    @param owner: The class's name, for the messages.
    @param gone: Old method name -> what to do instead, a sentence.
    """
    goneNames = dict(gone)

    def __getattr__(self: Any, name: str) -> Any:  # noqa: N807 (a __getattr__)
        why = goneNames.get(name)
        if why is not None:
            raise Gone(f"{owner}.{name}() is gone: {why}", name=name)
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}",
            name=name,
            obj=self,
        )

    return __getattr__


__all__ = ["Gone", "deprecated", "goneAttributes", "movedNames", "resolve"]
