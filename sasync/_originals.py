"""
The original sAsync's broker spellings, deprecated, for code written for
it (see C{docs/originals.md}): the constructor keywords C{verbose} and
C{spew}, C{broker.q.engine} and C{broker.singleton}. Each warns with a
C{DeprecationWarning} naming what to write instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from asynqueue.moved import Gone, deprecated

#: sAsync's own folder: warnings point at the first frame outside it.
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _callerLevel() -> int:
    # The stacklevel of the user's code making the broker: deprecated() is
    # 1, its caller here 2, ...; the broker's __init__ may be wrapped any
    # number of times (sasync.multicore._madewith, subclasses' own).
    frame = sys._getframe(2)
    level = 3
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_HERE):
        frame = frame.f_back
        level += 1
    return level


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"AccessBroker({name}={value!r}): {name} must be a bool")
    return value


def takeOptions(engineKw: dict[str, Any]) -> None:
    """
    Take the original's C{verbose} and C{spew} out of a broker's keywords
    (SQLAlchemy would refuse them), warning for each.

    C{verbose} does nothing more now: every failure names its call. C{spew}
    (the original logged every call) becomes SQLAlchemy's C{echo=True},
    which logs every statement, unless C{echo} is given too.

    @raise TypeError: one of them is not a bool.
    """
    if "verbose" in engineKw:
        _flag("verbose", engineKw.pop("verbose"))
        deprecated(
            "AccessBroker(verbose=...)",
            "nothing: failures always name the call they come from",
            _callerLevel(),
        )
    if "spew" in engineKw:
        if _flag("spew", engineKw.pop("spew")):
            engineKw.setdefault("echo", True)
        deprecated(
            "AccessBroker(spew=...)",
            "echo=True, which logs every statement through SQLAlchemy's logger",
            _callerLevel(),
        )


class OriginalQueue:
    """
    What the deprecated C{broker.q} gives: the original broker's queue kept
    its engine as C{q.engine}; that is all that is left of it.
    """

    def __init__(self, engine: Callable[[], Any]) -> None:
        """
        @param engine: Gives the broker's engine (see C{AccessBroker.engine}).
        """
        self._engine = engine

    @property
    def engine(self) -> Any:
        """
        The broker's SQLAlchemy C{Engine}.
        """
        return self._engine()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise Gone(
            f"broker.q.{name} is gone: the broker has no queue of its own; run"
            " work in its threads with broker.deferToQueue(f, ...) or a"
            " transaction (@transact)",
            name=name,
        )


def queue(engine: Callable[[], Any]) -> OriginalQueue:
    """
    The deprecated C{broker.q}, warning.
    """
    deprecated("broker.q.engine", "broker.engine", _callerLevel())
    return OriginalQueue(engine)


def singleton(isSQLite: bool) -> bool:
    """
    The deprecated C{broker.singleton}, warning: whether the database is
    SQLite (the original's meaning: one connection only).
    """
    deprecated(
        "broker.singleton", 'broker.engine.dialect.name == "sqlite"', _callerLevel()
    )
    return isSQLite


__all__ = ["OriginalQueue", "queue", "singleton", "takeOptions"]
