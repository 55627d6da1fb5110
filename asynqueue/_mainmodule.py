"""
Functions defined in the script the user runs (C{__main__}) for worker
processes: the parent says where its main module comes from, and the child
runs it under the name C{__mp_main__} (so that its
C{if __name__ == "__main__":} block does not run), then answers to
C{__main__} too, so that C{__main__.f} unpickles there. This is what the
standard library's multiprocessing does when it spawns.

A script whose top level does more than define things (starts the reactor
outside the C{if __name__ == "__main__":} block, say) does it again in
every worker process that needs it; the documentation says so.
"""

from __future__ import annotations

import os
import runpy
import sys
import types

#: The name the child runs the parent's main module under.
MP_MAIN = "__mp_main__"

#: ("path", file) for a script, ("module", name) for C{python -m name}.
Location = tuple[str, str]


def mainLocation() -> Location | None:
    """
    Where this process's main module comes from, for a worker process to
    load it; C{None} if it can't: an interactive session, C{python -c}, or
    a package's C{__main__} (whose code is all "main only").
    """
    main = sys.modules.get("__main__")
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None:
        if name == "__main__" or name.endswith(".__main__"):
            return None
        return ("module", name)
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    return ("path", os.path.abspath(path))


def aliasMain() -> None:
    """
    Parent side: let C{__mp_main__} name this process's main module too,
    for what a worker process pickles from its copy of it (a class the
    script defines, say).
    """
    main = sys.modules.get("__main__")
    if main is not None:
        sys.modules.setdefault(MP_MAIN, main)


def loadMain(location: Location, argv: list[str]) -> None:
    """
    Child side: run the parent's main module as C{__mp_main__} and make it
    this process's C{__main__} too. Runs the module's top level, with the
    parent's C{sys.argv}.

    @raise Exception: whatever running it raised.
    """
    sys.argv = list(argv)
    kind, where = location
    if kind == "path":
        namespace = runpy.run_path(where, run_name=MP_MAIN)
    elif kind == "module":
        namespace = runpy.run_module(where, run_name=MP_MAIN, alter_sys=False)
    else:
        raise ValueError(f"unknown main module location {location!r}")
    module = types.ModuleType(MP_MAIN)
    module.__dict__.update(namespace)
    sys.modules["__main__"] = sys.modules[MP_MAIN] = module
