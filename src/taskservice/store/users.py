"""Accounts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg2.errors

from taskservice.errors import UsernameTaken


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    username: str
    password_hash: str


class UserStore:
    def __init__(self, db):
        self._db = db

    def create(self, user_id: uuid.UUID, username: str, password_hash: str, now: datetime) -> User:
        try:
            with self._db.transaction() as cursor:
                cursor.execute(
                    "INSERT INTO users (id, username, password_hash, created_at)"
                    " VALUES (%s, %s, %s, %s)",
                    (user_id, username, password_hash, now),
                )
        except psycopg2.errors.UniqueViolation:
            raise UsernameTaken(username) from None
        return User(user_id, username, password_hash)

    def find_by_username(self, username: str) -> User | None:
        with self._db.transaction() as cursor:
            cursor.execute(
                "SELECT id, username, password_hash FROM users WHERE lower(username) = lower(%s)",
                (username,),
            )
            row = cursor.fetchone()
        return User(**row) if row else None

    def profile(self, user_id: uuid.UUID) -> dict | None:
        """The account as its owner sees it: id, username, when it was made, webhook secret."""
        with self._db.statement() as cursor:
            cursor.execute(
                "SELECT id, username, created_at, webhook_secret FROM users WHERE id = %s",
                (user_id,),
            )
            return cursor.fetchone()

    def replace_password_hash(self, user_id: uuid.UUID, old_hash: str, new_hash: str) -> None:
        """Store ``new_hash`` unless the hash changed meanwhile (then the newer one stays)."""
        with self._db.statement() as cursor:
            cursor.execute(
                "UPDATE users SET password_hash = %s WHERE id = %s AND password_hash = %s",
                (new_hash, user_id, old_hash),
            )

    def ensure_webhook_secret(self, user_id: uuid.UUID, candidate: str) -> str | None:
        """The user's webhook secret, ``candidate`` becoming it if there is none yet (accounts
        get theirs lazily); None when there is no such user. Two concurrent callers get the
        same secret: the UPDATE re-reads a row that another one changed meanwhile."""
        with self._db.statement() as cursor:
            cursor.execute(
                "UPDATE users SET webhook_secret = coalesce(webhook_secret, %s) WHERE id = %s"
                " RETURNING webhook_secret",
                (candidate, user_id),
            )
            row = cursor.fetchone()
        return row["webhook_secret"] if row else None

    def replace_webhook_secret(self, user_id: uuid.UUID, secret: str) -> bool:
        """Make ``secret`` the user's webhook secret; False when there is no such user."""
        with self._db.statement() as cursor:
            cursor.execute("UPDATE users SET webhook_secret = %s WHERE id = %s", (secret, user_id))
            return cursor.rowcount == 1
