"""
C{scripts/test} runs the throwaway PostgreSQL cluster's commands from the
cluster's own folder: as root they run as the server's user, who can't
read a checkout under C{/root}, and initdb and pg_ctl printed C{could not
change directory to "/root/...": Permission denied} from anywhere else.
"""

from __future__ import annotations

import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "test"


def test_serverCommandsRunFromTheClusterFolder() -> None:
    """
    Every line that runs initdb or pg_ctl goes through C{asServer}, which
    changes to the cluster's folder first.
    """
    text = SCRIPT.read_text(encoding="utf-8")
    runs = [
        line.strip()
        for line in text.splitlines()
        if re.search(r'"\$PGBIN/(initdb|pg_ctl)"', line)
    ]
    assert len(runs) >= 3
    assert [line for line in runs if "asServer " not in line] == []
    body = re.search(r"asServer\(\) \{\n(.*?)\n\}", text, re.DOTALL)
    assert body is not None
    assert 'cd "$PGTMP"' in body.group(1)
