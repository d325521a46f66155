"""GET /tasks stays an index range scan for a user with 100,000 tasks: no sort, no OFFSET.

The listing's own SQL is captured from the store and EXPLAINed (ANALYZE) on a database of its
own holding one user's 100,000 tasks (and another user's, to skip).
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import psycopg2
import psycopg2.extras
import pytest

from taskservice.model import TaskStatus
from taskservice.store.task_listing import ListingQuery, TaskListing
from tests.conftest import RUN_ID
from tests.service import own_database_and_queues

TASKS = 100_000


class CapturingDatabase:
    """Runs the store's statement on a real connection and keeps its SQL and parameters."""

    def __init__(self, connection):
        self._connection = connection
        self.captured: list[tuple[str, tuple]] = []

    @contextlib.contextmanager
    def statement(self):
        with self._connection.cursor() as cursor:
            yield self._Recorder(cursor, self.captured)

    transaction = statement

    class _Recorder:
        def __init__(self, cursor, captured):
            self._cursor, self._captured = cursor, captured

        def execute(self, sql, params=None):
            self._captured.append((sql, params))
            return self._cursor.execute(sql, params)

        def __getattr__(self, name):
            return getattr(self._cursor, name)


@pytest.fixture(scope="module")
def populated(base_config):
    base = replace(base_config, queue_name=f"{base_config.queue_name}.listing-plan")
    with own_database_and_queues(base, f"taskservice_test_{RUN_ID}_listing") as config:
        connection = psycopg2.connect(
            config.database_url, cursor_factory=psycopg2.extras.RealDictCursor
        )
        connection.autocommit = True
        heavy, light = uuid.uuid4(), uuid.uuid4()
        with connection.cursor() as cursor:
            for user in (heavy, light):
                cursor.execute(
                    "INSERT INTO users (id, username, password_hash) VALUES (%s, %s, 'x')",
                    (user, f"u{user.hex[:12]}"),
                )
            # Every tenth task failed, the rest succeeded; one a second, oldest first.
            cursor.execute(
                "INSERT INTO tasks (id, user_id, language, code, timeout_seconds, memory_mb,"
                " status, created_at)"
                " SELECT gen_random_uuid(), %s, 'python', 'print(1)', 5, 128,"
                " CASE WHEN n %% 10 = 0 THEN 'failed' ELSE 'succeeded' END,"
                " timestamptz '2030-01-01' + make_interval(secs => n)"
                " FROM generate_series(1, %s) AS n",
                (heavy, TASKS),
            )
            cursor.execute(
                "INSERT INTO tasks (id, user_id, language, code, timeout_seconds, memory_mb,"
                " status, created_at) SELECT gen_random_uuid(), %s, 'python', '', 5, 128,"
                " 'succeeded', now() FROM generate_series(1, 1000)",
                (light,),
            )
            cursor.execute("ANALYZE tasks")
        yield connection, heavy
        connection.close()


def explain(connection, sql: str, params) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params)
        return cursor.fetchone()["QUERY PLAN"][0]


def nodes(plan: dict) -> list[dict]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


@pytest.mark.parametrize(
    ("status", "index"),
    [(None, "tasks_user_listing"), (TaskStatus.FAILED, "tasks_user_status_listing")],
)
def test_a_deep_page_is_an_index_range_scan(populated, status, index):
    connection, heavy = populated
    db = CapturingDatabase(connection)
    listing = TaskListing(db)
    # A page deep in the list: after the 50,000th newest task.
    middle = datetime(2030, 1, 1, tzinfo=UTC).timestamp() + TASKS // 2
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT created_at, id FROM tasks WHERE user_id = %s AND created_at = to_timestamp(%s)",
            (heavy, middle),
        )
        position = cursor.fetchone()
    query = ListingQuery(limit=20, status=status, after=(position["created_at"], position["id"]))
    tasks, more = listing.page(heavy, query)
    assert len(tasks) == 20 and more
    assert all(task.created_at < position["created_at"] for task in tasks)

    sql, params = db.captured[-1]
    plan = explain(connection, sql, params)
    kinds = [node["Node Type"] for node in nodes(plan["Plan"])]
    scans = [node for node in nodes(plan["Plan"]) if "Index" in node["Node Type"]]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING ON) {sql}", params)
        print("\n".join(row["QUERY PLAN"] for row in cursor.fetchall()))
    assert "Sort" not in kinds and "Seq Scan" not in kinds, kinds
    assert [scan["Index Name"] for scan in scans] == [index]
    # It reads about the page, not the user's history.
    assert scans[0]["Actual Rows"] <= 21
    assert plan["Plan"]["Shared Hit Blocks"] + plan["Plan"].get("Shared Read Blocks", 0) < 100
