"""
A program written for the original sAsync and AsynQueue, in their style: a
log-analyzer's broker and queue, with the original's import paths and
calls (the shapes issue 20 lists, from its author's log analyzer). Not a
test itself: L{tests.sasync.test_original_client} imports and runs it, and
counts what it needed changed (nothing).

Keep it in the original's spelling: it is the measure of the migration
path. Only the Python 3 syntax is new.
"""

from __future__ import annotations

import datetime
from typing import Any

import sqlalchemy as SA
from twisted.internet import defer

import asynqueue
from asynqueue import iteration, util
from asynqueue.info import showResult
from asynqueue.null import NullQueue
from sasync.database import AccessBroker, transact, wait


class IPRecorder(iteration.ListConsumer):
    """
    The original's consumer subclass: keywords become attributes, each row
    is processed (here later, through a Deferred) into the list.
    """

    def processItem(self, row: Any) -> Any:
        return defer.succeed(None).addCallback(lambda _: self.prefix + row[0])


class LogBroker(AccessBroker):
    """
    The original's broker: C{verbose} and C{spew} keywords, the engine
    reached through C{self.q.engine}, C{self.singleton}, a C{DeferredLock}
    of the original's C{util} module, C{selex} with a callable.
    """

    def __init__(self, url: str, verbose: bool = False, spew: bool = False) -> None:
        AccessBroker.__init__(self, url, verbose=verbose, spew=spew)
        self.flushLock = util.DeferredLock()
        self.dialect: str | None = None

    @defer.inlineCallbacks
    def startup(self) -> Any:
        yield self.table(
            "entries",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("dt", SA.DateTime),
            SA.Column("ip", SA.String(15)),
            index_dt=["dt"],
        )
        self.dialect = self.q.engine.dialect.name

    @transact
    def addEntry(self, dt: datetime.datetime, ip: str) -> None:
        self.conn.execute(self.entries.insert().values(dt=dt, ip=ip))

    @transact
    def entriesSince(self, dt: datetime.datetime) -> Any:
        t = self.entries
        return self.conn.execute(SA.select(t.c.ip).where(t.c.dt >= dt).order_by(t.c.id))

    @transact
    def purgeBefore(self, dt: datetime.datetime) -> int:
        with self.selex(self.entries.delete) as sh:
            sh.where(self.entries.c.dt < dt)
        return int(sh().rowcount)

    @wait
    def flush(self) -> Any:
        return self.flushLock.acquireAndRelease()

    @showResult
    def describe(self) -> str:
        return f"{self.dialect} single={self.singleton}"


@defer.inlineCallbacks
def analyze(url: str) -> Any:
    """
    The analyzer's run: fill, read back three ways, purge, with a
    C{NullQueue} for the reactor-side work. Fires with what it found.
    """
    q = NullQueue()
    broker = LogBroker(url, verbose=True, spew=False)
    yield broker.waitUntilRunning()
    start = datetime.datetime(2020, 1, 1)
    for i in range(6):
        yield broker.addEntry(start + datetime.timedelta(days=i), f"10.0.0.{i}")
    since = start + datetime.timedelta(days=2)

    recorder = IPRecorder(prefix="ip:")
    yield broker.entriesSince(since, consumer=recorder)
    recorded = yield recorder()

    dr = yield broker.entriesSince(since)
    producer = iteration.IterationProducer(dr)
    plain = asynqueue.ListConsumer()
    producer.registerConsumer(plain)
    yield producer.run()
    produced = yield plain()

    workers = len(q)
    doubled = yield q.call(lambda x: 2 * x, len(produced))
    purged = yield broker.purgeBefore(since)
    yield broker.flush()
    left = yield broker.entriesSince(start, asList=True)
    described = broker.describe()
    yield q.shutdown()
    yield broker.shutdown()
    return {
        "recorded": recorded,
        "produced": [row[0] for row in produced],
        "workers": workers,
        "doubled": doubled,
        "purged": purged,
        "left": len(left),
        "dialect": broker.dialect,
        "described": described,
    }
