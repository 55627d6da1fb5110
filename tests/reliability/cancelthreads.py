"""
A process that cancels running queries, shuts its broker down and reports
the threads left, for the thread-leak test: C{python -m
tests.reliability.cancelthreads URL}. A process of its own, so that no
earlier test has started the reactor's thread pool already. Prints C{left}
and the names of the threads started since the broker was made and still
alive after its shutdown.
"""

from __future__ import annotations

import contextlib
import sys
import threading

from twisted.internet import defer

#: Running sleeps cancelled at once (each cancel sends KILL QUERY on
#: MySQL/MariaDB).
SLEEPS = 4


async def cancelThenShutdown(url: str) -> None:
    """
    Cancel L{SLEEPS} running sleeps, shut down, report what threads are left.
    """
    from tests.reliability.helpers import Ledger, activeSleeps, sleepSQL, until

    before = set(threading.enumerate())
    broker = Ledger(url, connections=SLEEPS)
    await broker.waitUntilRunning()
    sleeps = [broker.writeThenSleep(f"s{i}", sleepSQL(url, 30)) for i in range(SLEEPS)]
    await until(lambda: activeSleeps(url) == SLEEPS)
    for d in sleeps:
        d.cancel()
    await defer.DeferredList(sleeps, consumeErrors=True)
    await until(lambda: activeSleeps(url) == 0)
    await broker.shutdown()

    def left() -> list[str]:
        return sorted(t.name for t in set(threading.enumerate()) - before)

    with contextlib.suppress(TimeoutError):  # (Reported below.)
        await until(lambda: not left(), timeout=10)
    sys.stdout.write(f"left {' '.join(left())}\n")
    sys.stdout.flush()


def main() -> None:
    """
    Run L{cancelThenShutdown}.
    """
    from twisted.internet import task

    task.react(lambda _: defer.Deferred.fromCoroutine(cancelThenShutdown(sys.argv[1])))


if __name__ == "__main__":
    main()
