"""Connections: a small thread-safe pool, opened lazily (never at import or before a fork)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from taskservice.errors import DatabaseUnavailable

psycopg2.extras.register_uuid()

# Errors that mean the connection or the server is gone, as opposed to a bad statement.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class Database:
    """Hands out pooled connections inside a transaction: commit on success, rollback on error.

    A connection that failed with a connection error is closed instead of returned, so that the
    pool heals by itself once the server is back.
    """

    def __init__(self, dsn: str, size: int = 4, connect_timeout: int = 3):
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._idle: queue.LifoQueue[psycopg2.extensions.connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def _connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            self._dsn,
            connect_timeout=self._connect_timeout,
            application_name="taskservice",
            cursor_factory=psycopg2.extras.RealDictCursor,
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        if not self._slots.acquire(timeout=30):
            raise DatabaseUnavailable("No database connection became free within 30 s.")
        conn = None
        broken = False
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            with conn.cursor() as cursor:
                yield cursor
            conn.commit()
        except CONNECTION_ERRORS as exc:
            broken = True
            raise DatabaseUnavailable(f"The database is unavailable: {exc}".strip()) from exc
        except BaseException:
            if conn is not None and not conn.closed:
                try:
                    conn.rollback()
                except CONNECTION_ERRORS:
                    broken = True
            raise
        finally:
            if conn is not None:
                if broken or conn.closed:
                    with contextlib.suppress(Exception):
                        conn.close()
                else:
                    self._idle.put(conn)
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()
