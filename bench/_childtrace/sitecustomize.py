"""
Put on C{PYTHONPATH} by L{bench.measure_machinery} for the worker processes
of a C{processes=N} broker: with C{BENCH_CHILD_BYTECODES} set (a directory),
a process counts the bytecodes each function executes, in every thread,
from its start, and writes them to C{bytecodes.<pid>.json} there as it
exits. (The parent runs the calls twice, C{n} and C{3n}, and takes the
difference, so start-up and shutdown drop out.)
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import sys
import threading
from typing import Any

_directory = os.environ.get("BENCH_CHILD_BYTECODES")
# Only the worker processes: not the measuring process itself, which counts
# its own calls (they inherit this PYTHONPATH too).
if _directory and "sasync.multicore._child" in " ".join(sys.orig_argv):
    _counts: collections.Counter[tuple[str, int, str]] = collections.Counter()

    def _trace(frame: Any, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            _counts[code.co_filename, code.co_firstlineno, code.co_name] += 1
        return _trace

    def _write(directory: str = _directory) -> None:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type,unused-ignore]
        path = os.path.join(directory, f"bytecodes.{os.getpid()}.json")
        with open(path, "w") as f:
            json.dump([[*key, n] for key, n in _counts.items()], f)

    atexit.register(_write)
    threading.settrace(_trace)
    sys.settrace(_trace)
