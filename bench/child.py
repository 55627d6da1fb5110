"""
C{python -m bench.child VARIANT CONFIG.json OUT.json}: run one variant once,
in this fresh process, and write its result record (or its error) as JSON.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.measure import peakRssMb
from bench.variants import BY_NAME


def runVariant(name: str, config: BenchConfig) -> dict[str, Any]:
    """
    Import the variant's target and run it; add this process's peak RSS.
    """
    moduleName, functionName = BY_NAME[name].target.split(":")
    function = getattr(importlib.import_module(moduleName), functionName)
    result: dict[str, Any] = function(config)
    result.setdefault("peakRssMb", round(peakRssMb(), 1))  # None: not ours
    return result


def main(argv: list[str]) -> int:
    """
    The child's entry point; exit status 1 on any error.
    """
    name, configPath, outPath = argv
    config = BenchConfig.fromJson(Path(configPath).read_text())
    try:
        record = runVariant(name, config)
        status = 0
    except BaseException:
        record = {"error": traceback.format_exc()}
        status = 1
    Path(outPath).write_text(json.dumps(record))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
