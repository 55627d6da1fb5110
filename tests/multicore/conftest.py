"""
Fixtures for the multicore tests: brokers shut down after each test.
"""

from tests.sasync.conftest import brokers

__all__ = ["brokers"]
