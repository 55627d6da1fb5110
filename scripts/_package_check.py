"""
CI's package check (.ci/run): build the sdist and the wheel (the wheel from
the sdist, as pip would), run C{twine check}, check what they hold, then
install the wheel alone into a fresh virtualenv and use it there.

Run with the project's virtualenv, which has the C{release} extra (build,
twine): C{.venv/bin/python scripts/_package_check.py}. Exits non-zero,
saying what is wrong, if anything is.
"""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Metadata lines a user can trust (besides the version and the README).
METADATA = (
    "Name: sAsync",
    "License-Expression: Apache-2.0",
    "Requires-Python: >=3.11",
    "Description-Content-Type: text/markdown",
    "Classifier: Typing :: Typed",
    "Classifier: Programming Language :: Python :: 3.11",
)

#: Files the wheel must hold.
IN_WHEEL = (
    "sasync/__init__.py",
    "sasync/py.typed",
    "sasync/testing/__init__.py",
    "sasync/testing/plugin.py",
    "asynqueue/__init__.py",
    "asynqueue/py.typed",
)

# Runs in the fresh virtualenv: both packages, one version, a broker at work.
SMOKE = textwrap.dedent(
    """
    import sys
    import sqlalchemy as SA
    from twisted.internet import defer, task

    import asynqueue
    import sasync
    import sasync.testing
    from sasync import AccessBroker, transact

    assert sasync.__version__ == asynqueue.__version__ == sys.argv[1], (
        sasync.__version__, asynqueue.__version__, sys.argv[1])
    assert "pytest" not in sys.modules, "sasync.testing imported pytest"


    class Counter(AccessBroker):
        def startup(self):
            return self.table("counts", SA.Column("n", SA.Integer))

        @transact
        def add(self, n):
            self.conn.execute(self.counts.insert().values(n=n))

        @transact
        def total(self):
            return self.conn.execute(SA.select(SA.func.sum(self.counts.c.n))).scalar()


    async def main(reactor):
        broker = Counter("sqlite:///smoke.db")
        for n in range(1, 11):
            await broker.add(n)
        assert await broker.total() == 55
        await broker.shutdown()
        print("smoke: a broker wrote and read 10 rows")


    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    """
)


class CheckFailed(Exception):
    """
    The package is not what it should be.
    """


def run(*args: str | Path, cwd: Path | None = None) -> str:
    """
    Run a command, and return its output.

    @raise CheckFailed: If it fails (with its output).
    """
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode != 0:
        raise CheckFailed(f"{' '.join(map(str, args))} failed:\n{done.stdout}")
    return done.stdout


def say(message: str) -> None:
    print(f"[package] {message}", flush=True)


def build(dist: Path) -> tuple[Path, Path]:
    """
    Build the sdist, then the wheel from it.

    @return: C{(sdist, wheel)}.
    """
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=dist.parent)
    sdists = sorted(dist.glob("*.tar.gz"))
    wheels = sorted(dist.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        raise CheckFailed(f"expected one sdist and one wheel in {dist}")
    say(f"built {sdists[0].name} and {wheels[0].name}")
    return sdists[0], wheels[0]


def checkWheel(wheel: Path) -> str:
    """
    The wheel holds both packages and their C{py.typed}, no tests, and
    metadata a user can trust.

    @return: Its version.
    """
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        [metadataName] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = z.read(metadataName).decode()
    missing = [n for n in IN_WHEEL if n not in names]
    if missing:
        raise CheckFailed(f"{wheel.name} lacks {', '.join(missing)}")
    tops = {
        n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")
    }
    if tops != {"sasync", "asynqueue"}:
        raise CheckFailed(f"{wheel.name} has top-level {sorted(tops)}")
    headers = metadata.split("\n\n", 1)[0].splitlines()
    lacking = [line for line in METADATA if line not in headers]
    if lacking:
        raise CheckFailed(f"{wheel.name}'s METADATA lacks {lacking}")
    if not any(line.startswith("Project-URL: ") for line in headers):
        raise CheckFailed(f"{wheel.name}'s METADATA has no Project-URL")
    if "# sAsync and AsynQueue" not in metadata:
        raise CheckFailed(f"{wheel.name}'s long description is not the README")
    version = email.message_from_string(metadata)["Version"]
    say(f"wheel: both packages, py.typed, metadata ({version}) fine")
    return str(version)


def checkSdist(sdist: Path) -> None:
    """
    The sdist holds every file git tracks under tests/ and docs/ (and the
    scripts to run them).
    """
    with tarfile.open(sdist) as t:
        prefix = t.getnames()[0].split("/")[0]
        names = {n.removeprefix(prefix + "/") for n in t.getnames()}
    tracked = run("git", "ls-files", "tests", "docs", "scripts", cwd=ROOT).split()
    if not tracked:
        raise CheckFailed("git ls-files found no tests: run in a git checkout")
    missing = sorted(set(tracked) - names)
    if missing:
        shown = ", ".join(missing[:10])
        raise CheckFailed(f"{sdist.name} lacks {len(missing)} files: {shown}")
    say(f"sdist: all {len(tracked)} files of tests/, docs/ and scripts/")


def checkInstalled(wheel: Path, version: str, folder: Path) -> None:
    """
    Install the wheel alone into a fresh virtualenv, and use it from
    another folder than the source tree.
    """
    env = folder / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    run(python, "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel)
    say("installed the wheel into a fresh virtualenv")
    (folder / "smoke.py").write_text(SMOKE)
    say(run(python, "smoke.py", version, cwd=folder).strip())
    for command in (
        [python, "-m", "sasync", "--help"],
        [env / "bin" / "sasync", "--help"],
    ):
        if "usage:" not in run(*command, cwd=folder):
            raise CheckFailed(f"{command} printed no usage")
    say("python -m sasync --help and the sasync command answer")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sasync-package-") as tmp:
        folder = Path(tmp)
        try:
            sdist, wheel = build(folder / "dist")
            run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel)
            say("twine check --strict: passed")
            version = checkWheel(wheel)
            checkSdist(sdist)
            checkInstalled(wheel, version, folder)
        except CheckFailed as e:
            say(f"FAILED: {e}")
            return 1
    say("all fine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
