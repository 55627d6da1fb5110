"""
Callables for the process worker tests: importable by name, so that they
can be pickled and run in a worker process. Not tests themselves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any


class Unpicklable(Exception):
    """
    An exception that pickles but can't be rebuilt (its __init__ needs two
    arguments), so the parent gets a RemoteTaskError instead.
    """

    def __init__(self, a: Any, b: Any) -> None:
        super().__init__(f"{a}/{b}")


class CustomError(ValueError):
    """
    An exception type of our own, which the parent can rebuild.
    """


def pid() -> int:
    return os.getpid()


def add(x: int, y: int = 0) -> int:
    return x + y


def raiseCustom(message: str) -> None:
    raise CustomError(message)


def raiseUnpicklable() -> None:
    raise Unpicklable(1, 2)


def count(n: int, failAt: int | None = None) -> Iterator[int]:
    for i in range(n):
        if i == failAt:
            raise CustomError(f"failed at {i}")
        yield i


def sleepFor(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def returnUnpicklable() -> Any:
    return lambda: None


def printAndReturn(x: Any) -> Any:
    print("noise on stdout", x)
    return x


def exitProcess() -> None:
    raise SystemExit(3)


def hardExit() -> None:
    os._exit(7)
