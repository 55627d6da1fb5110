"""
Names a package exports but imports only when a program first looks one up,
so that C{import package} stays cheap for the programs that never use them
(AsynQueue's process workers, sAsync's stores): C{from package import Name}
and C{package.Name} work as before, and C{dir(package)} lists them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from typing import Any


def lazyNames(
    namespace: dict[str, Any],
    homes: Mapping[str, str],
    fallback: Callable[[str], object] | None = None,
    submodules: Collection[str] = (),
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """
    A module's C{__getattr__} and C{__dir__} for names it imports lazily.

    The first lookup of such a name imports the module defining it and binds
    the name in C{namespace}, so that later lookups are plain attribute reads
    that never reach this C{__getattr__}.

    @param namespace: The module's C{globals()}.
    @param homes: Name -> the dotted name of the module defining it.
    @param fallback: The C{__getattr__} for other names (say, one from
        L{asynqueue.moved.movedNames}); without one, they raise
        C{AttributeError}.
    @param submodules: Names of the package's own modules that are
        imported on first lookup too (C{package.module} without an
        C{import package.module}, as when the package imported them).
    @return: C{(__getattr__, __dir__)}, to assign to the module's own.
    """
    module = namespace["__name__"]

    def __getattr__(name: str) -> object:  # noqa: N807 (a module __getattr__)
        if name in submodules:
            # (Importing a submodule binds it in the package's namespace.)
            return importlib.import_module(f"{module}.{name}")
        home = homes.get(name)
        if home is None:
            if fallback is not None:
                return fallback(name)
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 (a module __dir__)
        return sorted({*namespace, *homes, *submodules})

    return __getattr__, __dir__


__all__ = ["lazyNames"]
