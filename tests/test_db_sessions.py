"""A transaction whose client went quiet between two statements does not hold its locks for
long: the server ends the session (idle_in_transaction_session_timeout, set by ``Database``).

The stand-in for a worker host cut off in the middle of a claim is a transaction that takes the
fair-share lock's kind of lock (a transaction-level advisory lock) and then sends nothing more.
"""

from __future__ import annotations

import time

import psycopg2
import psycopg2.errors
import pytest

from taskservice.errors import DatabaseUnavailable
from taskservice.store.db import Database

LOCK_KEY = 0x7A5C_5E55


def test_a_transaction_left_idle_loses_its_locks(config):
    database = Database(config.database_url, size=1)
    other = psycopg2.connect(config.database_url)
    other.autocommit = True
    try:
        with pytest.raises(DatabaseUnavailable), database.transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            with other.cursor() as probe:
                probe.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                assert probe.fetchone()[0] is False  # held by the idle transaction
            # The client goes quiet for longer than the timeout; the server ends the session,
            # and the lock becomes free for others while this one still sleeps.
            deadline = time.monotonic() + 25
            freed = False
            while time.monotonic() < deadline and not freed:
                time.sleep(0.5)
                with other.cursor() as probe:
                    probe.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                    freed = probe.fetchone()[0]
            assert freed, "the idle transaction still held its lock after 25 s"
            # Its next statement finds the session gone: a connection error, not a hang.
            cursor.execute("SELECT 1")
    finally:
        other.close()
        database.close()


def test_a_transaction_begun_with_its_first_statement_commits_or_rolls_back_whole(config):
    """``transaction(first=...)`` sends its own BEGIN and COMMIT: whatever fails inside it (the
    first statement, a later one, or the caller's code) leaves nothing, and the connection goes
    back to the pool out of any transaction."""
    database = Database(config.database_url, size=1)  # one connection: each unit reuses it
    insert = "INSERT INTO unit_check VALUES (%s)"
    try:
        with database.statement() as cursor:
            cursor.execute("CREATE TEMP TABLE unit_check (n integer)")
        with database.transaction(first=(insert, (1,))) as cursor:
            cursor.execute(insert, (2,))
        failing_first = database.transaction(first=(insert, ("three",)))
        with pytest.raises(psycopg2.errors.InvalidTextRepresentation), failing_first:
            pass
        failing_later = database.transaction(first=(insert, (4,)))
        with pytest.raises(psycopg2.errors.DivisionByZero), failing_later as cursor:
            cursor.execute("SELECT 1 / 0")
        given_up = database.transaction(first=(insert, (5,)))
        with pytest.raises(RuntimeError), given_up as cursor:
            cursor.execute(insert, (6,))
            raise RuntimeError("the caller gives up")
        with database.transaction() as cursor:
            cursor.execute("SELECT array_agg(n ORDER BY n) AS ns FROM unit_check")
            assert cursor.fetchone()["ns"] == [1, 2]
    finally:
        database.close()
