"""
Callables for the wire tests: importable by name on the test's side and on
the servers it starts (which run with the repository on their path). Not
tests themselves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from asynqueue.task import currentTask
from asynqueue.wire import idempotent


class CustomError(ValueError):
    """
    An exception type the caller can rebuild.
    """


class Unrebuildable(Exception):
    """
    Pickles, but can't be rebuilt (its __init__ needs two arguments): the
    caller gets a RemoteTaskError instead.
    """

    def __init__(self, a: object, b: object) -> None:
        super().__init__(f"{a}/{b}")


def add(x: int, y: int = 0) -> int:
    return x + y


def pid() -> int:
    return os.getpid()


def pidAfter(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def raiseCustom(message: str) -> None:
    raise CustomError(message)


def raiseUnrebuildable() -> None:
    raise Unrebuildable(1, 2)


def big(n: int) -> bytes:
    return b"x" * n


def counted(n: int, path: str) -> Iterator[int]:
    """
    Yields 0..n-1, writing how many it has produced to C{path} each time.
    """
    for i in range(n):
        with open(path, "w") as f:
            f.write(str(i + 1))
        yield i


def produced(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def spin(path: str) -> None:
    """
    Runs until interrupted, then writes what interrupted it to C{path}.
    """
    try:
        # Inside the try: the interruption may come as soon as this exists.
        open(path + ".started", "w").close()
        while True:
            time.sleep(0.01)
    except BaseException as e:
        with open(path, "w") as f:
            f.write(type(e).__name__)
        raise


def politely(path: str) -> str:
    """
    Registers an interrupter of its own (it writes the stop's reason to
    C{path}), then runs until its task's stop is requested.
    """
    task = currentTask()
    assert task is not None

    def interrupted(reason: BaseException) -> None:
        with open(path, "w") as f:
            f.write(type(reason).__name__)

    task.onInterrupt(interrupted)
    open(path + ".started", "w").close()
    while not task.stopRequested:
        time.sleep(0.01)
    return "stopped"


def sleepThenAdd(path: str, seconds: float, x: int) -> int:
    open(path + ".started", "w").close()
    time.sleep(seconds)
    return x + 1


@idempotent
def onceSlow(path: str) -> str:
    """
    Idempotent: the first run (no marker yet) writes its process ID to
    C{path} and blocks for a long time; a run that finds the marker
    returns at once.
    """
    if os.path.exists(path):
        return f"again in {os.getpid()}"
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
    return "first"


def blockedInC(path: str, seconds: float) -> None:
    """
    Blocks in one C call (no Python instruction to interrupt for a while).
    """
    open(path + ".started", "w").close()
    time.sleep(seconds)


def raiseServerOnly() -> None:
    """
    Raises an exception whose type exists only in the server's process
    (in a module made there), so the caller can't import it.
    """
    import sys
    import types

    module = types.ModuleType("wire_server_only")
    exec("class OnlyHere(Exception):\n    pass\n", module.__dict__)
    sys.modules[module.__name__] = module
    raise module.OnlyHere("made on the server")


def meet(directory: str, me: str, other: str) -> int:
    """
    Writes C{me} in C{directory}, then waits (up to a minute) for
    C{other}: two calls meet only if they run at the same time.
    """
    open(os.path.join(directory, me), "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(directory, other)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{other} never came")
        time.sleep(0.01)
    return os.getpid()
