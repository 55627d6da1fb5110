"""
sAsync: SQLAlchemy made asynchronous for Twisted.

Subclass L{AccessBroker}, set up tables in its C{startup()}, and decorate
its database methods with L{transact}: calling one returns a Deferred at
once, and the method runs as a transaction in a worker thread that owns its
database connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# First: fails at once, saying what to do, if asynqueue is not ours.
from ._version import __version__ as __version__

# isort: split
from asynqueue.lazy import lazyNames
from asynqueue.moved import movedNames

from ._stats import BrokerStats as BrokerStats
from ._stats import ServerStats as ServerStats
from .broker import AccessBroker as AccessBroker
from .connection._engines import setup as setup
from .errors import BrokerStopped as BrokerStopped
from .errors import MigrationFailed as MigrationFailed
from .errors import NoEngineError as NoEngineError
from .errors import NotInTransaction as NotInTransaction
from .errors import NotSupported as NotSupported
from .errors import Overloaded as Overloaded
from .errors import ReadOnlyViolation as ReadOnlyViolation
from .errors import ReplicaError as ReplicaError
from .errors import SAsyncError as SAsyncError
from .errors import SchemaMismatch as SchemaMismatch
from .errors import StartupError as StartupError
from .errors import TableNameError as TableNameError
from .errors import TransactionTimeout as TransactionTimeout
from .errors import WritesLost as WritesLost
from .errors import WrongThread as WrongThread
from .retry import Backoff as Backoff
from .transact import transact as transact
from .transact import wait as wait

if TYPE_CHECKING:
    from .notifications import Listener as Listener
    from .stores import Items as Items
    from .stores import Missing as Missing
    from .stores import PersistentArray as PersistentArray
    from .stores import PersistentDict as PersistentDict

# Imported when a program first asks for them: a broker needs neither.
__getattr__, __dir__ = lazyNames(
    globals(),
    {
        "Listener": "sasync.notifications",
        "Items": "sasync.stores",
        "Missing": "sasync.stores",
        "PersistentArray": "sasync.stores",
        "PersistentDict": "sasync.stores",
    },
    # The original's sasync.engine(url, ...) is sasync.setup.
    fallback=movedNames(__name__, {"engine": "sasync.setup"}),
    submodules=("stores",),
)

__all__ = [
    "AccessBroker",
    "Backoff",
    "BrokerStats",
    "BrokerStopped",
    "Items",
    "Listener",
    "MigrationFailed",
    "Missing",
    "NoEngineError",
    "NotInTransaction",
    "NotSupported",
    "Overloaded",
    "PersistentArray",
    "PersistentDict",
    "ReadOnlyViolation",
    "ReplicaError",
    "SAsyncError",
    "SchemaMismatch",
    "ServerStats",
    "StartupError",
    "TableNameError",
    "TransactionTimeout",
    "WritesLost",
    "WrongThread",
    "setup",
    "transact",
    "wait",
]
