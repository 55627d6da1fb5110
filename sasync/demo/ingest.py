"""
Log records into the database through the L{LogBroker}, in batches.

Each batch is one transaction, L{LogBroker.setEntries}: the entries, and the
indexed values among them that the broker's id cache does not know yet
(fewer and fewer as the common values get known). Batches commit in order,
so an interrupted ingestion leaves a prefix of the log committed and nothing
half-written. With a C{source}, each batch also records how many records of
that source are committed (L{LogBroker.resumePoint}), in its own
transaction: the next ingestion of the same source skips them and carries
on.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .logbroker import INDEXED_VALUES, LogBroker
from .logparse import Record

#: Rows per setEntries transaction.
DEFAULT_BATCH = 2000


@dataclass
class IngestResult:
    """
    What an ingestion did.

    @ivar rows: Entries committed.
    @ivar batches: Transactions of entries committed.
    @ivar interrupted: Whether it stopped before the end of the records.
    @ivar resumedAt: Records skipped, committed by an earlier run.
    """

    rows: int = 0
    batches: int = 0
    interrupted: bool = False
    resumedAt: int = 0


def prepareBatch(
    broker: LogBroker, records: list[Record]
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """
    The entries for C{records}, for L{LogBroker.setEntries}: each indexed
    value as its cached id when there is one, else as the value itself,
    listed among the new values (once per table).

    Reactor thread only (it reads the broker's id cache).
    """
    cache = broker.idTable
    new: dict[str, dict[str, None]] = {name: {} for name in INDEXED_VALUES}
    entries = []
    for r in records:
        entry: dict[str, Any] = {
            "dt": r.dt,
            "ip": r.ip,
            "method": r.method,
            "status": r.status,
            "size": r.size,
        }
        for name in INDEXED_VALUES:
            value = getattr(r, name)
            ID = cache[name].get(value)
            if ID is None:
                entry[name] = value
                new[name][value] = None
            else:
                entry[f"id_{name}"] = ID
        entries.append(entry)
    return entries, {name: list(values) for name, values in new.items() if values}


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
    source: str | None = None,
    resumeAt: int | None = None,
) -> IngestResult:
    """
    Write C{records} to the database in batches of C{batchSize}, one
    transaction each, in order.

    Parsing (pulling from C{records}) happens here in the reactor thread,
    between transactions rather than during them: both are Python work that
    would only take turns at the GIL, and a worker thread waiting for the GIL
    while the reactor thread parses makes each transaction much slower.

    @param onProgress: Called with the rows committed after each batch.
    @param shouldStop: Asked before each batch; C{True} ends the ingestion
        there (what was committed stays).
    @param source: What C{records} are (the same for the same records in
        the same order): if an earlier ingestion of it was interrupted, the
        records it committed are skipped.
    @param resumeAt: How many that is, if the caller asked already
        (L{LogBroker.resumePoint}).
    """
    result = IngestResult()
    if source is not None:
        if resumeAt is None:
            resumeAt = await broker.resumePoint(source)
        result.resumedAt = resumeAt
        records = itertools.islice(records, result.resumedAt, None)
    for batch in _batches(records, batchSize):
        if shouldStop():
            result.interrupted = True
            break
        entries, newValues = prepareBatch(broker, batch)
        done = result.resumedAt + result.rows + len(entries)
        progress = None if source is None else (source, done)
        broker.rememberIDs(await broker.setEntries(entries, newValues, progress))
        result.rows += len(entries)
        result.batches += 1
        if onProgress is not None:
            onProgress(result.rows)
    if source is not None and not result.interrupted:
        await broker.finishIngest(source)
    return result
