"""
L{Listener}'s reactor side, deterministic: no thread runs (a fake starter
keeps it), and the test plays the listener thread's C{callFromThread}
calls itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as SA
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from sasync import Backoff
from sasync.notifications import Listener, ListenerSet, checkChannel, checkPayload


class Callback:
    """
    Keeps payloads and counts C{onReconnect()} calls.
    """

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.reconnected = 0

    def __call__(self, payload: str) -> None:
        self.payloads.append(payload)

    def onReconnect(self) -> None:
        self.reconnected += 1


class ListenerTests(SynchronousTestCase):
    """
    What the reactor thread does with what the listener thread reports.
    """

    def setUp(self) -> None:
        self.started: list[tuple[Callable[[], None], str]] = []
        self.ended: list[Listener] = []
        self.callback = Callback()
        self.listener = Listener(
            SA.create_engine("postgresql+psycopg2://nobody@nowhere/x"),
            "events",
            self.callback,
            backoff=Backoff(),
            reactor=object(),
            onEnded=self.ended.append,
            startThread=lambda f, name: self.started.append((f, name)),
        )

    def tearDown(self) -> None:
        # What the listener thread closes as it ends (no thread ran here).
        self.listener._wakeReader.close()
        self.listener._wakeWriter.close()
        self.listener._engine.dispose()

    def test_firesOnceListening(self) -> None:
        """
        start() starts one named thread; its Deferred fires with the
        listener when the thread reports LISTEN active, not before.
        """
        d = self.listener.start()
        self.assertEqual([name for _, name in self.started], ["sasync listener events"])
        self.assertNoResult(d)
        self.listener._listening(True)
        self.assertIs(self.successResultOf(d), self.listener)
        self.assertTrue(self.listener.active)

    def test_deliversInOrderThenReconnects(self) -> None:
        """
        Batches are delivered one payload at a time, in order; listening
        again after a loss calls onReconnect() and counts it.
        """
        self.listener.start()
        self.listener._listening(True)
        self.listener._deliver(["1", "2"])
        self.listener._lost("terminating connection")
        self.assertFalse(self.listener.active)
        self.listener._listening(False)
        self.listener._deliver(["3"])
        self.assertEqual(self.callback.payloads, ["1", "2", "3"])
        self.assertEqual((self.callback.reconnected, self.listener.reconnects), (1, 1))
        self.assertTrue(self.listener.active)

    def test_stopEndsDeliveries(self) -> None:
        """
        After stop() nothing more is delivered; its Deferred fires once the
        thread has ended, and the owner hears of the end; a later stop()
        fires at once.
        """
        self.listener.start()
        self.listener._listening(True)
        d = self.listener.stop()
        self.listener._deliver(["late"])
        self.assertEqual(self.callback.payloads, [])
        self.assertNoResult(d)
        self.listener._end()
        self.successResultOf(d)
        self.assertEqual(self.ended, [self.listener])
        self.successResultOf(self.listener.stop())

    def test_cancelStartStops(self) -> None:
        """
        Cancelling start()'s Deferred stops the listener (CancelledError),
        and a LISTEN reported afterwards changes nothing.
        """
        d = self.listener.start()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.listener._listening(True)
        self.assertFalse(self.listener.active)
        self.listener._end()

    def test_firstConnectionFails(self) -> None:
        """
        The first connection attempt's error fails start()'s Deferred.
        """
        d = self.listener.start()
        self.listener._failedToStart(OSError("no server"))
        self.failureResultOf(d, OSError)
        self.listener._end()

    def test_stopAll(self) -> None:
        """
        ListenerSet.stopAll() fires once every listener has ended; one
        stopped before LISTEN was active fails its start with
        CancelledError.
        """
        listeners = ListenerSet()
        listeners.add(self.listener)
        started = self.listener.start()
        d = listeners.stopAll()
        self.assertNoResult(d)
        self.listener._end()
        self.successResultOf(d)
        self.failureResultOf(started, CancelledError)


@pytest.mark.parametrize("channel", ["", 7, "x" * 64, "a\0b"])
def test_badChannel(channel: Any) -> None:
    """
    Channels PostgreSQL would refuse are refused first, named.
    """
    with pytest.raises(ValueError, match="channel"):
        checkChannel(channel)


def test_payloads() -> None:
    """
    Payloads are strings under 8000 bytes (counted in UTF-8).
    """
    assert checkPayload("é" * 3999) == "é" * 3999
    with pytest.raises(ValueError, match="at most 7999"):
        checkPayload("é" * 4000)
    with pytest.raises(ValueError, match="not a string"):
        checkPayload(b"bytes")
