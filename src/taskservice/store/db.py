"""Connections: a small thread-safe pool, opened lazily (never at import or before a fork)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from taskservice.errors import DatabaseUnavailable
from taskservice.metrics import DATABASE, NO_METRICS, NoMetrics

psycopg2.extras.register_uuid()

# A connection used this recently is handed out without a check: the check costs a round trip,
# and a failure right after a success is rare enough to be answered with a 503.
_TRUST_IDLE_SECONDS = 1.0

# Errors that mean the connection or the server is gone, as opposed to a bad statement.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class Database:
    """Hands out pooled connections inside a transaction: commit on success, rollback on error.

    A connection that failed with a connection error is closed instead of returned, so that the
    pool heals by itself once the server is back.
    """

    def __init__(
        self, dsn: str, size: int = 4, connect_timeout: int = 3, metrics: NoMetrics = NO_METRICS
    ):
        self._dsn = dsn
        self._metrics = metrics  # counts each DatabaseUnavailable raised here
        self._connect_timeout = connect_timeout
        self._idle: queue.LifoQueue[tuple[psycopg2.extensions.connection, float]] = (
            queue.LifoQueue()
        )
        self._slots = threading.BoundedSemaphore(size)

    def _connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            self._dsn,
            connect_timeout=self._connect_timeout,
            application_name="taskservice",
            cursor_factory=psycopg2.extras.RealDictCursor,
            # A server that vanishes without closing the connection (a network partition) is
            # noticed within about 20 s instead of never; a runaway statement ends after 30 s.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=2,
            # Data sent but not acknowledged for 10 s (a partition mid-statement) fails the
            # connection, instead of TCP retransmitting for minutes: a heartbeat blocked that
            # long would otherwise land long after the network healed, when other workers may
            # already have judged this one gone.
            tcp_user_timeout=10000,
            # A transaction left open by a client that vanished (a worker host cut off between
            # two statements of a claim) would hold its locks, the fair-share lock among them,
            # until the server's TCP keepalive gives up: two hours by default. The server ends
            # such a session after 10 s instead. No transaction of ours waits between its
            # statements: the store's units are SQL only.
            options="-c statement_timeout=30000 -c idle_in_transaction_session_timeout=10000",
        )

    def _checkout(self) -> psycopg2.extensions.connection:
        """An idle connection that still works, or a new one.

        A connection idle for a while is checked first, so that the first request after a
        database restart gets a fresh connection instead of a 503 from a dead one.
        """
        while True:
            try:
                conn, idle_since = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            if time.monotonic() - idle_since < _TRUST_IDLE_SECONDS:
                return conn
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
                conn.rollback()
                return conn
            except CONNECTION_ERRORS:
                with contextlib.suppress(Exception):
                    conn.close()

    def transaction(
        self, first: tuple[str, tuple] | None = None
    ) -> contextlib.AbstractContextManager[psycopg2.extensions.cursor]:
        """A cursor whose statements commit together at the end, or not at all.

        ``first``: the transaction's first statement and its parameters, sent in one round trip
        with the BEGIN (its result is not read). psycopg2 would send its BEGIN alone.
        """
        return self._unit(autocommit=False, first=first)

    def statement(self) -> contextlib.AbstractContextManager[psycopg2.extensions.cursor]:
        """A cursor for a unit of work that is one statement, which is atomic by itself.

        It runs in autocommit mode: one round trip to the server instead of three (psycopg2
        sends BEGIN before the first statement of a transaction, and COMMIT after the last).
        That is most of the time of a status read or a plain submission.
        """
        return self._unit(autocommit=True)

    @contextlib.contextmanager
    def _unit(
        self, autocommit: bool, first: tuple[str, tuple] | None = None
    ) -> Iterator[psycopg2.extensions.cursor]:
        if not self._slots.acquire(timeout=30):
            self._metrics.dependency_error(DATABASE)
            raise DatabaseUnavailable("No database connection became free within 30 s.")
        conn = None
        broken = False
        try:
            conn = self._checkout()
            # A transaction that begins with ``first`` is opened and ended by its own BEGIN and
            # COMMIT, the connection in autocommit mode so that psycopg2 sends none of its own.
            client_autocommit = autocommit or first is not None
            if conn.autocommit != client_autocommit:
                conn.autocommit = client_autocommit  # client-side only: no transaction is open
            with conn.cursor() as cursor:
                if first is not None:
                    sql, params = first
                    cursor.execute(f"BEGIN; {sql}", params)
                yield cursor
                if first is not None:
                    cursor.execute("COMMIT")
            conn.commit()
        except CONNECTION_ERRORS as exc:
            broken = True
            self._metrics.dependency_error(DATABASE)
            raise DatabaseUnavailable(f"The database is unavailable: {exc}".strip()) from exc
        except BaseException:
            if conn is not None and not conn.closed:
                try:
                    conn.rollback()
                    if conn.info.transaction_status != TRANSACTION_STATUS_IDLE:
                        with conn.cursor() as cursor:
                            cursor.execute("ROLLBACK")  # one that began with ``first``
                except CONNECTION_ERRORS:
                    broken = True
            raise
        finally:
            if conn is not None:
                if broken or conn.closed:
                    with contextlib.suppress(Exception):
                        conn.close()
                else:
                    self._idle.put((conn, time.monotonic()))
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                conn, _ = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()
