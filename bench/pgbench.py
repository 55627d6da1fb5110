"""
Workload 2's ceiling: pgbench running the same statements from C, with as
many clients (and threads) as the other variants have connections.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any

from bench.config import BenchConfig
from bench.statements import pgbenchScript

_TPS = re.compile(r"tps = ([\d.]+) \(without initial connection time\)")


def findPgbench() -> str | None:
    """
    pgbench on PATH, or in the server's bin directory (Debian keeps it there).
    """
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    return candidates[-1] if candidates else None


def sqlPgbench(config: BenchConfig) -> dict[str, Any]:
    """
    Run the pgbench script for about C{config.ops} transactions; ops/s is
    pgbench's own tps (connection time excluded, as for the others' warm-up).
    """
    binary = findPgbench()
    if binary is None:
        raise RuntimeError("pgbench not found (PATH, /usr/lib/postgresql/*/bin)")
    clients = config.concurrency
    perClient = max(1, config.ops // clients)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(pgbenchScript())
        script = f.name
    try:
        # -M prepared: pgbench's fastest protocol, like asyncpg's statement cache.
        command = [
            binary,
            "-n",
            "-M",
            "prepared",
            "-f",
            script,
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-t",
            str(perClient),
            "-h",
            config.host,
            "-p",
            str(config.port),
            "-U",
            config.user,
            config.database,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        os.unlink(script)
    match = _TPS.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr[-2000:]}")
    tps = float(match.group(1))
    count = clients * perClient
    return {
        "unit": "ops",
        "count": count,
        "seconds": count / tps,
        "rate": tps,
        "peakRssMb": None,  # pgbench's memory is not this process's
        "command": " ".join(command).replace(script, "SCRIPT"),
    }
