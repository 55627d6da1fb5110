"""A description of the machine and software a run measured, for the report."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from bench.config import BenchConfig
from bench.database import serverVersion

PACKAGES = [
    "sqlalchemy",
    "twisted",
    "psycopg2-binary",
    "asyncpg",
    "txpostgres",
    "greenlet",
]


def _cpuModel() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memoryGb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1048576, 1)
    except OSError:
        pass
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _gitCommit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else "(no commit)"


def describe(config: BenchConfig) -> dict[str, Any]:
    """
    nproc, CPU model, memory, OS, Python, PostgreSQL and package versions.
    """
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpuModel(),
        "memoryGb": _memoryGb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": serverVersion(config),
        "packages": {p: _version(p) for p in PACKAGES},
        "gitCommit": _gitCommit(),
    }
