"""The parameters of one benchmark run, shared by the runner and its children."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

# Scales for --smoke: just enough work to prove every variant runs end to end.
SMOKE: dict[str, Any] = {
    "ops": 40,
    "rows": 5_000,
    "calls": 2_000,
    "items": 20_000,
    "selects": 200,
    "idle": 0.5,
    "openSeconds": 0.3,
}


@dataclass(frozen=True)
class BenchConfig:
    """
    What to run and at what scale; serialised to JSON for each child.

    @ivar concurrency: connections (and threads) every concurrent variant
        may use, so that all of them load the server equally.
    @ivar replicaURLs: the C{replicas} workload's servers, started by the
        runner (see L{bench.replicas}): the primary's database, then each
        standby's.
    """

    ops: int = 35_000
    rows: int = 1_000_000
    calls: int = 100_000
    items: int = 1_000_000
    selects: int = 10_000
    idle: float = 5.0
    #: Seconds each offered rate of the open-loop workload lasts.
    openSeconds: float = 3.0
    repeat: int = 3
    concurrency: int = 8
    chunk: int = 40
    seed: int = 20220211
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    database: str = "sasync_bench"
    smoke: bool = False
    replicaURLs: list[str] = field(default_factory=list)

    def smokeScaled(self) -> BenchConfig:
        """
        The same config at smoke scale, one repetition.
        """
        return replace(self, repeat=1, smoke=True, **SMOKE)

    @property
    def psycopg2Dsn(self) -> str:
        """
        libpq keyword DSN, for psycopg2, adbapi and txpostgres.
        """
        return (
            f"host={self.host} port={self.port} user={self.user} dbname={self.database}"
        )

    @property
    def adminDsn(self) -> str:
        """
        DSN of the maintenance database, for CREATE/DROP DATABASE.
        """
        return f"host={self.host} port={self.port} user={self.user} dbname=postgres"

    def url(self, driver: str = "psycopg2") -> str:
        """
        SQLAlchemy URL for C{driver} (C{psycopg2} or C{asyncpg}).
        """
        return (
            f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{self.database}"
        )

    @property
    def asyncpgDsn(self) -> str:
        """
        URL DSN for asyncpg's own C{connect}/C{create_pool}.
        """
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def toJson(self) -> str:
        """
        Serialise for a child process.
        """
        return json.dumps(asdict(self))

    @classmethod
    def fromJson(cls, text: str) -> BenchConfig:
        """
        The inverse of L{toJson}.
        """
        data: dict[str, Any] = json.loads(text)
        return cls(**data)
