"""API keys: rows hold the SHA-256 of a key, never the key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

# last_used_at is written at most this often per key: a key in heavy use costs no write per
# request, and the column is still right to the minute.
LAST_USED_RESOLUTION_SECONDS = 60


@dataclass(frozen=True)
class ApiKeyRow:
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class KeyOwner:
    key_id: uuid.UUID
    user_id: uuid.UUID
    # Whether last_used_at is older than LAST_USED_RESOLUTION_SECONDS (or unset).
    use_is_stale: bool


class ApiKeyStore:
    def __init__(self, db):
        self._db = db

    def create(
        self, key_id: uuid.UUID, user_id: uuid.UUID, name: str, key_hash: bytes, now: datetime
    ) -> ApiKeyRow:
        with self._db.statement() as cursor:
            cursor.execute(
                "INSERT INTO api_keys (id, user_id, name, key_hash, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (key_id, user_id, name, key_hash, now),
            )
        return ApiKeyRow(key_id, name, now, None)

    def count(self, user_id: uuid.UUID) -> int:
        with self._db.statement() as cursor:
            cursor.execute("SELECT count(*) AS n FROM api_keys WHERE user_id = %s", (user_id,))
            return cursor.fetchone()["n"]

    def list(self, user_id: uuid.UUID) -> list[ApiKeyRow]:
        with self._db.statement() as cursor:
            cursor.execute(
                "SELECT id, name, created_at, last_used_at FROM api_keys"
                " WHERE user_id = %s ORDER BY created_at, id",
                (user_id,),
            )
            return [ApiKeyRow(**row) for row in cursor.fetchall()]

    def delete(self, key_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        with self._db.statement() as cursor:
            cursor.execute("DELETE FROM api_keys WHERE id = %s AND user_id = %s", (key_id, user_id))
            return cursor.rowcount == 1

    def owner(self, key_hash: bytes) -> KeyOwner | None:
        with self._db.statement() as cursor:
            cursor.execute(
                "SELECT id, user_id, (last_used_at IS NULL OR last_used_at"
                " < now() - make_interval(secs => %s)) AS stale"
                " FROM api_keys WHERE key_hash = %s",
                (LAST_USED_RESOLUTION_SECONDS, key_hash),
            )
            row = cursor.fetchone()
        return KeyOwner(row["id"], row["user_id"], row["stale"]) if row else None

    def touch(self, key_id: uuid.UUID) -> None:
        """Set last_used_at to now, unless another process did so within the resolution."""
        with self._db.statement() as cursor:
            cursor.execute(
                "UPDATE api_keys SET last_used_at = now() WHERE id = %s AND (last_used_at IS NULL"
                " OR last_used_at < now() - make_interval(secs => %s))",
                (key_id, LAST_USED_RESOLUTION_SECONDS),
            )
