"""
The broker's constructor shows its real signature (to C{inspect} and in the
API reference, which reads C{__init__} now that no C{__new__} hides it), and
a broker still records the arguments it was made with, for its worker
processes (C{processes=N}) to make their own instance the same way.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from sasync import AccessBroker

ROOT = Path(__file__).resolve().parents[2]


class Named(AccessBroker):
    """
    A subclass whose constructor takes arguments of its own first.
    """

    def __init__(self, label: str, url: str, **kw: Any) -> None:
        """
        Labelled.
        """
        self.label = label
        super().__init__(url, **kw)


def test_realSignature() -> None:
    """
    C{inspect.signature} of the broker class and of a subclass give their
    own C{__init__}'s parameters, and its docstring has a summary.
    """
    assert list(inspect.signature(AccessBroker).parameters) == [
        "url",
        "reactor",
        "engineKw",
    ]
    assert list(inspect.signature(Named).parameters) == ["label", "url", "kw"]
    assert Named.__init__.__doc__ is not None and "Labelled" in Named.__init__.__doc__
    doc = AccessBroker.__init__.__doc__ or ""
    assert doc.strip().startswith("Make a broker")


def test_noNewInSource() -> None:
    """
    pydoctor reads the source, and takes a C{__new__} over C{__init__} for
    the constructor it shows (it showed C{AccessBroker(*args, **kw)}).
    """
    source = (ROOT / "sasync" / "broker.py").read_text(encoding="utf-8")
    assert "def __new__" not in source


async def test_madeWithOutermostCall(sqliteURL: str, brokers: Any) -> None:
    """
    What a broker was made with is the outermost call's arguments, not
    what a subclass passed on to C{AccessBroker.__init__}.
    """
    broker = brokers(Named, "x", sqliteURL, batchSize=7)
    assert broker._madeWith == (("x", sqliteURL), {"batchSize": 7})
    plain = brokers(AccessBroker, sqliteURL)
    assert plain._madeWith == ((sqliteURL,), {})
    await broker.waitUntilRunning()
    await plain.waitUntilRunning()
