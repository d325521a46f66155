"""Worker liveness: each worker process keeps its row fresh while it runs.

``connected_since`` is the start of the worker's current unbroken run of heartbeats: a beat that
comes more than half a lease after the one before starts a new run. It tells whether this
worker has been able to reach the database for a whole lease, which is what entitles it to
judge another worker dead (see ``delivery``).
"""

from __future__ import annotations

import uuid

from taskservice.ports import UnitsOfWork


class WorkerRegistry:
    def __init__(self, db: UnitsOfWork):
        self._db = db

    def heartbeat(
        self, worker_id: uuid.UUID, hostname: str, pid: int, lease_seconds: float
    ) -> None:
        with self._db.statement() as cursor:
            cursor.execute(
                "INSERT INTO workers (id, hostname, pid, started_at, heartbeat_at, connected_since)"
                " VALUES (%s, %s, %s, now(), now(), now())"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(),"
                "  connected_since = CASE"
                "   WHEN workers.heartbeat_at < now() - make_interval(secs => %s) THEN now()"
                "   ELSE workers.connected_since END",
                (worker_id, hostname, pid, lease_seconds / 2),
            )

    def leave(self, worker_id: uuid.UUID) -> None:
        """A clean exit: its tasks can be taken over at once, without waiting for the lease."""
        with self._db.statement() as cursor:
            cursor.execute("DELETE FROM workers WHERE id = %s", (worker_id,))

    def forget_stale(self, older_than_seconds: float) -> int:
        with self._db.statement() as cursor:
            cursor.execute(
                "DELETE FROM workers WHERE heartbeat_at < now() - make_interval(secs => %s)",
                (older_than_seconds,),
            )
            return cursor.rowcount
