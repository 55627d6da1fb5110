"""
L{asynqueue.lazy.lazyNames}: a module's names imported when first looked up.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from asynqueue.lazy import lazyNames


def test_importsOnFirstLookup() -> None:
    """
    The first lookup returns the object of the named module and binds it in
    the namespace, so that later lookups never reach C{__getattr__}.
    """
    namespace: dict[str, Any] = {"__name__": "fake"}
    getattr_, _ = lazyNames(namespace, {"dumps": "json"})
    assert getattr_("dumps") is json.dumps
    assert namespace["dumps"] is json.dumps


def test_dirListsLazyNames() -> None:
    """
    C{__dir__} lists the names bound and the ones not imported yet.
    """
    namespace: dict[str, Any] = {"__name__": "fake", "here": 1}
    _, dir_ = lazyNames(namespace, {"dumps": "json"})
    assert dir_() == ["__name__", "dumps", "here"]


def test_otherNames() -> None:
    """
    Another name raises C{AttributeError} naming the module, or goes to the
    fallback if there is one.
    """
    getattr_, _ = lazyNames({"__name__": "fake"}, {"dumps": "json"})
    with pytest.raises(AttributeError, match="module 'fake' has no attribute 'x'"):
        getattr_("x")
    asked: list[str] = []

    def fallback(name: str) -> object:
        asked.append(name)
        return 42

    getattr_, _ = lazyNames({"__name__": "fake"}, {"dumps": "json"}, fallback)
    assert getattr_("x") == 42
    assert asked == ["x"]


def test_submodules() -> None:
    """
    A package's submodule named in C{submodules} is imported on first
    lookup, as C{package.module} worked when the package imported it.
    """
    import importlib
    import sys

    namespace: dict[str, Any] = {"__name__": "json"}
    getattr_, dir_ = lazyNames(namespace, {}, submodules=("tool",))
    sys.modules.pop("json.tool", None)
    tool = getattr_("tool")
    assert tool is importlib.import_module("json.tool")
    assert "tool" in dir_()


def test_packageSubmodulesStillAttributes() -> None:
    """
    C{sasync.stores} and C{asynqueue.process} are attributes after a plain
    C{import sasync}, as before they were imported lazily.
    """
    import asynqueue
    import sasync

    assert sasync.stores.PersistentDict is sasync.PersistentDict
    assert asynqueue.process.ProcessQueue is asynqueue.ProcessQueue
