"""
The benchmark's lag probe: what it records besides the lag (the loop
thread's wait for a CPU, the garbage collector's full collections), and
how runs are summarised. No reactor runs: the probe's parts are driven
by hand.
"""

from __future__ import annotations

import gc
import sys

from twisted.trial.unittest import SynchronousTestCase

from bench.lag import FullCollections, RunQueueWait, lagStats
from bench.stats import summariseVariant


class LagStatsTests(SynchronousTestCase):
    """
    L{lagStats} and the per-variant summary of its fields.
    """

    def test_plain(self) -> None:
        """
        Without causes, only the lag's own fields are there.
        """
        stats = lagStats([0.0, 0.001, 0.002])
        self.assertEqual(stats["over5Ms"], 0)
        self.assertEqual(stats["samples"], 3)
        self.assertEqual(stats["maxMs"], 2.0)
        self.assertNotIn("p99NetMs", stats)
        self.assertNotIn("gcFull", stats)

    def test_causes(self) -> None:
        """
        Net lags give C{p99NetMs}; full collections give their count and
        the longest, in milliseconds.
        """
        stats = lagStats([0.0, 0.02], [0.0, 0.003], [0.05, 0.01])
        self.assertEqual(stats["over5Ms"], 1)
        self.assertEqual(stats["p99Ms"], 20.0)
        self.assertEqual(stats["p99NetMs"], 3.0)
        self.assertEqual((stats["gcFull"], stats["gcFullMaxMs"]), (2, 50.0))

    def test_summary(self) -> None:
        """
        The summary of a variant's runs takes the median net p99 and count
        of full collections, and the longest pause of any run; runs that
        lack them (older results) leave them out.
        """

        def run(net: float, full: int, longest: float) -> dict[str, object]:
            lag = lagStats([0.0, 0.01], [0.0, net], [longest] * full)
            return {"rate": 1.0, "seconds": 1.0, "lag": lag}

        summary = summariseVariant([run(0.001, 1, 0.02), run(0.003, 3, 0.04)])
        lag = summary["lag"]
        self.assertEqual(lag["p99NetMs"], 2.0)
        self.assertEqual(lag["gcFull"], 2)
        self.assertEqual(lag["gcFullMaxMs"], 40.0)
        old = {"rate": 1.0, "seconds": 1.0, "lag": lagStats([0.0, 0.01])}
        self.assertNotIn("p99NetMs", summariseVariant([old])["lag"])


class CauseTests(SynchronousTestCase):
    """
    The two causes a probe records.
    """

    def test_fullCollections(self) -> None:
        """
        Full collections between C{start} and C{stop} are recorded, younger
        ones are not, and none after C{stop}.
        """
        collections = FullCollections()
        collections.start()
        gc.collect(0)
        gc.collect(2)
        pauses = collections.stop()
        gc.collect(2)
        self.assertEqual(len(pauses), 1)
        self.assertGreaterEqual(pauses[0], 0.0)
        self.assertNotIn(collections._callback, gc.callbacks)

    def test_runQueueWait(self) -> None:
        """
        On Linux the wait for a CPU is a total that never goes down;
        elsewhere it is unknown.
        """
        wait = RunQueueWait()
        self.addCleanup(wait.close)
        first = wait.read()
        if not sys.platform.startswith("linux"):
            self.assertIsNone(first)
            return
        assert first is not None
        second = wait.read()
        assert second is not None
        self.assertGreaterEqual(second, first)
