"""
The version of sAsync, and the check that the C{asynqueue} it imports is the
one shipped with it.

sasync and asynqueue ship in one distribution, C{sAsync}, and both take
their C{__version__} from its metadata (C{version=} in C{setup.py}, the one
source). The original AsynQueue on PyPI (0.9.9) owns the same top-level
package, C{asynqueue}: installed after sAsync it replaces files of ours,
and uninstalled it removes them. Either way sasync would fail later with a
puzzling error; it fails at import instead, saying what to do.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

#: The distribution shipping both packages.
DISTRIBUTION = "sAsync"

#: The version run from a source tree, where sAsync is not installed.
UNKNOWN = "0+unknown"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:
    __version__ = UNKNOWN


def _where(module: object) -> str:
    found = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
    return f"the asynqueue at {found}"


def _mismatch(found: str) -> ImportError:
    pin = "" if __version__ == UNKNOWN else f"=={__version__}"
    return ImportError(
        f"sasync {__version__} needs the asynqueue package shipped with it"
        f" (version {__version__}), but {found}. The original AsynQueue"
        " from PyPI owns the same top-level package; this one supersedes it."
        " If it is installed, uninstall it and reinstall sAsync:"
        f" pip uninstall AsynQueue && pip install --force-reinstall --no-deps"
        f" 'sAsync{pin}'. Otherwise remove that asynqueue from sys.path."
    )


def checkAsynqueue() -> None:
    """
    Check that C{import asynqueue} gives the package shipped with sasync.

    @raise ImportError: If it fails, or gives a package of another version
        (or none, as the original AsynQueue's), saying what to uninstall.
    """
    try:
        import asynqueue
    except ImportError as e:
        raise _mismatch(f"importing it failed ({type(e).__name__}: {e})") from e
    theirs = getattr(asynqueue, "__version__", None)
    if theirs is None:
        raise _mismatch(f"{_where(asynqueue)} has no __version__")
    if theirs != __version__:
        raise _mismatch(f"{_where(asynqueue)} is version {theirs}")


checkAsynqueue()
