"""
Looking up the outcome of a COMMIT whose answer was lost, deterministic
(a scripted engine, a fake clock).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import OperationalError

from sasync.connection import _outcome as outcome


class FakeResult:
    def __init__(self, value: object) -> None:
        self.value = value

    def scalar(self) -> object:
        return self.value


class FakeLookupEngine:
    """
    Answers C{txid_status} from a script; C{None} in the script: the server
    cannot be reached.
    """

    def __init__(self, statuses: list[str | None]) -> None:
        self.statuses = statuses
        self.terminated = 0

    def connect(self) -> Any:
        status = self.statuses.pop(0)
        if status is None:
            raise OperationalError("connect", {}, Exception("refused"))
        engine = self

        class Connection:
            def __enter__(self) -> Connection:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def execute(self, statement: Any, params: Any) -> FakeResult:
                if "terminate" in str(statement):
                    engine.terminated += 1
                return FakeResult(status)

            def rollback(self) -> None:
                pass

        return Connection()


def test_lostCommitOutcome() -> None:
    """
    The outcome of a COMMIT whose answer was lost: asked until the database
    says committed or aborted (terminating the old backend while it still
    runs the transaction); unknown if it cannot say in time; nothing to ask
    if the transaction wrote nothing.
    """
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def ask(statuses: list[str | None], xid: int | None = 7) -> tuple[str, Any]:
        engine = FakeLookupEngine(statuses)
        verdict = outcome.lostCommitOutcome(
            engine,  # type: ignore[arg-type]
            xid,
            123,
            seconds=1.0,
            sleep=sleep,
            clock=lambda: now[0],
        )
        return verdict, engine

    assert ask(["committed"])[0] == outcome.COMMITTED
    verdict, engine = ask([None, "in progress", "aborted"])
    assert verdict == outcome.ABORTED
    assert engine.terminated == 1
    assert ask([], xid=None)[0] == outcome.NOTHING_WRITTEN
    assert ask([None] * 20)[0] == outcome.UNKNOWN
