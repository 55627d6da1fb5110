"""
kill -9 of a process in the middle of ingesting: every batch it was told
was committed is there, complete, and no batch is there in part.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as SA
from sqlalchemy.pool import NullPool

from tests.reliability.helpers import FIGURES, Figures
from tests.reliability.ingest import BATCH

ROOT = Path(__file__).resolve().parents[2]


def test_kill9WhileIngesting(dbURL: str) -> None:
    """
    Run the ingesting process, kill -9 it once 20 batches were
    acknowledged (more are in flight), then look at the table.
    """
    acked: set[int] = set()
    started = time.monotonic()
    # The with block closes the child's pipes.
    with subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.ingest", dbURL],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith("ack "):
                    acked.add(int(line.split()[1]))
                    if len(acked) >= 20:
                        break
                if time.monotonic() - started > 60:
                    break
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
            # What it printed before it died counts as acknowledged too.
            for line in child.stdout:
                if line.startswith("ack "):
                    acked.add(int(line.split()[1]))
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL
        assert len(acked) >= 20, child.stderr.read() if child.stderr else ""
    engine = SA.create_engine(dbURL, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT batch FROM ledger").scalars().all()
    finally:
        engine.dispose()
    sizes = Counter(rows)
    partial = {b: n for b, n in sizes.items() if n != BATCH}
    missing = acked - set(sizes)
    kind = dbURL.split(":")[0].split("+")[0]
    FIGURES.append(
        Figures(
            f"kill -9 while ingesting ({kind})",
            operations=max(sizes, default=0) + 1,
            faults=1,
            acknowledged=len(acked),
            lost=len(missing),
            seconds=time.monotonic() - started,
            notes=[
                f"batches committed {len(sizes)} (acked {len(acked)},"
                f" committed unacked {len(set(sizes) - acked)}), partial"
                f" {len(partial)}"
            ],
        )
    )
    assert not partial, partial
    assert not missing, missing
