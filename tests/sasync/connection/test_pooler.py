"""
The broker options C{pooled} and C{poolerConnections}: checked, PostgreSQL
only, and part of what makes brokers share an engine. (Behaviour behind a
real PgBouncer: C{tests/pooler}.)
"""

from __future__ import annotations

import pytest

from sasync.connection import EngineSpec
from sasync.connection._pooler import PoolerOptions

PG = "postgresql://u@db.example/app"


def test_notPostgreSQL() -> None:
    """
    C{pooled=True} on a URL of another database kind fails, naming the
    option and the database.
    """
    for url, kind in [
        ("sqlite:///x.db", "sqlite"),
        ("mysql+pymysql://root@127.0.0.1/test", "mysql"),
    ]:
        with pytest.raises(ValueError, match=f"pooled=True .* not for a {kind} URL"):
            EngineSpec.fromArgs(url, {"pooled": True})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"pooled": "yes"}, "pooled must be True or False, not 'yes'"),
        ({"pooled": True, "poolerConnections": 0}, "poolerConnections must be a"),
        ({"pooled": True, "poolerConnections": True}, "poolerConnections must be a"),
        ({"pooled": True, "poolerConnections": 2.5}, "poolerConnections must be a"),
        ({"poolerConnections": 2}, "give it with pooled=True"),
    ],
)
def test_badValues(kw: dict[str, object], message: str) -> None:
    """
    Bad values fail with a message naming the option.
    """
    with pytest.raises(ValueError, match=message):
        EngineSpec.fromArgs(PG, kw)


def test_taken() -> None:
    """
    The options leave the engine's keywords; a pooled broker does not share
    an engine with a direct one, nor with one of another pool size.
    """
    spec = EngineSpec.fromArgs(PG, {"pooled": True, "poolerConnections": 3})
    assert spec.pooler == PoolerOptions(3)
    assert spec.engineKw == {}
    direct = EngineSpec.fromArgs(PG, {})
    assert direct.pooler is None
    other = EngineSpec.fromArgs(PG, {"pooled": True})
    assert len({spec.key, direct.key, other.key}) == 3


def test_psycopgPreparesNothing() -> None:
    """
    psycopg 3 behind a pooler prepares no statement on the server; the
    user's own connect_args are kept. psycopg2 (which never prepares) gets
    nothing.
    """
    kw: dict[str, object] = {"connect_args": {"connect_timeout": 3}}
    PoolerOptions().engineKeywords(
        EngineSpec.fromArgs("postgresql+psycopg://u@h/d", {}).url, kw
    )
    assert kw == {"connect_args": {"connect_timeout": 3, "prepare_threshold": None}}
    kw = {}
    PoolerOptions().engineKeywords(EngineSpec.fromArgs(PG, {}).url, kw)
    assert kw == {}
