"""
Testing a broker with trial: run with

    python -m twisted.trial test_notes_trial.py
"""

from sasync.testing.trial import BrokerTestCase

from notes import Notes


class NotesTests(BrokerTestCase):
    async def test_addAndRead(self):
        notes = self.makeBroker(Notes, self.databaseURL())
        self.assertEqual(await notes.add("first"), 1)
        await notes.add("second")
        self.assertEqual(await notes.texts(), ["first", "second"])

    def test_deferred(self):
        # Trial waits for the Deferred a test returns.
        notes = self.makeBroker(Notes, self.databaseURL())
        d = notes.add("third")
        d.addCallback(lambda _: notes.texts())
        d.addCallback(self.assertEqual, ["third"])
        return d

    async def test_sqliteAlways(self):
        # A kind by name: "sqlite", "postgresql" or "mysql".
        notes = self.makeBroker(Notes, self.databaseURL("sqlite"))
        self.assertEqual(await notes.texts(), [])
