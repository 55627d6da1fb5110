"""
The tests' database servers: L{sasync.testing.servers}, under the name the
project's tests and C{scripts/test} use::

    python -m tests.databases probe postgresql   # prints the URL, or exits 1
"""

from __future__ import annotations

import sys

from sasync.testing.servers import CONNECT_ARGS as CONNECT_ARGS
from sasync.testing.servers import KINDS as KINDS
from sasync.testing.servers import PG_DRIVERS as PG_DRIVERS
from sasync.testing.servers import Server as Server
from sasync.testing.servers import ServerKind as ServerKind
from sasync.testing.servers import ServerMissing as ServerMissing
from sasync.testing.servers import findServer as findServer
from sasync.testing.servers import main as main
from sasync.testing.servers import pgDriver as pgDriver
from sasync.testing.servers import probe as probe
from sasync.testing.servers import requireAll as requireAll
from sasync.testing.servers import withDriver as withDriver

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
