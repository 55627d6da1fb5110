"""
A broker's replica options (C{replicas}, C{consistency}, C{replicaWait},
C{maxReplicaLag}), taken out of its keywords and checked; see
L{sasync.connection._replicas} for what they do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL

from ..errors import ReplicaError
from ._engines import withDefaultDriver

#: Default seconds a session-consistent read waits for a replica.
DEFAULT_REPLICA_WAIT = 0.5
CONSISTENCIES = ("session", "eventual")
OPTION_NAMES = ("replicas", "consistency", "replicaWait", "maxReplicaLag")


@dataclass(frozen=True)
class ReplicaOptions:
    """
    A broker's replica options, checked.
    """

    urls: tuple[URL, ...]
    consistency: str = "session"
    replicaWait: float = DEFAULT_REPLICA_WAIT
    maxReplicaLag: float | None = None

    @classmethod
    def take(
        cls, kw: dict[str, Any], primary: str | URL | None
    ) -> ReplicaOptions | None:
        """
        Take the replica options out of a broker's keywords; C{None} if it
        has no C{replicas=}.

        @param primary: The broker's URL (C{None}: the global engine's,
            checked later by L{ReplicaSet}).
        @raise ReplicaError: a bad option or URL.
        """
        given = {name: kw.pop(name) for name in OPTION_NAMES if name in kw}
        urls = given.pop("replicas", None)
        if urls is None:
            if given:
                raise ReplicaError(
                    f"{', '.join(sorted(given))} without replicas=: these options"
                    " are about read replicas"
                )
            return None
        if isinstance(urls, str | URL) or not isinstance(urls, list | tuple):
            raise ReplicaError(
                f"replicas={urls!r}: give a list of PostgreSQL URLs, one per standby"
            )
        parsed = []
        for url in urls:
            try:
                parsed.append(withDefaultDriver(url))
            except Exception as e:
                raise ReplicaError(
                    f"replicas: {url!r} is not a database URL ({e})"
                ) from e
        consistency = given.get("consistency", "session")
        if consistency not in CONSISTENCIES:
            raise ReplicaError(
                f"consistency={consistency!r}: use 'session' (read your own writes)"
                " or 'eventual' (any healthy replica)"
            )
        wait = given.get("replicaWait", DEFAULT_REPLICA_WAIT)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait >= 0:
            raise ReplicaError(f"replicaWait={wait!r}: a number of seconds >= 0")
        lag = given.get("maxReplicaLag")
        if lag is not None and (
            isinstance(lag, bool) or not isinstance(lag, int | float) or not lag > 0
        ):
            raise ReplicaError(f"maxReplicaLag={lag!r}: a positive number of seconds")
        options = cls(tuple(parsed), consistency, float(wait), lag)
        if primary is not None:
            options.check(withDefaultDriver(primary))
        return options

    def check(self, primary: URL) -> None:
        """
        @raise ReplicaError: the primary or a replica is not PostgreSQL.
        """
        if primary.get_backend_name() != "postgresql":
            raise ReplicaError(
                f"replicas= needs a PostgreSQL broker (streaming replication);"
                f" this broker's URL is {primary.render_as_string()}"
            )
        for url in self.urls:
            if url.get_backend_name() != "postgresql":
                raise ReplicaError(
                    f"replicas: {url.render_as_string()} is not a PostgreSQL URL,"
                    " but the primary is: a replica is a standby of the primary"
                )


__all__ = ["CONSISTENCIES", "DEFAULT_REPLICA_WAIT", "OPTION_NAMES", "ReplicaOptions"]
