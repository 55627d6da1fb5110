"""
One version for sasync and asynqueue, and C{import sasync} refusing an
asynqueue that is not the one shipped with it (such as the original
AsynQueue from PyPI, which owns the same top-level package).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import asynqueue
import sasync

ROOT = Path(__file__).resolve().parents[2]


def test_oneVersion() -> None:
    """
    Both packages have the installed distribution's version.
    """
    assert sasync.__version__ == importlib.metadata.version("sAsync")
    assert asynqueue.__version__ == sasync.__version__


def _importWithFake(tmp_path: Path, init: str, code: str = "import sasync") -> str:
    # A fake asynqueue earlier on sys.path than the project's; returns
    # stderr of a Python that imports sasync, which must fail.
    fake = tmp_path / "fake" / "asynqueue"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(init)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode != 0, done.stdout
    assert "ImportError" in done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("init", "found"),
    [
        ('__version__ = "0.9.9"\n', "is version 0.9.9"),
        # The original AsynQueue 0.9.9 has no __version__.
        ("class VA:\n    pass\n", "has no __version__"),
        # One that fails to import, as when half of it was uninstalled.
        (
            "from .halfuninstalled import TaskQueue\n",
            "importing it failed (ModuleNotFoundError",
        ),
    ],
    ids=["otherVersion", "noVersion", "broken"],
)
def test_foreignAsynqueue(tmp_path: Path, init: str, found: str) -> None:
    """
    An asynqueue of another version, of none, or one that fails to import
    makes C{import sasync} fail at once with an ImportError that says
    where it is and what to uninstall.
    """
    stderr = _importWithFake(tmp_path, init)
    message = stderr.strip().splitlines()[-1]
    assert found in message
    assert "pip uninstall AsynQueue" in message
    assert f"sasync {sasync.__version__} needs" in message
    if "importing it failed" not in found:
        assert str(tmp_path / "fake" / "asynqueue") in message


def test_foreignAsynqueueFromSubmodule(tmp_path: Path) -> None:
    """
    Importing any part of sasync first checks asynqueue: the error is the
    same, never a puzzling one from deep inside.
    """
    stderr = _importWithFake(
        tmp_path, '__version__ = "0.9.9"\n', "import sasync.testing.servers"
    )
    assert "pip uninstall AsynQueue" in stderr.strip().splitlines()[-1]
