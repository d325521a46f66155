"""Delivery: claiming a task for one attempt, storing that attempt's outcome, and finding the
tasks whose message must be sent anew. See ``taskservice.model`` for the transitions, and
``store.liveness`` for when a task's holder counts as gone.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import replace
from datetime import datetime

from taskservice.content_types import describe
from taskservice.model import ClaimedTask, RunOutcome, TaskStatus
from taskservice.ports import NO_CHANGES, TaskChanges, UnitsOfWork
from taskservice.store.fair_share import should_step_aside
from taskservice.store.liveness import HOLDER_GONE
from taskservice.store.rows import (
    OUTCOME_COLUMNS,
    TASK_COLUMNS,
    claimed_from_row,
    outcome_from_row,
    task_from_row,
)
from taskservice.store.task_files import (
    ARTIFACT_LIST_COLUMN,
    artifact_listing,
    insert_artifacts,
    select_files,
    servable_artifacts,
)

CANCELLED_WHILE_RUNNING = (
    "Cancelled by its owner while it ran; the output is what the program wrote until then."
)

# How often one task's id may be sent anew per claim, by the sweeper and idempotent repeats
# together: with the first message, a task never has more than 1 + MAX_RESENDS in flight.
MAX_RESENDS = 3


class ClaimResult(enum.Enum):
    CLAIMED = "claimed"
    MISSING = "missing"  # no such task: the message is poison
    ALREADY_FINAL = "already_final"  # a redelivery of a finished task: skip it
    BUSY_ELSEWHERE = "busy_elsewhere"  # running on a worker that is still alive: wait
    GAVE_UP = "gave_up"  # attempts ran out; the task was ended as `error`
    DEFERRED = "deferred"  # another user's task goes first: send this one to the queue's back
    CANCELLED = "cancelled"  # its owner cancelled it while its holder, now gone, ran it


_CLAIMED_COLUMNS = f"{TASK_COLUMNS}, code, stdin, arguments"


class DeliveryStore:
    def __init__(self, db: UnitsOfWork, changes: TaskChanges = NO_CHANGES):
        self._db = db
        self._changes = changes  # told of each committed transition (the status cache)

    def claim(
        self,
        task_id: uuid.UUID,
        worker_id: uuid.UUID,
        now: datetime,
        max_attempts: int,
        lease_seconds: float,
        claim_token: uuid.UUID | None = None,
    ) -> tuple[ClaimResult, ClaimedTask | None]:
        """queued|running -> running for one more attempt, held by ``worker_id``.

        The task comes back when it was claimed, and when it was ended instead (GAVE_UP).
        A `queued` task may step aside for another user's instead (DEFERRED; ``fair_share``).

        ``claim_token`` names this claim: retried with the same token after its answer was lost,
        the claim finds its own committed write and returns it without taking another attempt.
        """
        claim_token = claim_token or uuid.uuid4()
        result, row, outcome = self._claim(
            task_id, worker_id, now, max_attempts, lease_seconds, claim_token
        )
        if row is not None:  # committed: a claim (or a retry finding its own), or giving up
            self._changes.task_changed(task_from_row(row), outcome)
        if result is ClaimResult.CLAIMED:
            # Read apart from the claim: a task's files never change while it may run.
            with self._db.statement() as cursor:
                files = select_files(cursor, task_id)
            return result, replace(claimed_from_row(row), files=files)
        if result in (ClaimResult.GAVE_UP, ClaimResult.CANCELLED):
            return result, claimed_from_row(row)  # the task that ended, to record its outcome
        return result, None

    def _claim(self, task_id, worker_id, now, max_attempts, lease_seconds, claim_token):
        """(result, the task's row after the transition or None, the outcome if it ended)."""
        params = {"task": task_id, "judge": worker_id, "lease": lease_seconds}
        with self._db.transaction() as cursor:
            cursor.execute(
                "SELECT t.status, t.attempts, t.user_id, t.deferrals,"
                " t.cancel_requested_at IS NOT NULL AS cancel_requested,"
                " t.claimed_by = %(judge)s AS mine,"
                f" {HOLDER_GONE} AS holder_gone"
                " FROM tasks t LEFT JOIN workers w ON w.id = t.claimed_by"
                " WHERE t.id = %(task)s FOR UPDATE OF t",
                params,
            )
            row = cursor.fetchone()
            if row is None:
                return ClaimResult.MISSING, None, None
            if TaskStatus(row["status"]).is_final:
                return ClaimResult.ALREADY_FINAL, None, None
            if row["status"] == TaskStatus.RUNNING and row["mine"]:
                cursor.execute(
                    f"SELECT {_CLAIMED_COLUMNS} FROM tasks WHERE id = %s AND claim_token = %s",
                    (task_id, claim_token),
                )
                own = cursor.fetchone()
                if own is not None:
                    return ClaimResult.CLAIMED, own, None
                # Held by this very worker under another claim: it runs a task once at a time,
                # so that claim's run is over (its outcome was lost): claim it again.
            elif row["status"] == TaskStatus.RUNNING and not row["holder_gone"]:
                return ClaimResult.BUSY_ELSEWHERE, None, None
            elif row["status"] == TaskStatus.QUEUED and should_step_aside(
                cursor, row["user_id"], row["deferrals"]
            ):
                # Its message goes out again now: the sweeper's pause between resends counts
                # from here, so a task that only waits its turn is not taken for one whose
                # message went missing.
                cursor.execute(
                    "UPDATE tasks SET deferrals = deferrals + 1, requeued_at = now() WHERE id = %s",
                    (task_id,),
                )
                return ClaimResult.DEFERRED, None, None
            if row["cancel_requested"]:
                # Its owner asked to cancel it while the worker now gone ran it: end it here.
                cursor.execute(
                    "UPDATE tasks SET status = 'cancelled', finished_at = %s, error = %s,"
                    f" claimed_by = %s WHERE id = %s RETURNING {_CLAIMED_COLUMNS}",
                    (now, CANCELLED_WHILE_RUNNING, worker_id, task_id),
                )
                ended = RunOutcome(status=TaskStatus.CANCELLED, error=CANCELLED_WHILE_RUNNING)
                return ClaimResult.CANCELLED, cursor.fetchone(), ended
            if row["attempts"] >= max_attempts:
                error = (
                    f"Gave up after {row['attempts']} attempts: the worker running this task"
                    " stopped before it finished each time."
                )
                cursor.execute(
                    "UPDATE tasks SET status = 'error', finished_at = %s, error = %s,"
                    f" claimed_by = %s WHERE id = %s RETURNING {_CLAIMED_COLUMNS}",
                    (now, error, worker_id, task_id),
                )
                ended = RunOutcome(status=TaskStatus.ERROR, error=error)
                return ClaimResult.GAVE_UP, cursor.fetchone(), ended
            cursor.execute(
                "UPDATE tasks SET status = 'running', started_at = %s, attempts = attempts + 1,"
                " claimed_by = %s, claim_token = %s, resends = 0 WHERE id = %s"
                f" RETURNING {_CLAIMED_COLUMNS}",
                (now, worker_id, claim_token, task_id),
            )
            return ClaimResult.CLAIMED, cursor.fetchone(), None

    def finish(
        self, task_id: uuid.UUID, attempt: int, outcome: RunOutcome, now: datetime
    ) -> TaskStatus | None:
        """running -> final, for the attempt that was claimed; the status stored, or None if
        that attempt is stale.

        A cancel asked while the task ran wins: the status stored is then `cancelled`, with the
        output read until the kill. Retried with the same ``now`` after its answer was lost, it
        recognises its own write (this attempt, this finishing time, this output) and answers
        the same again.
        """
        if not outcome.status.is_final:
            raise ValueError(f"{outcome.status} is not a final status")
        outcome = servable_artifacts(outcome)
        infos = tuple(describe(artifact) for artifact in outcome.artifacts)
        # Artifacts go in the same transaction as the outcome: none without it, so a stale
        # attempt's finish, refused, stores none either.
        plain = not outcome.artifacts and not outcome.artifacts_truncated
        with self._db.statement() if plain else self._db.transaction() as cursor:
            cursor.execute(
                "UPDATE tasks SET"
                " status = CASE WHEN cancel_requested_at IS NULL THEN %s ELSE 'cancelled' END,"
                " error = CASE WHEN cancel_requested_at IS NULL THEN %s ELSE %s END,"
                " finished_at = %s, exit_code = %s, stdout = %s,"
                " stderr = %s, stdout_truncated = %s, stderr_truncated = %s, duration_ms = %s,"
                " oom_killed = %s, signal = %s, memory_peak_bytes = %s, artifacts_truncated = %s"
                " WHERE id = %s AND status = 'running' AND attempts = %s"
                f" RETURNING {TASK_COLUMNS}, {OUTCOME_COLUMNS}",
                (
                    outcome.status.value,
                    outcome.error,
                    CANCELLED_WHILE_RUNNING,
                    now,
                    outcome.exit_code,
                    outcome.stdout,
                    outcome.stderr,
                    outcome.stdout_truncated,
                    outcome.stderr_truncated,
                    outcome.duration_ms,
                    outcome.oom_killed,
                    outcome.signal,
                    outcome.memory_peak_bytes,
                    outcome.artifacts_truncated,
                    task_id,
                    attempt,
                ),
            )
            row = cursor.fetchone()
            if row is not None:
                insert_artifacts(cursor, task_id, outcome.artifacts, infos)
        if row is not None:
            stored = replace(outcome_from_row(row), artifact_list=artifact_listing(infos))
        else:
            row = self._own_finish(task_id, attempt, outcome, now)
            if row is None:
                return None
            stored = outcome_from_row(row)  # its artifact_list read back with it
        # What was stored, which a cancel may have changed, is what readers must see.
        self._changes.task_changed(task_from_row(row), stored)
        return TaskStatus(row["status"])

    def _own_finish(self, task_id, attempt, outcome, now):
        """The row as this very finish left it, if an earlier try of it was committed."""
        with self._db.statement() as cursor:
            cursor.execute(
                f"SELECT {TASK_COLUMNS}, {OUTCOME_COLUMNS}, {ARTIFACT_LIST_COLUMN} FROM tasks"
                " WHERE id = %s AND attempts = %s AND status IN (%s, 'cancelled')"
                " AND finished_at = %s AND exit_code IS NOT DISTINCT FROM %s"
                " AND stdout = %s AND stderr = %s",
                (
                    task_id,
                    attempt,
                    outcome.status.value,
                    now,
                    outcome.exit_code,
                    outcome.stdout,
                    outcome.stderr,
                ),
            )
            return cursor.fetchone()

    def cancel_requested(self, task_id: uuid.UUID) -> bool:
        """Whether the task's owner has asked to cancel it (the runner asks between tries)."""
        with self._db.statement() as cursor:
            cursor.execute(
                "SELECT cancel_requested_at IS NOT NULL AS asked FROM tasks WHERE id = %s",
                (task_id,),
            )
            row = cursor.fetchone()
        return bool(row and row["asked"])

    def cancels_for(self, worker_id: uuid.UUID) -> list[uuid.UUID]:
        """The tasks this worker runs whose owners have asked to cancel them."""
        with self._db.statement() as cursor:
            cursor.execute(
                "SELECT id FROM tasks WHERE claimed_by = %s AND status = 'running'"
                " AND cancel_requested_at IS NOT NULL",
                (worker_id,),
            )
            return [row["id"] for row in cursor.fetchall()]

    def due_for_requeue(
        self,
        judge_id: uuid.UUID,
        lease_seconds: float,
        queued_after_seconds: float,
        resend_after_seconds: float,
        limit: int = 100,
    ) -> list[uuid.UUID]:
        """Tasks that nothing would move again unless their message is sent anew (the sweeper).

        A task `running` on a worker that is gone (the rule above, judged by ``judge_id``), and a
        task still `queued` long after it was made, whose message may never have been sent (the
        API died between storing and publishing it). A message already sent may simply be
        waiting in a long queue, so each task is returned at most ``MAX_RESENDS`` times per
        claim, the pauses between doubling from ``resend_after_seconds``, across all workers:
        a backlog does not grow with the sweeps. The claim makes any duplicate harmless.
        """
        with self._db.transaction() as cursor:
            cursor.execute(
                "UPDATE tasks SET requeued_at = now(), resends = resends + 1 WHERE id IN ("
                " SELECT t.id FROM tasks t LEFT JOIN workers w ON w.id = t.claimed_by"
                f" WHERE ((t.status = 'running' AND {HOLDER_GONE})"
                "     OR (t.status = 'queued'"
                "         AND t.created_at < now() - make_interval(secs => %(queued_after)s)))"
                " AND t.resends < %(max_resends)s"
                " AND (t.requeued_at IS NULL OR t.requeued_at < now()"
                "      - make_interval(secs => %(resend_after)s * power(2, t.resends)))"
                " ORDER BY t.created_at LIMIT %(limit)s FOR UPDATE OF t SKIP LOCKED)"
                " RETURNING id",
                {
                    "judge": judge_id,
                    "lease": lease_seconds,
                    "queued_after": queued_after_seconds,
                    "resend_after": resend_after_seconds,
                    "max_resends": MAX_RESENDS,
                    "limit": limit,
                },
            )
            return [row["id"] for row in cursor.fetchall()]

    def give_back_resends(self, task_ids: list[uuid.UUID]) -> None:
        """Undo the count of resends that were counted but never sent (the broker refused)."""
        with self._db.statement() as cursor:
            cursor.execute(
                "UPDATE tasks SET resends = greatest(resends - 1, 0) WHERE id = ANY(%s)",
                (list(task_ids),),
            )
