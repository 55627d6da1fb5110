"""
The README's example is a complete program: extracted and run as it is
(SQLite, in a folder of its own), it writes, reads and iterates, and exits.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readmeExample() -> str:
    """
    The first Python block after the README's "An example" heading.
    """
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text.split("\n## An example\n", 1)[1]
    found = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert found is not None, "no Python block after '## An example'"
    return found.group(1)


def test_readmeExampleRuns(tmp_path: Path) -> None:
    """
    Run twice, the example adds an entry each time and prints it, then
    shuts its broker down and ends with status 0.
    """
    (tmp_path / "example.py").write_text(readmeExample(), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "example.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    assert outputs[0] == [
        "added entry 1; 1 entries since 2024-03-05 12:00:00",
        "1 2024-03-05 12:00:00 10.0.0.1",
    ]
    assert outputs[1][0] == "added entry 2; 2 entries since 2024-03-05 12:00:00"
    assert len(outputs[1]) == 3
    assert (tmp_path / "log.db").exists()
