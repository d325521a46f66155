"""A task's files in (``task_files``) and artifacts out (``task_artifacts``).

The statements here run inside the units of work of the task's own transitions: files are
stored with the task (TaskStore.create), read by its claim, and artifacts stored with its
outcome (DeliveryStore.finish), so a refused finish stores none. Reads of an artifact's bytes
check the task's owner and whether its data was deleted, in the same statement.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from taskservice.model import ArtifactInfo, RunOutcome, TaskFile
from taskservice.ports import UnitsOfWork
from taskservice.task_files import name_problem


def artifact_list_column(tasks: str = "tasks") -> str:
    """The listing of a task's artifacts as one JSON value, for a SELECT of ``tasks`` (the
    table's name or alias): GET /result's ``artifacts`` without another round trip
    (rows.artifact_list)."""
    return (
        "(SELECT coalesce(json_agg(json_build_object('name', a.name, 'size', a.size,"
        " 'content_type', a.content_type, 'sha256', a.sha256)"
        " ORDER BY a.name COLLATE \"C\"), '[]')"
        f" FROM task_artifacts a WHERE a.task_id = {tasks}.id) AS artifact_list"
    )


ARTIFACT_LIST_COLUMN = artifact_list_column()


def insert_files(cursor, task_id: uuid.UUID, files: Sequence[TaskFile]) -> None:
    """In the unit of work that stores the task."""
    if files:
        cursor.executemany(
            "INSERT INTO task_files (task_id, position, name, content) VALUES (%s, %s, %s, %s)",
            [(task_id, position, file.name, file.content) for position, file in enumerate(files)],
        )


def select_files(cursor, task_id: uuid.UUID) -> tuple[TaskFile, ...]:
    cursor.execute(
        "SELECT name, content FROM task_files WHERE task_id = %s ORDER BY position", (task_id,)
    )
    return tuple(TaskFile(row["name"], bytes(row["content"])) for row in cursor.fetchall())


def insert_artifacts(
    cursor, task_id: uuid.UUID, artifacts: Sequence[TaskFile], infos: Sequence[ArtifactInfo]
) -> None:
    """In the unit of work that stores the outcome. A name given twice keeps its first file
    (the sandbox never sends one twice; a forged stream could)."""
    if artifacts:
        cursor.executemany(
            "INSERT INTO task_artifacts (task_id, name, size, content_type, sha256, content)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (task_id, name) DO NOTHING",
            [
                (task_id, info.name, info.size, info.content_type, info.sha256, artifact.content)
                for artifact, info in zip(artifacts, infos, strict=True)
            ],
        )


# Deletes the files and artifacts of the tasks a data-modifying statement's CTE ``purged``
# returns (``id``): appended to the retention statements, so the rows go in the same statement
# as the task's code and output.
DELETE_FILES_OF_PURGED = (
    ", gone_files AS (DELETE FROM task_files WHERE task_id IN (SELECT id FROM purged))"
    ", gone_artifacts AS (DELETE FROM task_artifacts WHERE task_id IN (SELECT id FROM purged))"
)


class ArtifactLookup(enum.Enum):
    FOUND = "found"
    NO_TASK = "no_task"  # no such task of this user
    DELETED = "deleted"  # the task's data was deleted
    NO_ARTIFACT = "no_artifact"


@dataclass(frozen=True)
class StoredArtifact:
    info: ArtifactInfo
    content: bytes


class ArtifactStore:
    def __init__(self, db: UnitsOfWork):
        self._db = db

    def get_for_owner(
        self, task_id: uuid.UUID, user_id: uuid.UUID, name: str
    ) -> tuple[ArtifactLookup, StoredArtifact | None]:
        """One artifact of the user's task, in one statement."""
        with self._db.statement() as cursor:
            cursor.execute(
                "SELECT t.data_deleted_at IS NOT NULL AS deleted, a.name, a.size,"
                " a.content_type, a.sha256, a.content"
                " FROM tasks t LEFT JOIN task_artifacts a ON a.task_id = t.id AND a.name = %s"
                " WHERE t.id = %s AND t.user_id = %s",
                (name, task_id, user_id),
            )
            row = cursor.fetchone()
        if row is None:
            return ArtifactLookup.NO_TASK, None
        if row["deleted"]:
            return ArtifactLookup.DELETED, None
        if row["name"] is None:
            return ArtifactLookup.NO_ARTIFACT, None
        info = ArtifactInfo(row["name"], row["size"], row["content_type"], row["sha256"])
        return ArtifactLookup.FOUND, StoredArtifact(info, bytes(row["content"]))


def servable_artifacts(outcome: RunOutcome) -> RunOutcome:
    """The outcome with only artifacts whose names the service can store and serve (the rules
    of taskservice.task_files). The sandbox sends no other; a program that forges its output
    channel could, and then the rest are left out as for the caps: ``artifacts_truncated``."""
    kept = tuple(a for a in outcome.artifacts if name_problem(a.name) is None)
    if len(kept) == len(outcome.artifacts):
        return outcome
    return replace(outcome, artifacts=kept, artifacts_truncated=True)


def artifact_listing(infos: tuple[ArtifactInfo, ...]) -> tuple[ArtifactInfo, ...]:
    """As GET /result lists them when read back: by name (code point order, as COLLATE "C"
    sorts UTF-8), a name once (the first)."""
    first: dict[str, ArtifactInfo] = {}
    for info in infos:
        first.setdefault(info.name, info)
    return tuple(sorted(first.values(), key=lambda info: info.name))
