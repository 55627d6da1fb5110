"""
Brokers behind a transaction-mode pooler (PgBouncer, pgcat): the broker
option C{pooled=True}, and C{poolerConnections}.

Behind such a pooler each transaction may run on another server
connection, and the pooler has only so many of them. So:

  - no session state is kept between transactions (sAsync keeps none:
    the isolation level and READ ONLY are sent with each BEGIN); psycopg 3
    prepares no statements on the server (C{prepare_threshold=None}: a
    prepared statement lives on one server connection, and PgBouncer
    before 1.21 does not follow them);
  - the COMMIT lookup (see L{sasync.connection._outcome}) asks the server
    for its backend pid inside the transaction (the pid the driver knows
    is made up by the pooler);
  - open iterations hold at most C{poolerConnections - 1} of the pooler's
    server connections (see C{EngineHandle.maxHeld}), so that a small
    transaction never queues inside the pooler behind them.

Cancels need nothing more: PgBouncer forwards the driver's cancel request
to the server connection its client runs on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL


@dataclass(frozen=True)
class PoolerOptions:
    """
    The pooler options of a broker made with C{pooled=True}.

    @ivar connections: The pooler's server connections for this database
        and user (PgBouncer's C{default_pool_size} or the database's
        C{pool_size}); C{None}: as many as the broker's C{connections}.
    """

    connections: int | None = None

    @classmethod
    def take(cls, kw: dict[str, Any], url: URL) -> PoolerOptions | None:
        """
        Take C{pooled} and C{poolerConnections} out of C{kw}, checked.

        @raise ValueError: a bad value, or C{pooled=True} on a database
            other than PostgreSQL.
        """
        pooled = kw.pop("pooled", False)
        connections = kw.pop("poolerConnections", None)
        if not isinstance(pooled, bool):
            raise ValueError(f"pooled must be True or False, not {pooled!r}")
        if connections is not None and (
            isinstance(connections, bool)
            or not isinstance(connections, int)
            or connections < 1
        ):
            raise ValueError(
                f"poolerConnections must be a positive int, not {connections!r}"
            )
        if not pooled:
            if connections is not None:
                raise ValueError(
                    "poolerConnections is the pool size of a transaction-mode"
                    " pooler: give it with pooled=True"
                )
            return None
        if url.get_backend_name() != "postgresql":
            raise ValueError(
                "pooled=True is for transaction-mode poolers of PostgreSQL"
                " (PgBouncer, pgcat), not for a"
                f" {url.get_backend_name()} URL ({url.render_as_string()})"
            )
        return cls(connections)

    def engineKeywords(self, url: URL, kw: dict[str, Any]) -> None:
        """
        Set what C{create_engine} needs behind a pooler into C{kw}.
        """
        if url.get_driver_name() == "psycopg":
            connectArgs = dict(kw.get("connect_args", {}))
            connectArgs.setdefault("prepare_threshold", None)
            kw["connect_args"] = connectArgs


__all__ = ["PoolerOptions"]
