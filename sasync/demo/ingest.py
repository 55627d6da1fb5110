"""
Log records into the database through the L{LogBroker}, in batches.

Each batch is two kinds of transaction: L{LogBroker.setNameValues} for the
indexed values not yet in the id cache (usually none, once the common values
are known) and one L{LogBroker.setEntries}. The next batch is parsed while
the previous one's transaction runs in its worker thread, and batches commit
in order, so an interrupted ingestion leaves a prefix of the log committed
and nothing half-written.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .logbroker import INDEXED_VALUES, LogBroker
from .logparse import Record

log = Logger()

#: Rows per setEntries transaction.
DEFAULT_BATCH = 2000


@dataclass
class IngestResult:
    """
    What an ingestion did.

    @ivar rows: Entries committed.
    @ivar batches: Transactions of entries committed.
    @ivar interrupted: Whether it stopped before the end of the records.
    """

    rows: int = 0
    batches: int = 0
    interrupted: bool = False


async def _entriesFor(broker: LogBroker, records: list[Record]) -> list[dict[str, Any]]:
    """
    The rows for C{records}, with the ids of their indexed values (asking the
    broker only for values not cached yet).
    """
    ids = {}
    for name in INDEXED_VALUES:
        ids[name] = await broker.idsFor(name, (getattr(r, name) for r in records))
    vhosts, urls, referrers, agents = (ids[name] for name in INDEXED_VALUES)
    return [
        {
            "dt": r.dt,
            "ip": r.ip,
            "method": r.method,
            "status": r.status,
            "size": r.size,
            "id_vhost": vhosts[r.vhost],
            "id_url": urls[r.url],
            "id_referrer": referrers[r.referrer],
            "id_useragent": agents[r.useragent],
        }
        for r in records
    ]


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


async def ingest(
    broker: LogBroker,
    records: Iterable[Record],
    *,
    batchSize: int = DEFAULT_BATCH,
    onProgress: Callable[[int], None] | None = None,
    shouldStop: Callable[[], bool] = lambda: False,
) -> IngestResult:
    """
    Write C{records} to the database in batches of C{batchSize}.

    Parsing (pulling from C{records}) happens here in the reactor thread,
    overlapping the previous batch's transaction in its worker thread. At
    most one batch of entries is in flight, so batches commit in log order.

    @param onProgress: Called with the rows committed after each batch.
    @param shouldStop: Asked before each batch; C{True} ends the ingestion
        after the batch in flight commits (what was committed stays).
    """
    result = IngestResult()
    pending: Deferred[int] | None = None

    async def settle() -> None:
        nonlocal pending
        if pending is not None:
            d, pending = pending, None
            result.rows += await d
            result.batches += 1
            if onProgress is not None:
                onProgress(result.rows)

    try:
        for batch in _batches(records, batchSize):
            if shouldStop():
                result.interrupted = True
                break
            rows = await _entriesFor(broker, batch)
            await settle()
            if shouldStop():
                result.interrupted = True
                break
            pending = broker.setEntries(rows)
        await settle()
    finally:
        if pending is not None:
            # Leaving on an error: let the batch in flight finish (it commits
            # or rolls back whole) before the caller shuts the broker down.
            try:
                await pending
            except Exception:
                log.failure("the last batch of entries failed")
    return result
