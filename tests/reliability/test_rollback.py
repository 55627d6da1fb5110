"""
A rollback that fails, on real servers: the transaction's own error
reaches the caller, and the worker replaces its connection.
"""

from __future__ import annotations

from typing import Any

import pytest

from sasync import transact
from tests.reliability.helpers import Ledger, killBackend


class Refused(Exception):
    """
    The error a transaction raises after its connection was ended.
    """


class LosesItsConnection(Ledger):
    """
    A ledger whose C{writeAndRefuse} writes, has its connection ended by
    the server, and raises: the rollback that follows is sent on a dead
    connection.
    """

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.url = url
        self.runs = 0

    @transact
    def writeAndRefuse(self, token: str) -> None:
        self.runs += 1
        self.conn.execute(self.ledger.insert().values(token=token))
        query = (
            "SELECT pg_backend_pid()"
            if self.url.startswith("postgresql")
            else "SELECT CONNECTION_ID()"
        )
        killBackend(self.url, int(self.conn.exec_driver_sql(query).scalar_one()))
        raise Refused(token)


@pytest.mark.reactorTimeout(60)
async def test_failedRollback(serverURL: str, brokers: Any) -> None:
    """
    The connection is ended after the transaction's last statement, and the
    transaction raises: ROLLBACK fails, yet the caller gets the
    transaction's own exception (not ROLLBACK's, and not retried), and the
    one worker replaces its connection, so the next calls run.
    """
    broker = brokers(LosesItsConnection, serverURL, connections=1, retries=3)
    await broker.waitUntilRunning()
    with pytest.raises(Refused):
        await broker.writeAndRefuse("lost")
    assert broker.runs == 1
    await broker.write("next")
    assert await broker.tokens() == ["next"]
    assert broker._handle.replacedConnections() == 1
