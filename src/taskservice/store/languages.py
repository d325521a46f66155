"""Language versions as the workers found them in the images."""

from __future__ import annotations


class LanguageVersionStore:
    def __init__(self, db):
        self._db = db

    def report(self, name: str, image: str, version: str) -> None:
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT INTO language_versions (name, version, image, reported_at)"
                " VALUES (%s, %s, %s, now()) ON CONFLICT (name) DO UPDATE"
                " SET version = EXCLUDED.version, image = EXCLUDED.image, reported_at = now()",
                (name, version, image),
            )

    def versions(self) -> dict[str, str]:
        """name -> version, for the languages some worker has reported."""
        with self._db.transaction() as cursor:
            cursor.execute("SELECT name, version FROM language_versions")
            return {row["name"]: row["version"] for row in cursor.fetchall()}
