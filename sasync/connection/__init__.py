"""
The connection layer: engines, their connection workers, and what runs in a
worker's thread.

  - L{_engines}: an engine spec (URL and options) and the engine handle
    brokers share (one SQLAlchemy engine, one queue of connection workers).
  - L{_workers}: a connection worker, one thread owning one connection for
    its whole life.
  - L{_threadstate}: the connection and session of the transaction running
    in the current worker thread.
  - L{_cancel}: stopping the statement of a cancelled call.
  - L{_outcome}: whether a COMMIT whose connection was lost took effect.
  - L{_results}: result rows streamed from a worker thread.
  - L{_positions}: WAL positions, and the one a write committed at.
  - L{_replicas}, L{_replicaoptions}: read replicas, probed in the
    background, and which one a read-only call runs on.
  - L{_pooler}: the options of a broker behind a transaction-mode pooler
    (C{pooled=True}).

It imports only asynqueue and the bottom of sasync (L{sasync.errors},
L{sasync.retry}); the layers above import from here, never the other way.
"""

from __future__ import annotations

from ._engines import DEFAULT_CONNECTIONS as DEFAULT_CONNECTIONS
from ._engines import EngineHandle as EngineHandle
from ._engines import EngineSpec as EngineSpec
from ._engines import acquire as acquire
from ._engines import openHandles as openHandles
from ._engines import release as release
from ._engines import resolveSpec as resolveSpec
from ._engines import withDefaultDriver as withDefaultDriver
from ._threadstate import checkReactorThread as checkReactorThread
from ._threadstate import currentConnection as currentConnection
from ._threadstate import currentSession as currentSession
from ._threadstate import inTransaction as inTransaction
from ._threadstate import state as state
from ._workers import ConnectionWorker as ConnectionWorker

__all__ = [
    "DEFAULT_CONNECTIONS",
    "ConnectionWorker",
    "EngineHandle",
    "EngineSpec",
    "acquire",
    "checkReactorThread",
    "currentConnection",
    "currentSession",
    "inTransaction",
    "openHandles",
    "release",
    "resolveSpec",
    "state",
    "withDefaultDriver",
]
