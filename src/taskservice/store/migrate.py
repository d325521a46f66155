"""Plain-SQL migrations: files named NNNN_*.sql, applied in order, each recorded once."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import psycopg2

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any fixed number will do: it only keeps two `taskservice migrate` runs from interleaving.
_LOCK_KEY = 7_357_001


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration shipped with the package, in order."""
    folder = resources.files("taskservice.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((Path(entry.name).stem, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(dsn: str) -> list[str]:
    """Apply the migrations not yet recorded; return the versions applied now."""
    applied_now = []
    conn = psycopg2.connect(dsn, connect_timeout=5, application_name="taskservice-migrate")
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cursor.fetchall()}
        conn.autocommit = False
        for version, sql in migration_files():
            if version in done:
                continue
            with conn, conn.cursor() as cursor:
                cursor.execute(sql)
                cursor.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
    finally:
        conn.close()  # also releases the advisory lock, which belongs to the session
    return applied_now
