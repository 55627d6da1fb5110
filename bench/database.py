"""The run's own PostgreSQL database: created, reset between runs, dropped."""

from __future__ import annotations

import psycopg2
import sqlalchemy as SA

from bench.config import BenchConfig
from bench.schema import Base
from bench.statements import INSERT_A, INSERT_B, NEXTVAL, writeParams

# Writes seeded before each run so the very first read already finds 10 rows.
SEED_WRITES = 4


def _admin(config: BenchConfig, sql: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    conn = psycopg2.connect(config.adminDsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def createDatabase(config: BenchConfig) -> None:
    """
    Drop any leftover benchmark database and create it afresh with its tables.
    """
    dropDatabase(config)
    _admin(config, f'CREATE DATABASE "{config.database}"')
    engine = SA.create_engine(config.url())
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


def dropDatabase(config: BenchConfig) -> None:
    """
    Drop the benchmark database, disconnecting anyone still on it.
    """
    _admin(config, f'DROP DATABASE IF EXISTS "{config.database}" WITH (FORCE)')


def resetOps(config: BenchConfig) -> None:
    """
    Empty C{a} and C{b} and seed them, so every run starts from the same state.
    """
    conn = psycopg2.connect(config.psycopg2Dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("TRUNCATE b, a RESTART IDENTITY")
            for i in range(SEED_WRITES):
                cur.execute(NEXTVAL)
                ids = cur.fetchone()
                assert ids is not None
                params = writeParams((ids[0], ids[1], ids[2]), i * 3)
                cur.execute(INSERT_A, params)
                cur.execute(INSERT_B, params)
        with conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("VACUUM ANALYZE a, b")
    finally:
        conn.close()


def countOps(config: BenchConfig) -> tuple[int, int]:
    """
    Rows now in C{a} and C{b}, to check a run wrote what its plan says.
    """
    conn = psycopg2.connect(config.psycopg2Dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b)")
            row = cur.fetchone()
            assert row is not None
            return int(row[0]), int(row[1])
    finally:
        conn.close()


def fillStream(config: BenchConfig, rows: int) -> None:
    """
    Fill the C{stream} table with C{rows} generated rows (server side, fast).
    """
    conn = psycopg2.connect(config.psycopg2Dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("TRUNCATE stream")
            cur.execute(
                "INSERT INTO stream (id, k, txt, val) "
                "SELECT g, g %% 1000, md5(g::text), g * 0.5 "
                "FROM generate_series(1, %s) g",
                (rows,),
            )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE stream")
    finally:
        conn.close()


def serverVersion(config: BenchConfig) -> str:
    """
    The server's C{version()} string, for the report.
    """
    conn = psycopg2.connect(config.adminDsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            row = cur.fetchone()
            return str(row[0]) if row else "?"
    finally:
        conn.close()
