"""
The parts of a L{sasync.transact} call, deterministic (no reactor, no
threads, no database server): splitting its keywords, naming it in error
notes, whether it streams, and refusing COMMIT once stopped.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import CancelledError

from asynqueue import ListConsumer, Task
from sasync.transact import (
    CALL_KEYWORDS,
    Accepts,
    CallOptions,
    describeCall,
    noteCall,
    splitKeywords,
)

# Keyword parsing -------------------------------------------------------------


def plain(self: Any, a: int, b: int = 0) -> None: ...


def namesTimeout(self: Any, timeout: float) -> None: ...


def anyKeywords(self: Any, *args: Any, **kw: Any) -> None: ...


def test_splitKeywordsNone() -> None:
    """
    No keywords: the shared default options, nothing to pass on.
    """
    options, own = splitKeywords(Accepts.of(plain), "plain", {})
    assert options == CallOptions() and own == {}


def test_splitKeywordsCallTime() -> None:
    """
    Call-time keywords become options; the method's own stay.
    """
    consumer = ListConsumer()
    options, own = splitKeywords(
        Accepts.of(plain), "plain", {"b": 2, "niceness": -15, "consumer": consumer}
    )
    assert own == {"b": 2}
    assert options.niceness == -15 and options.consumer is consumer


def test_splitKeywordsMethodWins() -> None:
    """
    A call-time keyword the method names as a parameter goes to the method.
    """
    options, own = splitKeywords(Accepts.of(namesTimeout), "f", {"timeout": 3})
    assert own == {"timeout": 3} and options.timeout is None


def test_splitKeywordsVarKeyword() -> None:
    """
    A method taking **kw gets unknown keywords, but not call-time ones.
    """
    options, own = splitKeywords(Accepts.of(anyKeywords), "f", {"x": 1, "asList": True})
    assert own == {"x": 1} and options.asList


def test_splitKeywordsUnknown() -> None:
    """
    An unknown keyword is a TypeError naming it and the call-time keywords.
    """
    with pytest.raises(TypeError) as info:
        splitKeywords(Accepts.of(plain), "plain", {"colour": "red"})
    message = str(info.value)
    assert "'colour'" in message and "plain()" in message
    assert all(k in message for k in CALL_KEYWORDS)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"niceness": 21}, ValueError, "niceness"),
        ({"niceness": "low"}, TypeError, "niceness"),
        ({"consumer": object()}, TypeError, "IConsumer"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": True}, ValueError, "timeout"),
        ({"asList": True, "raw": True}, ValueError, "exclude"),
        ({"asList": True, "consumer": ListConsumer()}, ValueError, "exclude"),
        ({"doNext": True, "doLast": True}, ValueError, "exclude"),
    ],
)
def test_splitKeywordsBadValues(
    kw: dict[str, Any], error: type[Exception], match: str
) -> None:
    """
    Bad call-time values are clear errors, raised in the caller.
    """
    with pytest.raises(error, match=match):
        splitKeywords(Accepts.of(plain), "plain", kw)


# Error notes -----------------------------------------------------------------


class LogBroker:
    pass


def setNameValue(self: Any, name: str, value: str) -> None: ...


def test_describeCall() -> None:
    """
    Calls are named as Class.method(args), shortened.
    """
    text = describeCall(LogBroker(), setNameValue, ("url", "x" * 100), {"n": 1})
    assert text.startswith("LogBroker.setNameValue('url', 'xxx")
    assert text.endswith(", n=1)")
    assert len(text) < 100


def test_noteCall() -> None:
    """
    The note is added once; a SQLAlchemy statement error gets it in its
    message too, keeping its type.
    """
    error = KeyError("k")
    noteCall(error, "B.f()")
    noteCall(error, "B.f()")
    assert error.__notes__ == ["in transaction B.f()"]
    integrity = IntegrityError("INSERT ...", {}, Exception("duplicate"))
    noteCall(integrity, "B.g(1)")
    assert "in transaction B.g(1)" in str(integrity)
    assert isinstance(integrity, IntegrityError)


# Streaming policy -------------------------------------------------------------


class FakeHandle:
    guessesReadOnly = False

    def __init__(self, sqlite: bool = False, streams: bool = True) -> None:
        self.isSQLite = sqlite
        self.supportsStreaming = not sqlite
        self.streamsByDefault = streams


def wantsStream(
    handle: FakeHandle, learned: dict[Any, bool], f: Any = plain, **kw: Any
) -> bool:
    from sasync.transact import TransactionCall

    call = TransactionCall(LogBroker(), handle, f, CallOptions(**kw), learned)  # type: ignore[arg-type]
    return call._wantsStream()


def test_streamingPolicy() -> None:
    """
    PostgreSQL streams calls to be iterated, unless the method was seen
    returning no rows; asList/raw never stream; stream= decides; SQLite
    never; MySQL only when asked.
    """
    from sasync.transact import ALWAYS_STREAM

    pg = FakeHandle()
    learned: dict[Any, bool] = {}
    assert wantsStream(pg, learned)
    learned[plain] = False
    assert not wantsStream(pg, learned)
    assert wantsStream(pg, learned, stream=True)
    learned[plain] = True
    assert not wantsStream(pg, learned, asList=True)
    assert not wantsStream(pg, learned, raw=True)
    assert not wantsStream(pg, learned, stream=False)
    assert not wantsStream(FakeHandle(sqlite=True), learned, stream=True)
    mysql = FakeHandle(streams=False)
    assert not wantsStream(mysql, learned)
    assert wantsStream(mysql, learned, stream=True)
    ALWAYS_STREAM.add(namesTimeout)
    try:
        learned[namesTimeout] = False
        assert wantsStream(pg, learned, f=namesTimeout)
    finally:
        ALWAYS_STREAM.discard(namesTimeout)


# COMMIT ----------------------------------------------------------------------


class FakeTransaction:
    """
    A transaction that records whether it was committed.
    """

    committed = False

    def commit(self) -> None:
        self.committed = True


def commitAs(task: Task[Any]) -> tuple[FakeTransaction, BaseException | None]:
    """
    Run TransactionCall._commit as C{task}'s worker thread would.

    @return: The transaction, and what C{_commit} raised.
    """
    from asynqueue.task import setCurrentTask
    from sasync.transact import CallOptions, TransactionCall

    handle = SimpleNamespace(guessesReadOnly=False, dialectName="sqlite")
    call = TransactionCall(object(), handle, commitAs, CallOptions())  # type: ignore[arg-type]
    transaction = FakeTransaction()
    setCurrentTask(task)
    try:
        worker = SimpleNamespace(serverClosed=lambda: False)
        call._commit(call.handle, object(), transaction, worker, task, False)
    except BaseException as e:
        return transaction, e
    finally:
        setCurrentTask(None)
    return transaction, None


def test_commitRefusedAfterStop() -> None:
    """
    A stop requested before the worker reached COMMIT: COMMIT is not sent,
    the call raises CancelledError (and rolls back), though its caller was
    already told (the task is abandonable).
    """
    task: Task[Any] = Task(lambda: None)
    task.abandonable = True
    task.onInterrupt(lambda reason: None)
    assert not task.requestStop(CancelledError())
    transaction, error = commitAs(task)
    assert isinstance(error, CancelledError)
    assert not transaction.committed


def test_commitMarkedBeforeSent() -> None:
    """
    COMMIT is sent only once marked: a stop after that waits for the outcome.
    """
    task: Task[Any] = Task(lambda: None)
    task.abandonable = True
    task.onInterrupt(lambda reason: None)
    transaction, error = commitAs(task)
    assert error is None and transaction.committed
    assert task.requestStop(CancelledError())
