"""
The static types of C{@transact} methods, checked by running mypy on a
small user module: exact signatures are kept, call-time keywords are
accepted, and row results are typed as Deferators.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

USER_CODE = textwrap.dedent(
    """
    from typing import Any, assert_type

    import sqlalchemy as SA
    from sqlalchemy.engine import Result, Row
    from twisted.internet.defer import Deferred

    from asynqueue import Deferator
    from sasync import AccessBroker, transact


    class Broker(AccessBroker):
        @transact
        def setNameValue(self, name: str, value: str) -> int:
            return 1

        @transact
        def entriesSince(self, since: int) -> Result[Any]:
            return self.conn.execute(SA.text("SELECT 1"))


    def use(broker: Broker) -> None:
        assert_type(broker.setNameValue("url", "/"), Deferred[int])
        assert_type(broker.setNameValue("url", "/", niceness=-15), Deferred[Any])
        assert_type(broker.setNameValue("url", "/", retries=3), Deferred[Any])
        assert_type(broker.entriesSince(3), Deferred[Deferator[Row[Any]]])
        assert_type(broker.entriesSince(3, asList=True), Deferred[Any])
    """
)


def runMypy(tmp_path: Path, code: str) -> tuple[str, int]:
    path = tmp_path / "usercode.py"
    path.write_text(code)
    out, err, status = api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(path)]
    )
    return out + err, status


@pytest.mark.slow
def test_transactTypes(tmp_path: Path) -> None:
    """
    Correct calls, with and without call-time keywords, type-check with
    the result types a user expects.
    """
    out, status = runMypy(tmp_path, USER_CODE)
    assert status == 0, out


@pytest.mark.slow
def test_wrongArgumentsAreCaught(tmp_path: Path) -> None:
    """
    An argument of the wrong type is still an error: a call without
    call-time keywords is checked against the method's own signature.
    """
    bad = USER_CODE + "\n\ndef misuse(broker: Broker) -> None:\n"
    bad += "    broker.setNameValue(1, '/')\n"
    out, status = runMypy(tmp_path, bad)
    assert status == 1, out
    assert "call-overload" in out, out
    assert "def __call__(self, name: str, value: str) -> Deferred[int]" in out, out
