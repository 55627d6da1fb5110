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


def translatePoolOptions(kw: dict[str, Any]) -> dict[str, str]:
    """
    Rewrite C{kw} in place: C{pool_size} and C{max_overflow} become
    C{connections} and C{overflowConnections}; the pool keywords that would
    do nothing are refused. Nothing changes if C{kw} names a pool
    (C{poolclass} or C{pool}).

    @return: The broker's option -> the name it was given under, for those
        given under SQLAlchemy's name (so that errors name what the user
        wrote).

    @raise ValueError: a keyword is refused; one is given under both names
        with different values; or a value means something the broker can't
        do (C{pool_size=0} or C{max_overflow=-1}: no limit).
    """
    if "poolclass" in kw or "pool" in kw:
        return {}
    refused = sorted(name for name in REFUSED if name in kw)
    if refused:
        name = refused[0]
        raise ValueError(
            f"{name}={kw[name]!r} is a keyword of SQLAlchemy's connection pool,"
            f" which a broker does not use: {REFUSED[name]}"
        )
    givenAs = {}
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
        _checkUnlimited(theirs, ours, value)
        kw[ours] = value
        givenAs[ours] = theirs
    return givenAs


def _checkUnlimited(theirs: str, ours: str, value: object) -> None:
    # SQLAlchemy's "no limit" values: a broker always has a bound.
    if theirs == "pool_size" and value == 0 and not isinstance(value, bool):
        raise ValueError(
            "pool_size=0 means no limit to SQLAlchemy; a broker has a fixed"
            f" number of connections (worker threads): give {ours}=N, N >= 1"
        )
    if theirs == "max_overflow" and isinstance(value, int) and value < 0:
        raise ValueError(
            f"max_overflow={value!r} means no limit to SQLAlchemy; a broker adds"
            f" at most {ours} extra connections: give {ours}=N, N >= 0"
        )


__all__ = ["REFUSED", "SAME_AS", "translatePoolOptions"]
