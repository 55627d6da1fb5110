"""
Testing a broker with pytest: run with

    pytest -p sasync.testing test_notes_pytest.py
"""

import pytest
from twisted.internet import defer

from notes import Notes


async def test_addAndRead(databaseURL, brokers):
    # Runs in the reactor thread, on a new, empty database.
    notes = brokers(Notes, databaseURL)
    assert await notes.add("first") == 1
    await notes.add("second")
    assert await notes.texts() == ["first", "second"]


async def test_emptyAgain(databaseURL, brokers):
    # Each test has a database of its own: nothing from the last test.
    notes = brokers(Notes, databaseURL)
    assert await notes.texts() == []


@pytest.mark.inReactor
@defer.inlineCallbacks
def test_inlineCallbacks(databaseURL, brokers):
    # A test returning a Deferred runs in the reactor thread when marked so.
    notes = brokers(Notes, databaseURL)
    yield notes.add("third")
    texts = yield notes.texts()
    assert texts == ["third"]
