"""
The public names of sasync.
"""

from __future__ import annotations

import sasync


def test_exports() -> None:
    """
    sasync exports the real objects its __all__ names.
    """
    import importlib

    broker = importlib.import_module("sasync.broker")
    errors = importlib.import_module("sasync.errors")
    transactModule = importlib.import_module("sasync.transact")
    assert sasync.AccessBroker is broker.AccessBroker
    assert sasync.transact is transactModule.transact
    assert sasync.wait is transactModule.wait
    assert sasync.setup is sasync.connection._engines.setup
    assert sasync.Listener is importlib.import_module("sasync.notifications").Listener
    for name in sasync.__all__:
        obj = getattr(sasync, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert getattr(errors, name) is obj
    assert issubclass(sasync.BrokerStopped, __import__("asynqueue").QueueStopped)
