"""
Build the API reference with pydoctor (run by C{./scripts/docs}).

Docstrings are epytext and every pydoctor warning is an error. Links to
Python, Twisted, SQLAlchemy and zope.interface names (C{L{Deferred}}) resolve
through intersphinx inventories built here, offline, from the installed
packages and cached in the virtualenv. Then the relative links of the
Markdown pages are checked.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import shutil
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "api"
PACKAGES = ["asynqueue", "sasync"]
CACHE = Path(sys.prefix) / "share" / "sasync-inventories"

# Stdlib modules not to import (side effects, platform-specific, or huge).
SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}
SKIP |= {"lib2to3", "pydoc_data", "ensurepip", "venv", "test", "msilib"}
SUBMODULES = [
    "collections.abc", "concurrent.futures", "os.path", "logging.handlers",
    "urllib.parse", "importlib.metadata", "unittest.mock", "email.message",
    "xml.etree.ElementTree", "multiprocessing.pool", "http.client",
]  # fmt: skip
SQLALCHEMY = [
    "sqlalchemy", "sqlalchemy.engine", "sqlalchemy.engine.url",
    "sqlalchemy.engine.result", "sqlalchemy.engine.interfaces", "sqlalchemy.orm",
    "sqlalchemy.sql", "sqlalchemy.sql.expression", "sqlalchemy.schema",
    "sqlalchemy.types", "sqlalchemy.exc", "sqlalchemy.pool", "sqlalchemy.event",
    "sqlalchemy.ext.asyncio", "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.mysql", "sqlalchemy.dialects.sqlite",
]  # fmt: skip
ZOPE = ["zope.interface", "zope.interface.verify", "zope.interface.interfaces"]
STDTYPES = {"list", "dict", "tuple", "set", "frozenset", "str", "bytes"}
STDTYPES |= {"bytearray", "memoryview", "range"}


def _members(module: object) -> Iterable[tuple[str, object]]:
    names = getattr(module, "__all__", None) or [
        n for n in dir(module) if not n.startswith("_")
    ]
    for name in names:
        obj = getattr(module, name, None)
        yield name, obj
        if inspect.isclass(obj):
            for member in vars(obj):
                if not member.startswith("_"):
                    yield f"{name}.{member}", None


def _introspect(
    modules: Iterable[str], location: Callable[[str, str], str]
) -> dict[str, str]:
    """
    @return: fully qualified name -> relative URL, for every public name of
        the modules that import.
    """
    links: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for moduleName in modules:
            try:
                module = importlib.import_module(moduleName)
            except Exception:
                continue
            links[moduleName] = location(moduleName, "")
            for name, _ in _members(module):
                links[f"{moduleName}.{name}"] = location(moduleName, name)
    return links


def _pythonLinks() -> dict[str, str]:
    import builtins

    modules = sorted(
        n for n in sys.stdlib_module_names if not n.startswith("_") and n not in SKIP
    )
    links = _introspect(
        [*modules, *SUBMODULES],
        lambda m, n: f"library/{m.lower()}.html#{m}{'.' if n else ''}{n}",
    )
    for name, obj in _members(builtins):
        top = name.split(".")[0]
        if top in STDTYPES:
            page = "stdtypes"
        elif inspect.isclass(obj) and issubclass(obj, BaseException):
            page = "exceptions"
        else:
            page = "functions"
        links[name] = links[f"builtins.{name}"] = f"library/{page}.html#{name}"
    return links


def _searchLinks(modules: list[str]) -> dict[str, str]:
    return _introspect(modules, lambda m, n: f"search.html?q={n or m}")


def _writeInventory(path: Path, project: str, links: dict[str, str]) -> None:
    lines = "".join(f"{name} py:obj 1 {url} -\n" for name, url in sorted(links.items()))
    header = (
        f"# Sphinx inventory version 2\n# Project: {project}\n# Version: 0\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    path.write_bytes(header.encode() + zlib.compress(lines.encode()))


def _inventory(project: str, version: str, make: Callable[[Path], None]) -> Path:
    path = CACHE / f"{project}-{version}.inv"
    if not path.exists():
        print(f"[sasync] building the {project} {version} inventory", file=sys.stderr)
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        make(partial)
        partial.replace(path)
    return path


def _twistedInventory(path: Path) -> None:
    import twisted

    out = path.parent / f"twisted-html-{os.getpid()}"
    subprocess.run(
        [sys.executable, "-m", "pydoctor", "-q", "--make-intersphinx",
         f"--html-output={out}", "--project-name=Twisted",
         f"--project-base-dir={Path(twisted.__file__).parent.parent}",
         str(Path(twisted.__file__).parent)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    (out / "objects.inv").replace(path)
    shutil.rmtree(out)


def inventories() -> list[str]:
    """
    @return: pydoctor's C{--intersphinx-file} arguments.
    """
    version = importlib.metadata.version
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    sqlalchemy = "".join(version("sqlalchemy").split(".")[:2])

    def python_(path: Path) -> None:
        _writeInventory(path, "Python", _pythonLinks())

    def sqlalchemy_(path: Path) -> None:
        _writeInventory(path, "SQLAlchemy", _searchLinks(SQLALCHEMY))

    def zope_(path: Path) -> None:
        _writeInventory(path, "zope.interface", _searchLinks(ZOPE))

    sources = [
        ("python", python, python_, f"https://docs.python.org/{python}"),
        (
            "twisted",
            version("twisted"),
            _twistedInventory,
            "https://docs.twisted.org/en/stable/api",
        ),
        (
            "sqlalchemy",
            version("sqlalchemy"),
            sqlalchemy_,
            f"https://docs.sqlalchemy.org/en/{sqlalchemy}",
        ),
        (
            "zope.interface",
            version("zope.interface"),
            zope_,
            "https://zopeinterface.readthedocs.io/en/latest",
        ),
    ]
    return [
        f"--intersphinx-file={_inventory(name, v, make)}::{url}"
        for name, v, make, url in sources
    ]


def apiDocs() -> int:
    """
    Run pydoctor on the packages that exist so far.

    @return: pydoctor's exit code.
    """
    packages = [p for p in PACKAGES if (ROOT / p / "__init__.py").exists()]
    shutil.rmtree(OUTPUT, ignore_errors=True)
    if not packages:
        OUTPUT.mkdir(parents=True)
        (OUTPUT / "index.html").write_text(
            "<p>No package has an <code>__init__.py</code> yet.</p>\n"
        )
        print("[sasync] no packages yet: wrote a placeholder", file=sys.stderr)
        return 0
    command = [
        sys.executable, "-m", "pydoctor",
        "--project-name=sAsync",
        f"--project-version={importlib.metadata.version('sAsync')}",
        "--docformat=epytext",
        "--warnings-as-errors",
        "-q",
        f"--html-output={OUTPUT}",
        f"--project-base-dir={ROOT}",
        *inventories(),
        *(str(ROOT / p) for p in packages),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode:
        print(
            f"[sasync] pydoctor failed (exit {result.returncode}):"
            " fix the docstrings named above",
            file=sys.stderr,
        )
    return result.returncode


def checkLinks() -> list[str]:
    """
    @return: the broken relative links in the Markdown pages.
    """
    broken = []
    pages = [*ROOT.glob("*.md"), *(ROOT / "docs").rglob("*.md")]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:|#", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    return broken


def main() -> int:
    """
    Build the API reference, then check the narrative pages' links.
    """
    status = apiDocs()
    broken = checkLinks()
    for link in broken:
        print(f"[sasync] broken link in {link}", file=sys.stderr)
    if status == 0 and not broken:
        print(f"[sasync] docs built: {OUTPUT / 'index.html'}", file=sys.stderr)
    return status or (1 if broken else 0)


if __name__ == "__main__":
    sys.exit(main())
