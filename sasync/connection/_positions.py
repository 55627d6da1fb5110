"""
WAL positions (PostgreSQL log sequence numbers, C{"0/16B3740"}): parsing,
comparing, and learning the position of a write just committed.

A position is handed around as PostgreSQL prints it (a string, what
C{broker.writePosition} gives and C{after=} takes) and compared as the
64-bit number it stands for.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from ..errors import ReplicaError

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parseLSN(position: object, name: str = "after=") -> int:
    """
    The number a WAL position string stands for.

    @param name: How the value is named in the error.
    @raise ReplicaError: not a string of the form C{"X/Y"} (hexadecimal).
    """
    match = _LSN_RE.match(position) if isinstance(position, str) else None
    if match is None:
        raise ReplicaError(
            f"{name}: {position!r} is not a WAL position, a string like"
            " '0/16B3740' (two hexadecimal numbers with a slash), as"
            " broker.writePosition gives it"
        )
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def formatLSN(value: int) -> str:
    """
    The string PostgreSQL prints for the position C{value}.
    """
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def committedPosition(dbapiConnection: Any) -> int | None:
    """
    Worker thread, right after a write transaction committed on a
    PostgreSQL primary: where the WAL now ends, at or past that COMMIT's
    record. One round trip, in autocommit (no BEGIN, no ROLLBACK); C{None}
    if the server could not say (the position is then not advanced, and
    the connection, maybe lost or left in autocommit, must be replaced).
    """
    autocommit = dbapiConnection.autocommit
    try:
        dbapiConnection.autocommit = True
        cursor = dbapiConnection.cursor()
        try:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            row = cursor.fetchone()
        finally:
            cursor.close()
    except Exception:
        return None
    finally:
        # (A lost connection: the worker replaces it later.)
        with contextlib.suppress(Exception):
            dbapiConnection.autocommit = autocommit
    if row is None or row[0] is None:
        return None
    return parseLSN(row[0], "pg_current_wal_insert_lsn()")


__all__ = ["committedPosition", "formatLSN", "parseLSN"]
