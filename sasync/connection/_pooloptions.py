"""
SQLAlchemy's pool keywords, read the way a broker can honour them.

A broker has no pool of its own: each worker thread keeps one connection
for its whole life (see L{sasync.connection._workers}), and the engine gets
C{NullPool} unless the user names a pool. So a pool keyword users know from
C{create_engine} either means one of the broker's own options, or would do
nothing (or fail inside SQLAlchemy, naming a C{NullPool} the user never
chose): L{translatePoolOptions} maps the first kind and refuses the second
with a message saying what to use instead.

With C{poolclass=} or C{pool=} the user chose a pool, and every pool
keyword goes to it unchanged.
"""

from __future__ import annotations

from typing import Any

#: SQLAlchemy's name -> the broker's own, meaning the same thing.
SAME_AS = {"pool_size": "connections", "max_overflow": "overflowConnections"}

#: SQLAlchemy pool keywords that would do nothing here, and why.
REFUSED = {
    "pool_recycle": (
        "a worker checks its connection out once and keeps it, so a recycle"
        " age (applied at checkout) would never act: use idleTimeout=seconds"
        " to close connections left idle that long (a connection the server"
        " closed is replaced before the next transaction anyway)"
    ),
    "pool_pre_ping": (
        "a worker checks its connection out once and keeps it, and looks at"
        " its socket before each transaction, replacing a connection the"
        " server closed: leave pool_pre_ping out"
    ),
    "pool_timeout": (
        "transactions wait for a connection in the broker's queue, not in a"
        " pool: use timeout=seconds (a call's time limit) or maxPending=N"
        " (refuse calls while N wait)"
    ),
    "pool_use_lifo": (
        "each worker thread keeps its own connection; there is no pool to"
        " take connections from: leave pool_use_lifo out"
    ),
}


def translatePoolOptions(kw: dict[str, Any], sqlite: bool) -> None:
    """
    Rewrite C{kw} in place: C{pool_size} and C{max_overflow} become
    C{connections} and C{overflowConnections}; the pool keywords that would
    do nothing are refused. Nothing changes if C{kw} names a pool
    (C{poolclass} or C{pool}).

    @param sqlite: Whether the database is SQLite (one connection).
    @raise ValueError: a keyword is refused; one is given under both names
        with different values; or a value the broker's option would refuse,
        named as given (C{pool_size=0} and C{max_overflow=-1}, SQLAlchemy's
        "no limit", among them).
    """
    if "poolclass" in kw or "pool" in kw:
        return
    refused = sorted(name for name in REFUSED if name in kw)
    if refused:
        name = refused[0]
        raise ValueError(
            f"{name}={kw[name]!r} is a keyword of SQLAlchemy's connection pool,"
            f" which a broker does not use: {REFUSED[name]}"
        )
    for theirs, ours in SAME_AS.items():
        if theirs not in kw:
            continue
        value = kw.pop(theirs)
        if ours in kw and kw[ours] != value:
            raise ValueError(
                f"{theirs}={value!r} and {ours}={kw[ours]!r} name the same option"
                f" ({theirs} is SQLAlchemy's name for the broker's {ours}):"
                " give one of them"
            )
        _check(theirs, ours, value, sqlite)
        kw[ours] = value


def _check(theirs: str, ours: str, value: object, sqlite: bool) -> None:
    # The broker's checks of its option, in words naming SQLAlchemy's.
    if isinstance(value, bool) or not isinstance(value, int):
        wanted = "a positive int" if theirs == "pool_size" else "an int >= 0"
        raise ValueError(f"{theirs} must be {wanted}, not {value!r}")
    if theirs == "pool_size":
        if value < 1:
            raise ValueError(
                f"pool_size={value} means no limit to SQLAlchemy; a broker has a"
                f" fixed number of connections (worker threads): give {ours}=N,"
                " N >= 1"
            )
        if sqlite and value != 1:
            raise ValueError(
                "SQLite has one writer: a broker on SQLite uses exactly one"
                f" connection, not pool_size={value}"
            )
    elif value < 0:
        raise ValueError(
            f"max_overflow={value} means no limit to SQLAlchemy; a broker adds"
            f" at most {ours} extra connections: give {ours}=N, N >= 0"
        )


__all__ = ["REFUSED", "SAME_AS", "translatePoolOptions"]
