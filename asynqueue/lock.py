"""
L{DeferredLock}: a Deferred-based mutex where VIPs go to the front.

Reactor thread only: the lock is acquired, released and waited for there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed

from .moved import goneAttributes


class DeferredLock:
    """
    A lock for code running in the reactor: L{acquire} returns a Deferred
    that fires (with the lock) once the caller holds it.

    Waiters get the lock first in, first out, except that a waiter that
    asked with C{vip=True} goes ahead of every non-VIP waiter (and after
    the VIPs already waiting). The holder is never preempted.

    Not reentrant: a holder that acquires again waits for itself forever.
    """

    if not TYPE_CHECKING:  # (mypy would take any attribute then.)
        __getattr__ = goneAttributes(
            "DeferredLock",
            {
                "addStopper": "run the clean-up with lock.run(f, *args, **kw),"
                " which calls it once every holder and waiter ahead is done,"
                " holding the lock",
                "stop": "lock.run(f) runs a clean-up once every holder and"
                " waiter ahead is done (what stop() did with the stoppers);"
                " lock.acquireAndRelease() only waits for them",
            },
        )

    def __init__(self) -> None:
        self.locked = False
        self._vips: deque[Deferred[DeferredLock]] = deque()
        self._others: deque[Deferred[DeferredLock]] = deque()

    def __repr__(self) -> str:
        state = "locked" if self.locked else "unlocked"
        return f"<DeferredLock {state}, {self.waiting()} waiting>"

    def waiting(self) -> int:
        """
        How many acquisitions are waiting for the lock.
        """
        return len(self._vips) + len(self._others)

    def acquire(self, vip: bool = False) -> Deferred[DeferredLock]:
        """
        Ask for the lock.

        @param vip: Go ahead of every waiter that is not a VIP.
        @return: A Deferred firing with this lock once the caller holds it.
            Cancelling it before then withdraws the request (it fails
            with C{CancelledError}); after, it does nothing, and the
            caller must still L{release}.
        """
        if not self.locked:
            self.locked = True
            return succeed(self)
        d: Deferred[DeferredLock] = Deferred(self._withdraw)
        (self._vips if vip else self._others).append(d)
        return d

    def acquireAndRelease(self, vip: bool = False) -> Deferred[None]:
        """
        Wait for the lock and let go of it at once: a Deferred firing (with
        C{None}) once every holder and waiter ahead of the caller is done.

        @param vip: As for L{acquire}.
        """
        d = self.acquire(vip)
        d.addCallback(DeferredLock.release)
        return d  # type: ignore[return-value]

    def _withdraw(self, d: Deferred[DeferredLock]) -> None:
        for waiters in (self._vips, self._others):
            if d in waiters:
                waiters.remove(d)
                return

    def release(self) -> None:
        """
        Let go of the lock, handing it to the next waiter, if any.

        @raise RuntimeError: the lock is not held.
        """
        if not self.locked:
            raise RuntimeError("release of an unlocked DeferredLock")
        waiters = self._vips or self._others
        if waiters:
            # The lock passes straight to the next waiter: it stays locked.
            waiters.popleft().callback(self)
        else:
            self.locked = False

    def run(self, f: Callable[..., Any], *args: Any, **kw: Any) -> Deferred[Any]:
        """
        Call C{f(*args, **kw)} while holding the lock (not as a VIP),
        releasing it when the call is done, even if it failed. C{f} may
        return a Deferred or be a coroutine function.

        @return: A Deferred with C{f}'s result.
        """

        def locked(_: DeferredLock) -> Deferred[Any]:
            return maybeDeferred(f, *args, **kw).addBoth(unlock)

        def unlock(result: object) -> object:
            self.release()
            return result

        return self.acquire().addCallback(locked)


__all__ = ["DeferredLock"]
