"""
Trial support: a L{twisted.trial.unittest.TestCase} whose tests get new
databases and brokers that are shut down after each test.

Trial runs the global reactor itself, in its main thread, and waits for the
L{Deferred<twisted.internet.defer.Deferred>} or coroutine a test returns;
don't mix these tests with the pytest plugin's reactor thread in one
process (run them with C{trial} or C{python -m twisted.trial}).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, TypeVar

from twisted.trial import unittest

from ..broker import AccessBroker
from .brokers import SHUTDOWN_TIMEOUT, Brokers
from .databases import Databases
from .servers import ServerMissing

B = TypeVar("B", bound=AccessBroker)

# The servers of this process, found on first use.
_databases = Databases()


class BrokerTestCase(unittest.TestCase):
    """
    A trial test case with a new database per call of L{databaseURL} and
    brokers made by L{makeBroker}, all cleaned up after each test: the
    brokers are shut down first, then the databases dropped.
    """

    #: Seconds a broker's leftover work may run on after the test.
    brokerShutdownTimeout = SHUTDOWN_TIMEOUT

    def databaseURL(self, kindName: str | None = None) -> str:
        """
        A new, empty database for this test, dropped after it.

        @param kindName: C{"sqlite"}, C{"postgresql"} or C{"mysql"}; by
            default the kind C{SASYNC_TEST_DATABASE} chooses (a SQLite file
            unless it is set; see L{sasync.testing.databases}).
        @return: The database's URL.
        @raise twisted.trial.unittest.SkipTest: If the kind's server is
            missing (the test fails instead with C{SASYNC_TEST_REQUIRE_ALL=1}).
        """
        stack = ExitStack()
        try:
            url = stack.enter_context(_databases.fresh(kindName))
        except ServerMissing as e:
            if e.fatal:
                self.fail(str(e))
            raise unittest.SkipTest(str(e)) from None
        self.addCleanup(stack.close)
        return url

    def makeBroker(self, cls: type[B], *args: Any, **kw: Any) -> B:
        """
        Make a broker, C{cls(*args, **kw)}, that is shut down after the test.

        @return: The broker.
        """
        made: Brokers | None = getattr(self, "_sasyncBrokers", None)
        if made is None:
            made = self._sasyncBrokers = Brokers()
            self.addCleanup(self._shutdownBrokers, made)
        return made(cls, *args, **kw)

    def _shutdownBrokers(self, made: Brokers) -> Any:
        del self._sasyncBrokers
        return made.shutdown(self.brokerShutdownTimeout)
