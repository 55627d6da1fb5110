"""
The examples of C{docs/testing.md} are the files in C{docs/examples}, and
they pass, with pytest and with trial, on each kind of database.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from sasync.testing.databases import KIND_NAMES
from tests.sasync.testing.children import ROOT, runChild

EXAMPLES = ROOT / "docs" / "examples"


def _copyExamples(folder: Path) -> None:
    for path in EXAMPLES.glob("*.py"):
        shutil.copy(path, folder / path.name)


def test_docsShowTheExamples() -> None:
    """
    C{docs/testing.md} shows every example file, as it is.
    """
    doc = (ROOT / "docs" / "testing.md").read_text()
    shown = dict(
        re.findall(r"`docs/examples/([\w.]+)`:\n\n```python\n(.*?)```", doc, re.S)
    )
    files = {path.name: path.read_text() for path in EXAMPLES.glob("*.py")}
    assert sorted(files) == ["notes.py", "test_notes_pytest.py", "test_notes_trial.py"]
    assert shown == files


#: How to run each example, and what it prints when it passes.
_RUNS = {
    "pytest": (
        ("-m", "pytest", "-p", "sasync.testing", "-p", "no:cacheprovider"),
        ("-q", "test_notes_pytest.py"),
        r"3 passed",
    ),
    "trial": (
        ("-m", "twisted.trial"),
        ("test_notes_trial",),
        r"PASSED \(successes=3\)",
    ),
}


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("runner", sorted(_RUNS))
def test_example(
    runner: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """
    The pytest example passes with C{-p sasync.testing}, and the trial one
    under trial, on the database C{SASYNC_TEST_DATABASE} names.
    """
    request.getfixturevalue(f"{kind}URL")  # skipped, or failed, without one
    _copyExamples(tmp_path)
    command, names, passed = _RUNS[runner]
    done = runChild(tmp_path, *command, *names, env={"SASYNC_TEST_DATABASE": kind})
    assert done.returncode == 0, done.stdout
    assert re.search(passed, done.stdout), done.stdout
    if runner == "pytest":
        assert re.search(rf"test databases made: .*\b{kind} 3\b", done.stdout)
