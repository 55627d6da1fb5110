"""
Brokers made with C{processes=N}: transactions in worker processes, on
PostgreSQL and MariaDB. Each broker starts its processes (some 0.5 s each).
"""

from __future__ import annotations

import datetime
import os
import signal
from typing import Any

import psutil
import pytest
import sqlalchemy as SA
from sqlalchemy.exc import IntegrityError, OperationalError
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from asynqueue import Deferator, ListConsumer
from asynqueue.errors import WorkerError
from sasync.errors import StartupError, TransactionTimeout
from sasync.multicore import ResultSummary
from sasync.multicore._pool import PIN_ENV
from tests.reliability.helpers import activeSleeps, settle, until

from .brokers import (
    FailingBroker,
    FirstBroker,
    MultiBroker,
    Note,
    Unpicklable,
    helperPid,
)

T0 = datetime.datetime(2024, 1, 1)


def entries(n: int) -> list[dict[str, Any]]:
    return [
        {"dt": T0 + datetime.timedelta(seconds=i), "ip": f"10.0.{i // 250}.{i % 250}"}
        for i in range(n)
    ]


async def test_seedExample(serverURL: str, brokers: Any) -> None:
    """
    The seed's example, unchanged, through two worker processes: the same
    ID for the same value, rows as a Deferator, to a consumer, as a list;
    the transactions ran in the workers, not here.
    """
    broker = brokers(MultiBroker, serverURL, processes=2, batchSize=100)
    firstID = await broker.setNameValue("url", "/index.html", niceness=-15)
    againID = await broker.setNameValue("url", "/index.html", niceness=-15)
    otherID = await broker.setNameValue("url", "/other.html")
    assert firstID == againID != otherID
    assert isinstance(await broker.setNameValue("vhost", "/index.html"), int)
    await broker.addEntries(entries(250))
    dr = await broker.entriesSince(T0 + datetime.timedelta(seconds=10))
    assert isinstance(dr, Deferator)
    seen = []
    async for row in dr:
        seen.append(row.dt)
    assert len(seen) == 240 and seen == sorted(seen)
    consumer = ListConsumer()
    assert await broker.entriesSince(T0, consumer=consumer) is consumer
    assert len(consumer.items) == 250
    rows = await broker.entriesSince(T0, asList=True)
    assert [r.ip for r in rows[:2]] == ["10.0.0.0", "10.0.0.1"]
    pids = set(await gatherResults([broker.pid() for _ in range(20)]))
    assert os.getpid() not in pids
    assert pids <= set(broker._pool.pids())
    # The parent knows the tables the workers made, for building statements.
    assert isinstance(broker.entries, SA.Table)
    t = broker.entries
    dr = await broker.selectorator(SA.select(t.c.ip).where(t.c.id <= 5), N=2)
    assert [len(group) async for group in dr] == [2, 2, 1]
    assert (await broker.sql("SELECT count(*) AS n FROM entries"))[0].n == 250


@implementer(IConsumer)
class PausingConsumer:
    """
    Counts what is written to it, and pauses its producer at C{pauseAt}.
    """

    def __init__(self, pauseAt: int, onPause: Any = None) -> None:
        self.count = 0
        self.pauseAt = pauseAt
        self.onPause = onPause
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: Any) -> None:
        self.count += 1
        if self.count == self.pauseAt:
            self.producer.pauseProducing()
            if self.onPause is not None:
                self.onPause()


async def test_consumerBackpressure(serverURL: str, brokers: Any) -> None:
    """
    Rows stream to a consumer in batches fetched from the worker process
    only as the consumer takes them: while it is paused, no batch is asked
    for (once the requests made before the pause are answered, and the
    reactor has run what they scheduled, none is sent); resumed, it gets
    every row.
    """
    broker = brokers(MultiBroker, serverURL, processes=1, batchSize=50)
    await broker.addEntries(entries(1000))
    process = broker._pool.processes[0]
    asked: list[int] = []
    answered: list[int] = []
    request = process.request

    def counting(kind: int, body: bytes, handle: Any) -> int:
        asked.append(kind)

        def answer(kind: int, body: Any) -> Any:
            answered.append(kind)
            return handle(kind, body)

        return request(kind, body, answer)

    process.request = counting
    askedBeforePause: list[int] = []
    consumer = PausingConsumer(60, lambda: askedBeforePause.append(len(asked)))
    d = broker.entriesSince(T0, consumer=consumer)
    await until(lambda: consumer.count >= 60 and len(answered) == len(asked))
    await settle()
    assert consumer.count == 60 and not d.called
    assert len(asked) == len(answered) == askedBeforePause[0] <= 4
    consumer.producer.resumeProducing()
    assert await d is consumer
    assert consumer.count == 1000


async def test_resultsOfEveryKind(serverURL: str, brokers: Any) -> None:
    """
    Scalars, containers, rows, detached ORM objects, buffered results,
    results without rows, big streamed results, and the same worker
    process's broker made with the same constructor arguments.
    """
    broker = brokers(MultiBroker, serverURL, label="L", processes=1, batchSize=100)
    assert (await broker.whoAmI())[0] == "L"
    value = {"a": [1, 2.5, None], "b": (True, "x"), "c": T0}
    assert await broker.echo(value) == value
    ids = await broker.addNotes(["one", "two"])
    notes = await broker.allNotes()
    assert [(n.id, n.text) for n in notes] == list(
        zip(ids, ["one", "two"], strict=True)
    )
    assert all(isinstance(n, Note) and SA.inspect(n).detached for n in notes)
    raw = await broker.numbers(3, raw=True)
    assert [r.x for r in raw] == [1, 2, 3]
    listed = await broker.numbers(5, asList=True)
    assert [r.x for r in listed] == [1, 2, 3, 4, 5]
    assert listed[0]._mapping["x"] == 1
    total = 0
    async for row in await broker.numbers(2500):
        total += row.x
    assert total == 2500 * 2501 // 2
    inserted = await broker.insertValue("v")
    if not isinstance(inserted, Deferator):
        # MariaDB: no RETURNING, so the INSERT's result has no rows.
        assert isinstance(inserted, ResultSummary)
        assert inserted.rowcount == 1
        assert inserted.inserted_primary_key[0] == inserted.lastrowid


async def test_errorsKeepTheirType(serverURL: str, brokers: Any) -> None:
    """
    A transaction's exception comes back as itself, the database's too, with
    the worker's traceback; what can't be pickled fails with TypeError.
    """
    broker = brokers(MultiBroker, serverURL, processes=1)
    with pytest.raises(ValueError, match="boom") as info:
        await broker.fail("boom")
    assert "Traceback in the worker process" in "\n".join(info.value.__notes__)
    await broker.setNameValue("url", "/a")
    with pytest.raises(IntegrityError):
        await broker.execute(broker.url.insert().values(value="/a"))
    with pytest.raises(TypeError, match="can't be sent back"):
        await broker.unpicklable()
    with pytest.raises(TypeError, match="can't be pickled"):
        await broker.echo(Unpicklable())
    assert await broker.echo("still fine") == "still fine"


async def test_cannotCrossAProcessBoundary(sqliteURL: str, serverURL: str) -> None:
    """
    SQLite, a broker class defined in a function (or in __main__), and
    constructor arguments that can't be pickled are refused at once.
    """
    with pytest.raises(ValueError, match="SQLite has one writer"):
        MultiBroker(sqliteURL, processes=2)

    class Local(MultiBroker):
        pass

    with pytest.raises(TypeError, match="inside a function"):
        Local(serverURL, processes=2)
    Local.__module__ = "__main__"
    with pytest.raises(TypeError, match="__main__"):
        Local(serverURL, processes=2)
    with pytest.raises(TypeError, match="can't be pickled"):
        MultiBroker(serverURL, label=Unpicklable(), processes=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive int"):
        MultiBroker(serverURL, processes=0)


async def test_firstRunsOnce(serverURL: str, brokers: Any) -> None:
    """
    Each process runs startup(), but first() runs once, before any call;
    deferToQueue runs in a worker process.
    """
    broker = brokers(FirstBroker, serverURL, processes=2)
    assert await broker.count("url") == 1
    assert await broker.deferToQueue(helperPid) in broker._pool.pids()


async def test_priorities(serverURL: str, brokers: Any) -> None:
    """
    Calls wait in the parent's queue in priority order: doNext, then lower
    niceness first, first come first served within one, doLast last.
    """
    broker = brokers(MultiBroker, serverURL, processes=1, connections=1)
    await broker.pid()
    # Holds the one worker until the test cancels it, with every call queued.
    blocker = broker.sleep(30)
    order: list[str] = []

    def call(name: str, **kw: Any) -> Deferred[Any]:
        return broker.echo(name, **kw).addCallback(order.append)

    ds = [
        call("last", doLast=True),
        call("n10a", niceness=10),
        call("n0", niceness=0),
        call("n-10", niceness=-10),
        call("n10b", niceness=10),
        call("next", doNext=True),
    ]
    await until(lambda: activeSleeps(serverURL) == 1)
    assert order == []
    blocker.cancel()
    with pytest.raises(CancelledError):
        await blocker
    await gatherResults(ds)
    assert order == ["next", "n-10", "n0", "n10a", "n10b", "last"]


async def test_cancelRunning(serverURL: str, brokers: Any) -> None:
    """
    Cancelling a running call stops its query in the worker process at the
    driver, without killing the process; a timeout does the same.
    """
    broker = brokers(MultiBroker, serverURL, processes=1)
    pid = await broker.pid()
    d = broker.sleep(30)
    await until(lambda: activeSleeps(serverURL) == 1)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    with pytest.raises(TransactionTimeout):
        await broker.sleep(30, timeout=0.5)
    assert await broker.pid() == pid


async def test_countedOnceAndWaitedFor(serverURL: str, brokers: Any) -> None:
    """
    The parent's stats count each call once, however it ends, and shutdown
    waits for a running call (and the caller hears how it ended).
    """
    broker = brokers(MultiBroker, serverURL, processes=1)
    await broker.waitUntilRunning()
    before = broker.stats()
    assert await broker.echo("a") == "a"
    with pytest.raises(ValueError, match="boom"):
        await broker.fail("boom")
    d = broker.sleep(30)
    await until(lambda: activeSleeps(serverURL) == 1)
    stopping = broker.shutdown()
    await settle()
    assert not stopping.called
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    await stopping
    after = broker.stats()
    assert (
        after.committed - before.committed,
        after.failed - before.failed,
        after.cancelled - before.cancelled,
    ) == (1, 1, 1)


async def test_retriesRunInTheWorker(serverURL: str, brokers: Any) -> None:
    """
    retries= applies in the worker process, with or without a timeout; the
    parent never retries on top of it.
    """
    broker = brokers(MultiBroker, serverURL, processes=1)
    assert await broker.flaky(2, retries=3) == 3
    with pytest.raises(OperationalError, match="simulated"):
        await broker.flaky(5, retries=1)
    assert await broker.runCount() == 5
    assert await broker.flaky(7, retries=2, timeout=20) == 8


@pytest.mark.reactorTimeout(90)
async def test_killedWorker(serverURL: str, brokers: Any) -> None:
    """
    A worker process killed with SIGKILL fails the calls it held with
    WorkerError; the next call gets a new process.
    """
    broker = brokers(MultiBroker, serverURL, processes=1)
    pid = await broker.pid()
    d = broker.sleepThenPid(30)
    await until(lambda: activeSleeps(serverURL) == 1)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match=rf"\(pid {pid}\) ended"):
        await d
    newPid = await broker.pid()
    assert newPid != pid
    assert not psutil.pid_exists(pid)


async def test_shutdownStopsEveryProcess(serverURL: str) -> None:
    """
    After shutdown no worker process is left, even with a call under way
    when it was asked.
    """
    broker = MultiBroker(serverURL, processes=2)
    await broker.waitUntilRunning()
    pids = broker._pool.pids()
    assert len(pids) == 2
    d = broker.sleepThenPid(1)
    await until(lambda: activeSleeps(serverURL) == 1)
    await broker.shutdown()
    assert await d in pids
    alive = [p for p in pids if psutil.pid_exists(p)]
    assert alive == []
    children = psutil.Process().children(recursive=True)
    assert not [c for c in children if "multicore._child" in " ".join(c.cmdline())]


def _threadCPUs(pid: int) -> set[frozenset[int]]:
    # The CPUs each thread of process pid may run on.
    return {
        frozenset(os.sched_getaffinity(int(tid)))
        for tid in os.listdir(f"/proc/{pid}/task")
    }


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs",
)
@pytest.mark.parametrize("setting", ["1", "0"])
async def test_workersKeptOnACPU(
    serverURL: str, setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Told to (or by default, when they fill the cores), each worker process
    keeps to a CPU of its own, and so does every thread it starts; told not
    to, they may run wherever the parent may.
    """
    monkeypatch.setenv(PIN_ENV, setting)
    broker = MultiBroker(serverURL, processes=2, connections=2)
    await broker.waitUntilRunning()
    try:
        # (Every connection's thread started.)
        await gatherResults([broker.sleepThenPid(0.2) for _ in range(4)])
        perProcess = [_threadCPUs(pid) for pid in broker._pool.pids()]
        assert len(perProcess) == 2
        if setting == "0":
            assert perProcess == [{frozenset(os.sched_getaffinity(0))}] * 2
            return
        for threads in perProcess:
            assert len(threads) == 1 and len(next(iter(threads))) == 1
        assert perProcess[0] != perProcess[1]
    finally:
        await broker.shutdown()


async def test_startupFailsInTheWorkers(serverURL: str) -> None:
    """
    A startup() that fails in the worker processes fails the broker's start
    with StartupError naming the cause; shutdown leaves no process behind.
    """
    broker = FailingBroker(serverURL, processes=2)
    with pytest.raises(StartupError, match="no database for you"):
        await broker.waitUntilRunning()
    with pytest.raises(StartupError):
        await broker.pid()
    await broker.shutdown()
    assert broker._pool.pids() == []
    children = psutil.Process().children(recursive=True)
    assert not [c for c in children if "multicore._child" in " ".join(c.cmdline())]


async def test_workersRunThisSasync(
    serverURL: str, brokers: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The worker processes run the sasync the parent runs, even when the
    current directory holds another one (a source checkout, say).
    """
    other = tmp_path / "sasync"
    other.mkdir()
    (other / "__init__.py").write_text("raise ImportError('another sasync')\n")
    monkeypatch.chdir(tmp_path)
    broker = brokers(MultiBroker, serverURL, processes=1)
    assert await broker.echo("hello") == "hello"
