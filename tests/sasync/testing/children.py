"""
Running a test runner in a child Python, in a folder of its own, on the
sasync of this source tree: how the tests of L{sasync.testing} see it as
a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def runChild(
    folder: Path, *args: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """
    Run C{python ARGS} in C{folder} with this tree's packages importable.

    @param env: Variables to set, or to remove (C{None}), on top of ours.
    @return: The finished process (output as text, stderr into stdout).
    """
    childEnv = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            childEnv.pop(name, None)
        else:
            childEnv[name] = value
    childEnv["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return subprocess.run(
        [sys.executable, *args],
        cwd=folder,
        env=childEnv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
