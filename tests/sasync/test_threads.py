"""
The thread rule: a broker's public methods are called from the reactor
thread (Deferreds live there). From any other thread, while the reactor
runs, they raise L{WrongThread} at once and run nothing; from inside a
transaction a C{@transact} call still runs inline; a fake reactor, or a
reactor that does not run yet, has no thread to guard.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import Deferred
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import blockingCallFromThread

from sasync import AccessBroker, transact
from sasync.connection import checkReactorThread
from sasync.errors import WrongThread
from sasync.stores import Items, PersistentArray, PersistentDict
from tests.sasync.stores.storetools import stores

ROOT = Path(__file__).resolve().parents[2]


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class CountBroker(AccessBroker):
    """
    Counts the runs of its transactions, in the database.
    """

    runs: SA.Table

    async def startup(self) -> None:
        await self.table("runs", SA.Column("id", SA.Integer, primary_key=True))

    @transact
    def run(self) -> int:
        """
        Record one run; the number of runs so far.
        """
        self.conn.execute(self.runs.insert())
        return self._count()

    @transact
    def runTwice(self) -> int:
        """
        A nested call, from inside a transaction: runs inline.
        """
        self.run()
        return self.run()  # type: ignore[return-value]

    @transact
    def count(self) -> int:
        """
        The number of runs so far.
        """
        return self._count()

    def _count(self) -> int:
        counted = self.conn.execute(SA.select(SA.func.count()).select_from(self.runs))
        return int(counted.scalar_one())


async def inPlainThread(f: Callable[[], Any]) -> Any:
    """
    Call C{f} in a new plain C{threading.Thread} (not the reactor's, not
    a worker's); its result, or the exception it raised, comes back here
    without blocking the reactor.
    """
    done: Deferred[Any] = Deferred()
    reactor = _reactor()

    def run() -> None:
        try:
            result: Any = f()
        except BaseException as e:  # handed back to the test
            result = e
        reactor.callFromThread(done.callback, result)

    threading.Thread(target=run, name="plain-thread").start()
    return await done


async def test_refusedFromOtherThread(dbURL: str, brokers: Callable[..., Any]) -> None:
    """
    A C{@transact} call, C{table()}, C{deferToQueue()}, C{selectorator()}
    and C{shutdown()} from a plain thread raise L{WrongThread} there,
    naming the call and the way out (C{blockingCallFromThread}); the
    transaction never ran. From the reactor thread the same calls work,
    and C{blockingCallFromThread} from the plain thread works too.
    """
    broker = brokers(CountBroker, dbURL)
    await broker.waitUntilRunning()
    calls: dict[str, Callable[[], Any]] = {
        "CountBroker.run": broker.run,
        "CountBroker.table": lambda: broker.table(
            "more", SA.Column("id", SA.Integer, primary_key=True)
        ),
        "CountBroker.deferToQueue": lambda: broker.deferToQueue(int),
        "CountBroker.selectorator": lambda: broker.selectorator(SA.select(broker.runs)),
        "CountBroker.waitUntilRunning": broker.waitUntilRunning,
        "CountBroker.callWhenRunning": lambda: broker.callWhenRunning(int),
        "CountBroker.shutdown": broker.shutdown,
    }
    for name, call in calls.items():
        error = await inPlainThread(call)
        assert isinstance(error, WrongThread), (name, error)
        assert isinstance(error, RuntimeError)
        message = str(error)
        assert message.startswith(f"{name}() was called from thread 'plain-thread'")
        assert "blockingCallFromThread" in message
    assert broker.running
    assert not hasattr(broker, "more")
    assert await broker.count() == 0
    assert await broker.run() == 1
    assert (
        await inPlainThread(lambda: blockingCallFromThread(_reactor(), broker.run)) == 2
    )
    # Nesting, in the worker thread, still runs inline.
    assert await broker.runTwice() == 4


async def test_storesRefuseOtherThreads(sqliteURL: str) -> None:
    """
    The stores' reads, writes, C{deferToWrites()} and C{shutdown()} from a
    plain thread raise L{WrongThread} naming the store's method, before
    anything is queued; the store works on from the reactor thread.
    """
    items = Items("t", sqliteURL)
    array = PersistentArray("t", sqliteURL)
    mapping = PersistentDict("t", sqliteURL)
    async with stores(items, array, mapping):
        await items.waitUntilRunning()
        calls: dict[str, Callable[[], Any]] = {
            "Items.load": lambda: items.load("a"),
            "Items.loadAll": items.loadAll,
            "Items.names": items.names,
            "Items.update": lambda: items.update("a", 1),
            "Items.insert": lambda: items.insert("a", 1),
            "Items.delete": lambda: items.delete("a"),
            "Items.clear": items.clear,
            "Items.deferToWrites": items.deferToWrites,
            "Items.shutdown": items.shutdown,
            "PersistentArray.get": lambda: array.get(0, 0, 0),
            "PersistentArray.set": lambda: array.set(0, 0, 0, 1),
            "PersistentArray.delete": lambda: array.delete(0, 0, 0),
            "PersistentArray.clear": array.clear,
            "PersistentArray.waitUntilRunning": array.waitUntilRunning,
            # (A PersistentDict's methods are named by those of the Items
            # it keeps its items in.)
            "PersistentDict.update": lambda: mapping.__setitem__("a", 1),
            "PersistentDict.loadAll": mapping.preload,
        }
        for name, call in calls.items():
            error = await inPlainThread(call)
            assert isinstance(error, WrongThread), (name, error)
            assert str(error).startswith(f"{name}() was called from thread")
        assert await items.loadAll() == {}
        assert await array.get(0, 0, 0) is None
        await mapping.preload()
        assert dict(mapping) == {}
        await items.update("a", 2)
        mapping["b"] = 3
        await mapping.deferToWrites()
        assert await items.loadAll() == {"a": 2}
        # In preload mode, a refused change leaves the cache as it was.
        for name, call in {
            "PersistentDict.__delitem__": lambda: mapping.__delitem__("b"),
            "PersistentDict.pop": lambda: mapping.pop("b"),
            "PersistentDict.clear": mapping.clear,
        }.items():
            error = await inPlainThread(call)
            assert isinstance(error, WrongThread), (name, error)
            assert str(error).startswith(f"{name}() was called from thread")
        assert dict(mapping) == {"b": 3}


#: A program with its reactor in its main thread, as a service has it.
BEFORE_RUN = """
import sys, threading
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from sasync.errors import WrongThread
from tests.sasync.test_threads import CountBroker

broker = CountBroker(sys.argv[1])
# Before reactor.run(): no reactor thread yet, so any thread may call.
calls = [broker.run()]
side = threading.Thread(target=lambda: calls.append(broker.run()))
side.start()
side.join()

def fromThread():
    try:
        broker.run()
    except WrongThread as e:
        refused = type(e).__name__
    return refused, blockingCallFromThread(reactor, broker.run)

async def main():
    runs = [await d for d in calls]
    runs += await deferToThread(fromThread)
    print(sorted(map(str, runs)), await broker.count())
    await broker.shutdown()

def stop(result):
    if hasattr(result, "printTraceback"):
        result.printTraceback()
    reactor.stop()

reactor.callWhenRunning(lambda: ensureDeferred(main()).addBoth(stop))
reactor.run()
"""


def test_beforeReactorRuns(sqliteURL: str) -> None:
    """
    In a program whose reactor runs in its main thread: calls made before
    C{reactor.run()} (from any thread) are queued and run; once it runs, a
    call from another thread is refused, and C{blockingCallFromThread}
    from there works.
    """
    done = subprocess.run(
        [sys.executable, "-c", BEFORE_RUN, sqliteURL],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "['1', '2', '3', 'WrongThread'] 3", (
        done.stdout,
        done.stderr,
    )


def test_checkReactorThread(reactor: Any) -> None:
    """
    From pytest's thread (not the reactor's): the running reactor refuses;
    a reactor that does not run yet and a fake one (C{Clock}) accept, as
    they have no thread of their own.
    """
    assert reactor.running
    with pytest.raises(WrongThread, match=r"^Broker.call\(\) was called from"):
        checkReactorThread(reactor, lambda: "Broker.call")
    checkReactorThread(SelectReactor(), lambda: "Broker.call")
    checkReactorThread(Clock(), lambda: "Broker.call")
    fake = MemoryReactorClock()
    fake.running = True  # (Its run() stops it again at once.)
    checkReactorThread(fake, lambda: "Broker.call")
