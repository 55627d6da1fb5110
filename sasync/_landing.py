"""
L{Lander}: lands a store's L{WriteUnit}s in the database, so that every
accepted write is either stored or reported lost, and one bad write never
takes its neighbours down with it.

  - A transaction that failed because the connection was lost, could not
    be made, or the database rolled it back (a deadlock, a serialization
    failure) runs again, after a wait (the broker's L{Backoff}), for up to
    C{retryTime} seconds counted from the store's first failure since its
    last success: a server restart or a failover costs a wait, not data.
    This is safe because a batch unit is idempotent (it sets, deletes or
    clears; running it twice is running it once, and no other unit of the
    store runs meanwhile), so even a unit whose COMMIT was in flight when
    the connection died may run again. An insert unit runs again only where
    it surely did not commit.
  - A batch the database refuses for another reason (a value too big, a
    constraint) is split in halves, again and again, until only the keys
    it refuses are left; those are lost, the rest stored. A batch that
    loses its connection every time it is sent, while connections open
    fine (what MySQL/MariaDB do with a value over C{max_allowed_packet}),
    is split the same way.

Reactor thread only: attempts are started and their Deferreds fired there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Generic

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._writes import K, WriteUnit
from .retry import LOST, Backoff, retryReason

log = Logger()

Entries = Sequence[tuple[K, "bytes | None"]]

WRITE_RETRY_TIME: Final = 60.0
"""
The default of a store's C{writeRetryTime}: for how many seconds of failed
attempts (a server down, restarting, failing over) write-behind keeps
trying before it reports the writes lost.
"""

LOST_DURING_COMMIT: Final = "connection lost during COMMIT of an idempotent write"
"""
Why a batch unit runs again whose COMMIT's outcome is unknown.
"""

SPLIT_AFTER_LOSSES: Final = 2
GIVE_UP_AFTER_LOSSES: Final = 3
"""
A batch of several keys that lost its connection this many times in a row
(the connection having opened fine each time) is split; a single key, given
up on (see the module docstring).
"""


def checkRetryTime(retryTime: object) -> float:
    """
    @return: C{retryTime}, a store's C{writeRetryTime}.
    @raise ValueError: it is not a number >= 0.
    """
    if (
        not isinstance(retryTime, int | float)
        or isinstance(retryTime, bool)
        or not 0 <= retryTime < float("inf")
    ):
        raise ValueError(f"writeRetryTime={retryTime!r}: not a number of seconds >= 0")
    return float(retryTime)


def _failure(e: BaseException) -> Failure:
    return Failure(e, type(e), e.__traceback__)  # type: ignore[no-untyped-call]


class _Pieces(Exception):
    """
    Raised by L{Lander._attempt}: the piece keeps losing its connection
    while connections open fine; split it.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Lander(Generic[K]):
    """
    Lands units, one at a time (the L{WriteSequencer} runs one at a time).

    @ivar retried: How many attempts were run again (a counter for tests
        and figures).
    @ivar split: How many times a batch was split.
    """

    def __init__(
        self,
        write: Callable[[bool, Entries[K], bool], Deferred[None]],
        *,
        backoff: Backoff,
        retryTime: float,
        clock: Callable[[], IReactorTime],
        isMySQL: Callable[[], bool] = lambda: False,
    ) -> None:
        """
        @param write: runs one transaction: C{write(clearFirst, entries,
            insert)} (an entry's value C{None}: delete the key).
        @param backoff: the waits between attempts.
        @param retryTime: seconds of failed attempts after which a write
            that failed for want of a connection is given up (0: at once).
        @param clock: gives the clock (resolved lazily).
        @param isMySQL: whether the database is MySQL/MariaDB (for the note
            on a key given up on).
        """
        self._write = write
        self._backoff = backoff
        self._retryTime = checkRetryTime(retryTime)
        self._clock = clock
        self._isMySQL = isMySQL
        # Store-wide: since when (clock seconds) attempts have failed for
        # want of a connection, and how many in a row; None, 0: the last
        # attempt succeeded.
        self._troubleSince: float | None = None
        self._failures = 0
        self.retried = 0
        self.split = 0

    def land(self, unit: WriteUnit[K]) -> Deferred[dict[K, Failure]]:
        """
        Write C{unit}.

        @return: a Deferred firing with the keys of C{unit} that were not
            stored, and why (empty: all were); or failing if nothing of it
            was: an insert unit that failed, or a clear that failed.
        """
        return Deferred.fromCoroutine(self._land(unit))

    async def _land(self, unit: WriteUnit[K]) -> dict[K, Failure]:
        if unit.insert:
            entries = list(unit.entries.items())
            try:
                await self._attempt(False, entries, True)
            except _Pieces as e:
                raise self._givenUp(e.error, entries[0][0]) from None
            return {}
        lost: dict[K, Failure] = {}
        if not unit.clearFirst:
            await self._landPiece(list(unit.entries.items()), lost)
            return lost
        # The clear deletes every key: deleting one first is nothing.
        entries = [(k, v) for k, v in unit.entries.items() if v is not None]
        try:
            await self._attempt(True, entries, False)
            return {}
        except _Pieces:
            pass
        except SQLAlchemyError as e:
            if self._connectionTrouble(e, idempotent=True) is not None:
                raise  # Given up after retryTime: nothing of it landed.
        # Alone, and first: if the clear fails, the unit fails.
        try:
            await self._attempt(True, [], False)
        except _Pieces as e:
            raise e.error from None
        await self._landPiece(entries, lost)
        return lost

    async def _landPiece(self, entries: Entries[K], lost: dict[K, Failure]) -> None:
        # Land entries in one transaction, or split them while the database
        # refuses them; note in lost what could not be stored.
        pieces = False
        try:
            await self._attempt(False, entries, False)
            return
        except _Pieces as e:
            error, splittable, pieces = e.error, True, True
        except Exception as e:
            error = e
            splittable = (
                isinstance(e, SQLAlchemyError)
                and self._connectionTrouble(e, idempotent=True) is None
            )
        if splittable and len(entries) > 1:
            self.split += 1
            middle = len(entries) // 2
            await self._landPiece(entries[:middle], lost)
            await self._landPiece(entries[middle:], lost)
            return
        if pieces:
            error = self._givenUp(error, entries[0][0])
        failure = _failure(error)
        for key, _ in entries:
            lost[key] = failure

    def _givenUp(self, error: BaseException, key: K) -> BaseException:
        # A key alone that lost its connection every time it was sent.
        error.add_note(
            f"The connection was lost each of the {GIVE_UP_AFTER_LOSSES} times"
            f" the write of {key!r} was sent, while new connections opened"
            " fine: it was given up."
            + (
                " MySQL/MariaDB close the connection on a statement bigger"
                " than max_allowed_packet."
                if self._isMySQL()
                else ""
            )
        )
        return error

    async def _attempt(
        self, clearFirst: bool, entries: Entries[K], insert: bool
    ) -> None:
        """
        Run one transaction, again while it fails for want of a connection
        (or a rolled-back one) and C{retryTime} allows.

        @raise _Pieces: it lost its connection L{SPLIT_AFTER_LOSSES} times
            in a row (L{GIVE_UP_AFTER_LOSSES} for a single key).
        """
        losses = 0
        limit = GIVE_UP_AFTER_LOSSES if len(entries) == 1 else SPLIT_AFTER_LOSSES
        while True:
            try:
                await self._write(clearFirst, entries, insert)
            except Exception as e:
                reason = self._connectionTrouble(e, idempotent=not insert)
                if reason is None:
                    raise
                losses = losses + 1 if reason in (LOST, LOST_DURING_COMMIT) else 0
                # (A clear alone has no data to blame.)
                if losses >= limit and entries:
                    raise _Pieces(e) from e
                now = self._clock().seconds()
                if self._troubleSince is None:
                    self._troubleSince = now
                self._failures += 1
                if now - self._troubleSince >= self._retryTime:
                    e.add_note(
                        f"Write-behind gave up after {now - self._troubleSince:.1f} s"
                        f" of failed attempts (writeRetryTime={self._retryTime:g})"
                    )
                    raise
                self.retried += 1
                delay = self._backoff.delay(self._failures, reason)
                log.info(
                    "A write of a store failed ({reason}); it runs again in"
                    " {delay:.3f} s",
                    reason=reason,
                    delay=delay,
                )
                await deferLater(self._clock(), delay, lambda: None)
            else:
                self._troubleSince = None
                self._failures = 0
                return

    @staticmethod
    def _connectionTrouble(e: BaseException, idempotent: bool) -> str | None:
        # Why a failed transaction may simply run again, or None.
        reason = retryReason(e)
        if reason is not None:
            return reason
        if idempotent and isinstance(e, DBAPIError) and e.connection_invalidated:
            return LOST_DURING_COMMIT
        return None


__all__ = ["WRITE_RETRY_TIME", "Lander", "checkRetryTime"]
