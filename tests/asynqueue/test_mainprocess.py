"""
L{ProcessQueue} with functions the script being run defines (issue 20):
a real script, run as a program, hands its own functions, a class of
its own and an iteration to worker processes, which run the script as
C{__mp_main__} first (its guarded block only in the parent). Where there is
no script (an interactive session, C{python -c}), such a call is refused
at C{call()} time, saying to move the function to a module.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from asynqueue import ProcessQueue
from asynqueue.process import pickleCall

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os
import sys

from twisted.internet import defer, task

from asynqueue import ProcessQueue

# Top level: runs in the parent and once in each worker process that needs it.
with open(sys.argv[1], "a") as marker:
    marker.write(f"{os.getpid()}\\n")


class Point:
    def __init__(self, x):
        self.x = x
        self.pid = os.getpid()


def square(x):
    return x * x


def makePoint(x):
    return Point(x)


def xOf(point):
    return point.x + 1


def countdown(n):
    yield from range(n, 0, -1)


def broken():
    raise KeyError("from main")


async def run(reactor):
    q = ProcessQueue(1)
    found = [await q.call(square, 7)]
    point = await q.call(makePoint, 3)
    found += [type(point).__name__, point.x, point.pid != os.getpid()]
    found.append(await q.call(xOf, Point(41)))
    dr = await q.call(countdown, 3)
    found.append([item async for item in dr])
    try:
        await q.call(broken)
    except KeyError as e:
        found.append(str(e))
    await q.shutdown()
    print(found)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
"""


def test_mainScript(tmp_path: Path) -> None:
    """
    The script's functions run in the worker process; a class the script
    defines goes both ways; iterations and exceptions come back. The
    script's top level ran twice (parent and one worker), its guarded
    block once.
    """
    script = tmp_path / "analyzer.py"
    script.write_text(textwrap.dedent(SCRIPT))
    marker = tmp_path / "marker"
    out = subprocess.run(
        [sys.executable, str(script), str(marker)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.strip() == "[49, 'Point', 3, True, 42, [3, 2, 1], \"'from main'\"]"
    )
    assert len(marker.read_text().split()) == 2


def test_noScriptRefusedAtCall() -> None:
    """
    With no script (C{python -c}), a function of C{__main__} is refused at
    C{call()} time, saying to move it to a module; nothing is queued.
    """
    code = textwrap.dedent(
        """
        from twisted.internet.task import Clock
        from asynqueue import ProcessQueue

        def analyze():
            return 1

        q = ProcessQueue(1, clock=Clock())
        try:
            q.call(analyze)
        except TypeError as e:
            print(e, q.pending())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "analyze is defined in __main__" in out.stdout
    assert "python -c" in out.stdout
    assert "move it to a module" in out.stdout
    assert out.stdout.strip().endswith(" 0")


def test_noScriptUnit(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The same refusal, in-process: a C{__main__} module without a file.
    """
    main = types.ModuleType("__main__")

    def analyze() -> None:
        pass

    analyze.__module__ = "__main__"
    analyze.__qualname__ = "analyze"
    main.analyze = analyze  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "__main__", main)
    with pytest.raises(TypeError, match="move it to a module"):
        pickleCall(analyze, (), {})
    q = ProcessQueue(1, clock=Clock())
    with pytest.raises(TypeError, match="interactive session"):
        q.call(analyze)
    assert q.pending() == 0
