"""Wrappers around the real database for tests: one that loses an answer, one that counts.

A lost answer from PostgreSQL: the unit of work commits, then the caller is told it failed.

That is what a connection that breaks after the server committed looks like to the client (the
server restarted, or the network dropped the reply). The SQL runs on the real database; only the
reply is withheld, once, for the first unit of work whose SQL contains the armed fragment.
"""

from __future__ import annotations

import contextlib

from taskservice.errors import DatabaseUnavailable


class _RecordingCursor:
    def __init__(self, cursor, executed: list[str]):
        self._cursor = cursor
        self._executed = executed

    def execute(self, sql, params=None):
        self._executed.append(sql)
        return self._cursor.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class LostReplyDatabase:
    def __init__(self, db):
        self._db = db
        self._armed: str | None = None
        self.lost = 0

    def lose_reply_of(self, sql_fragment: str) -> None:
        self._armed = sql_fragment

    def transaction(self, first=None):
        return self._unit(lambda: self._db.transaction(first))

    def statement(self):
        return self._unit(self._db.statement)

    @contextlib.contextmanager
    def _unit(self, open_unit):
        executed: list[str] = []
        with open_unit() as cursor:
            yield _RecordingCursor(cursor, executed)
        # Committed by now; withhold the answer.
        if self._armed is not None and any(self._armed in sql for sql in executed):
            self._armed = None
            self.lost += 1
            raise DatabaseUnavailable("server closed the connection unexpectedly")


class CountingDatabase:
    """The real database, counting the units of work that reach it."""

    def __init__(self, db):
        self._db = db
        self.units = 0

    def transaction(self, first=None):
        self.units += 1
        return self._db.transaction(first)

    def statement(self):
        self.units += 1
        return self._db.statement()
