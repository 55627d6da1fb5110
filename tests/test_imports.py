"""
C{import sasync} loads what a broker in one process needs and no more: the
stores, the process pool (and asynqueue's process workers), the ORM and
OpenTelemetry load when a program first uses them. Their public names are
importable as before, and are the real objects.

Each check runs in a fresh Python, whose C{sys.modules} no other test has
filled.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import asynqueue
import sasync
import sasync.multicore

ROOT = Path(__file__).resolve().parent.parent

#: Modules (and their submodules) that C{import sasync} must not import.
HEAVY = (
    "asynqueue._child",
    "asynqueue._mainmodule",
    "asynqueue.process",
    "opentelemetry",
    "sasync.multicore._pool",
    "sasync.multicore._workerprocess",
    "sasync.stores",
    "sqlalchemy.orm",
)

#: Names imported when first looked up: package -> name -> defining module.
LAZY = {
    "sasync": {
        "Items": "sasync.stores",
        "Listener": "sasync.notifications",
        "Missing": "sasync.stores",
        "PersistentArray": "sasync.stores",
        "PersistentDict": "sasync.stores",
    },
    "asynqueue": {
        "ProcessQueue": "asynqueue.process",
        "ProcessWorker": "asynqueue.process",
    },
    "sasync.multicore": {
        "ProcessPool": "sasync.multicore._pool",
        "ResultSummary": "sasync.multicore._pool",
        "makingChildBroker": "sasync.multicore._pool",
    },
}


def imported(code: str) -> list[str]:
    """
    Run C{code} in a fresh Python on this source tree.

    @return: The heavy modules (see L{HEAVY}) in its C{sys.modules} after.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    report = (
        "\nimport json, sys"
        f"\nheavy = {HEAVY!r}"
        "\nprint(json.dumps(sorted(m for m in sys.modules"
        " if m in heavy or m.startswith(tuple(h + '.' for h in heavy)))))"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code + report],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_importSasync() -> None:
    """
    C{import sasync} imports none of the heavy modules.
    """
    assert imported("import sasync") == []


def test_brokerInOneProcess() -> None:
    """
    Making a broker without C{processes=N} imports none of them either.
    """
    assert imported("import sasync\nsasync.AccessBroker('sqlite://')") == []


def test_processesImportThePool() -> None:
    """
    A broker made with C{processes=N} imports the pool (here to refuse
    SQLite, as it did before).
    """
    found = imported(
        "import sasync\n"
        "try:\n"
        "    sasync.AccessBroker('sqlite://', processes=2)\n"
        "except ValueError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('SQLite accepted')\n"
    )
    assert "sasync.multicore._pool" in found
    assert "asynqueue.process" in found


def test_lazyNamesImportTheirModules() -> None:
    """
    C{from sasync import PersistentDict} works as before, importing the
    stores then.
    """
    found = imported("from sasync import PersistentDict")
    assert "sasync.stores" in found
    assert "sasync.multicore._pool" not in found


def test_tracingImportedWhenAsked() -> None:
    """
    OpenTelemetry is imported when the broker first asks whether calls are
    traced, and a tracer provider set after C{import sasync} is seen.
    """
    pytest.importorskip("opentelemetry.sdk")
    code = (
        "import sys\n"
        "from sasync import _tracing\n"
        "assert 'opentelemetry' not in sys.modules\n"
        "assert not _tracing.active()\n"
        "assert 'opentelemetry.trace' in sys.modules\n"
        "assert not _tracing.active()\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "assert _tracing.active()\n"
    )
    assert "opentelemetry.trace" in imported(code)


def test_tracingWithoutOpenTelemetry() -> None:
    """
    Without OpenTelemetry installed, calls are not traced, and nothing
    fails.
    """
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if not installed\n"
        "from sasync import _tracing\n"
        "assert not _tracing.active()\n"
        "assert not _tracing.active()\n"
        "del sys.modules['opentelemetry']\n"
    )
    assert imported(code) == []


@pytest.mark.parametrize(
    ("package", "name"),
    [(package, name) for package, names in LAZY.items() for name in names],
)
def test_lazyNames(package: str, name: str) -> None:
    """
    Each name imported lazily is the object of its module, listed by
    C{dir()} and in C{__all__}.
    """
    module = importlib.import_module(package)
    home = importlib.import_module(LAZY[package][name])
    assert name in dir(module)
    assert name in module.__all__
    assert getattr(module, name) is getattr(home, name)


def test_everyPublicNameListed() -> None:
    """
    C{dir()} lists every name of C{__all__}, whether imported yet or not.
    """
    for module in (sasync, asynqueue, sasync.multicore):
        assert set(module.__all__) <= set(dir(module)), module.__name__


def test_movedNameStillWarns() -> None:
    """
    The original's C{sasync.engine} still warns and gives L{sasync.setup}
    (through the lazy names' fallback).
    """
    with pytest.warns(DeprecationWarning, match="sasync.setup"):
        assert sasync.engine is sasync.setup  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="nothing"):
        sasync.nothing  # type: ignore[attr-defined]  # noqa: B018
