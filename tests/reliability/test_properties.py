"""
A property test (Hypothesis) on the broker: random transaction calls with
random priorities, simulated conflicts, retries, timeouts and cancellations
never lose, duplicate or silently commit a write. Real threads, SQLite.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.defer import CancelledError

from sasync import TransactionTimeout, transact
from tests.reactorthread import runInReactor
from tests.reliability.helpers import Ledger, pause
from tests.reliability.test_retries import conflict


class Scripted(Ledger):
    """
    A ledger whose C{scripted} write fails with a simulated serialization
    failure on its first C{failures} attempts, after sleeping C{nap} s.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.runs: dict[str, int] = {}

    @transact
    def scripted(self, token: str, failures: int, nap: float) -> str:
        # One dict item set: atomic under the GIL (one worker anyway).
        self.runs[token] = self.runs.get(token, 0) + 1
        self.conn.execute(self.ledger.insert().values(token=token))
        if nap:
            time.sleep(nap)
        if self.runs[token] <= failures:
            raise conflict()
        return token


calls = st.lists(
    st.fixed_dictionaries(
        {
            "failures": st.integers(0, 3),
            "retries": st.integers(0, 3),
            "niceness": st.integers(-2, 2),
            "nap": st.sampled_from([0.0, 0.0, 0.002, 0.02]),
            "timeout": st.sampled_from([None, None, None, 0.01, 0.5]),
            "cancelAfter": st.sampled_from([None, None, 0.0, 0.005, 0.03]),
        }
    ),
    min_size=1,
    max_size=25,
)


async def scenario(url: str, plan: list[dict[str, Any]]) -> None:
    broker = Scripted(url)
    try:
        await broker.waitUntilRunning()
        ds = []
        for i, call in enumerate(plan):
            d = broker.scripted(
                f"t{i}",
                call["failures"],
                call["nap"],
                retries=call["retries"],
                niceness=call["niceness"],
                timeout=call["timeout"],
            )
            ds.append(d)
        for d, call in zip(ds, plan, strict=True):
            if call["cancelAfter"] is not None:
                await pause(call["cancelAfter"])
                d.cancel()
        results = await defer.DeferredList(ds, consumeErrors=True)
        inTable = await broker.tokens()
        assert len(inTable) == len(set(inTable)), "a write was duplicated"
        for i, ((ok, result), call) in enumerate(zip(results, plan, strict=True)):
            token = f"t{i}"
            runs = broker.runs.get(token, 0)
            if ok:
                assert result == token
                assert token in inTable, f"{token} acknowledged but not committed"
                assert call["failures"] <= call["retries"]
                assert runs == call["failures"] + 1
            else:
                assert token not in inTable, f"{token} failed yet committed"
                assert runs <= call["retries"] + 1
                if not result.check(CancelledError, TransactionTimeout):
                    assert result.check(Exception)
                    assert call["failures"] > call["retries"]
                    assert runs == call["retries"] + 1
    finally:
        await broker.shutdown(timeout=5)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=calls)
def test_noWriteLostOrDuplicated(plan: list[dict[str, Any]]) -> None:
    """
    Whatever the mix: a call that succeeded ran exactly failures + 1 times
    and its write is in the table once; a call that failed left nothing
    (cancelled or timed out: at any point; otherwise: it ran out of
    retries); nothing is in the table twice.
    """
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'p.db'}"
        runInReactor(lambda: defer.Deferred.fromCoroutine(scenario(url, plan)))
