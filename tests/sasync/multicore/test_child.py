"""
The worker process's side of a multicore broker, in-process: its
L{BrokerServer} with a Clock for a reactor and a real pipe to the "parent".
"""

from __future__ import annotations

import contextlib
import os

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sasync.multicore._child import BrokerServer
from sasync.multicore._wire import HEADER, VALUE


class BrokerServerSendTests(SynchronousTestCase):
    """
    How L{BrokerServer.send} writes replies: at once with no other call
    running, else together at the end of the reactor turn.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.fromChild, wireOut = os.pipe()
        os.set_blocking(self.fromChild, False)
        self.addCleanup(os.close, self.fromChild)
        self.addCleanup(os.close, wireOut)
        self.server = BrokerServer(self.clock, wireOut)

    def written(self) -> list[tuple[int, int, bytes]]:
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fromChild, 65536):
                data += chunk
        out = []
        while data:
            size, rid, kind = HEADER.unpack_from(data)
            out.append((kind, rid, data[HEADER.size : HEADER.size + size]))
            data = data[HEADER.size + size :]
        return out

    def test_aloneAtOnce(self) -> None:
        """
        A reply with no other call running is written at once, with no
        timer for the end of the turn.
        """
        self.server.send(VALUE, 1, b"x")
        self.assertEqual(self.written(), [(VALUE, 1, b"x")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_othersRunningTogether(self) -> None:
        """
        While another call runs, replies wait for the end of the turn and
        go out together, in order; the next one alone goes out at once.
        """
        self.server.calls[2] = Deferred()
        self.server.send(VALUE, 1, b"x")
        self.server.send(VALUE, 3, b"y")
        self.assertEqual(self.written(), [])
        self.clock.advance(0)
        self.assertEqual(self.written(), [(VALUE, 1, b"x"), (VALUE, 3, b"y")])
        del self.server.calls[2]
        self.server.send(VALUE, 2, b"z")
        self.assertEqual(self.written(), [(VALUE, 2, b"z")])

    def test_queuedFirst(self) -> None:
        """
        A reply sent once the others have ended, while earlier ones still
        wait for the end of the turn, goes out after them.
        """
        self.server.calls[2] = Deferred()
        self.server.send(VALUE, 1, b"x")
        del self.server.calls[2]
        self.server.send(VALUE, 2, b"y")
        self.assertEqual(self.written(), [])
        self.clock.advance(0)
        self.assertEqual(self.written(), [(VALUE, 1, b"x"), (VALUE, 2, b"y")])
