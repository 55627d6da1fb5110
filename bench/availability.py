"""
Whether our own packages import yet: they are being written alongside the
benchmarks, so their variants are skipped (with the reason) until they do.
"""

from __future__ import annotations

import subprocess
import sys

# What each kind of variant imports: exactly the public names DESIGN.md lists.
PROBES = {
    "asynqueue": "from asynqueue import ThreadQueue, TaskQueue",
    "sasync": "from sasync import AccessBroker, transact; "
    "from asynqueue import ThreadQueue, TaskQueue",
}


def probe(package: str) -> str | None:
    """
    None if C{package}'s public API imports (in a fresh interpreter, so a
    half-written package cannot disturb the runner), else the error line.
    """
    done = subprocess.run(
        [sys.executable, "-c", PROBES[package]],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"
