"""
The broker the testing examples test: notes in a table.
"""

import sqlalchemy as SA

from sasync import AccessBroker, transact


class Notes(AccessBroker):
    def startup(self):
        return self.table(
            "notes",
            SA.Column("id", SA.Integer, primary_key=True),
            SA.Column("text", SA.String(200), nullable=False),
        )

    @transact
    def add(self, text):
        return self.conn.execute(
            self.notes.insert().values(text=text)
        ).inserted_primary_key[0]

    @transact
    def texts(self):
        query = SA.select(self.notes.c.text).order_by(self.notes.c.id)
        return list(self.conn.execute(query).scalars())
