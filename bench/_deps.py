"""
C{python -m bench._deps}: print the requirements C{pip install -e .[bench]}
would install, read from setup.py without running it. The runner falls
back to these when the editable install itself fails (say, a file setup.py
reads is missing mid-development); the repo root is on sys.path anyway.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def requirements(setupPy: Path, extra: str = "bench") -> list[str]:
    """
    C{install_requires} plus C{extras_require[extra]} from C{setupPy}'s
    C{setup(...)} call (literal values only).
    """
    tree = ast.parse(setupPy.read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for kw in node.keywords:
                value = _literal(kw.value)
                if kw.arg == "install_requires" and isinstance(value, list):
                    found.extend(value)
                elif kw.arg == "extras_require" and isinstance(value, dict):
                    found.extend(value.get(extra, []))
    return found


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    print("\n".join(requirements(root / "setup.py", *sys.argv[1:2])))
