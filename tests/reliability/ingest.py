"""
A process that ingests batches of rows until it is killed, for the kill -9
test: C{python -m tests.reliability.ingest URL}. Prints C{ready} once the
broker runs, then C{ack N} once batch N (C{BATCH} rows in one transaction)
is committed. Four batches are in flight at any time.
"""

from __future__ import annotations

import sys

from twisted.internet import defer

BATCH = 200
IN_FLIGHT = 4


def say(line: str) -> None:
    """
    One line to the parent, at once.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def ingest(url: str) -> None:
    """
    Write batches forever.
    """
    from tests.reliability.helpers import Ledger

    broker = Ledger(url)
    await broker.waitUntilRunning()
    say("ready")
    slots = defer.DeferredSemaphore(IN_FLIGHT)
    batch = 0
    while True:
        await slots.acquire()

        def acked(result: object, n: int = batch) -> object:
            say(f"ack {n}")
            slots.release()
            return result

        broker.writeBatch(batch, BATCH).addCallback(acked)
        batch += 1


def main() -> None:
    """
    Run L{ingest} until killed.
    """
    from twisted.internet import reactor, task

    task.react(lambda _: defer.Deferred.fromCoroutine(ingest(sys.argv[1])))
    del reactor


if __name__ == "__main__":
    main()
