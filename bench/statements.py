"""
The SQL-level workload: the same statements for every driver and pgbench.

A write reserves three C{a} ids, inserts three C{a} rows and five C{b}
rows (2, 1, 2 children) in one transaction; a read fetches ten C{a} rows
and their children. The ids come from C{nextval} rather than
C{INSERT ... RETURNING} because pgbench's C{\\gset} takes one row only, and
the children query uses a subquery because pgbench cannot pass a list on:
that way pgbench sends exactly what the Python variants send.
"""

from __future__ import annotations

import re

NEXTVAL = (
    "SELECT nextval('a_id_seq') AS a1, nextval('a_id_seq') AS a2, "
    "nextval('a_id_seq') AS a3"
)
INSERT_A = (
    "INSERT INTO a (id, data) VALUES "
    "(%(a1)s, %(d1)s), (%(a2)s, %(d2)s), (%(a3)s, %(d3)s)"
)
INSERT_B = (
    "INSERT INTO b (a_id) VALUES (%(a1)s), (%(a1)s), (%(a2)s), (%(a3)s), (%(a3)s)"
)
READ_A = "SELECT id, data, create_date FROM a LIMIT 10"
READ_B = "SELECT a_id, id, data FROM b WHERE a_id IN (SELECT id FROM a LIMIT 10)"

# Workload 3 reads the whole of the stream table (see bench.schema).
STREAM_QUERY = "SELECT id, k, txt, val FROM stream"


def writeParams(ids: tuple[int, int, int], data: int) -> dict[str, object]:
    """
    Parameters for L{INSERT_A} and L{INSERT_B}, data strings as the article.
    """
    return {
        "a1": ids[0],
        "a2": ids[1],
        "a3": ids[2],
        "d1": str(data + 1),
        "d2": str(data + 2),
        "d3": str(data + 3),
    }


_NAMED = re.compile(r"%\((\w+)\)s")


def numbered(sql: str) -> tuple[str, list[str]]:
    """
    Rewrite pyformat placeholders to asyncpg's C{$n}, with the name order.
    """
    names: list[str] = []

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(sub, sql), names


def colonNamed(sql: str) -> str:
    """
    Rewrite pyformat placeholders to SQLAlchemy C{text()}'s C{:name}.
    """
    return _NAMED.sub(r":\1", sql)


def pgbenchScript() -> str:
    """
    The pgbench custom script: 50/50 write or read, same statements.
    """
    insertA = _NAMED.sub(r":\1", INSERT_A)
    insertB = _NAMED.sub(r":\1", INSERT_B)
    return "\n".join(
        [
            "\\set r random(0, 1)",
            "\\set d random(1, 100000)",
            "\\set d1 :d + 1",
            "\\set d2 :d + 2",
            "\\set d3 :d + 3",
            "\\if :r = 1",
            "BEGIN;",
            NEXTVAL + " \\gset",
            insertA + ";",
            insertB + ";",
            "COMMIT;",
            "\\else",
            "BEGIN;",
            READ_A + ";",
            READ_B + ";",
            "COMMIT;",
            "\\endif",
            "",
        ]
    )
