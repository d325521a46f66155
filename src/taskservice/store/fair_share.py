"""Fair share: one user's backlog must not hold up another user's task.

The queue is FIFO, so a user who submits many tasks at once would otherwise have all of them
run before anybody else's. The rule is applied in the claim: a `queued` task steps aside when
its owner already has tasks running and another user, with fewer running, has a task waiting.
Stepping aside sends the task's message to the back of the queue (the consumer publishes it
anew, confirmed, before it acks the old one) and changes nothing else; the next message is
tried at once. So a waiting light user's task starts as soon as a slot frees up, ahead of the
heavy user's backlog, and with several heavy users the one with the fewest tasks running goes
next.

Why this design and not another:
- RabbitMQ priorities would need the priority fixed at publish time, and quorum queues (which
  the many-host deployment wants) have none on the broker versions in use.
- Per-user queues consumed round-robin would need a queue per user: declared, consumed and
  deleted as users come and go, by every worker.
- Claiming some other, fairer task than the message names would break the rule that one
  message carries one task, on which the delivery rules (claims, resends, takeovers) rest.
Here one message still means one task; the order changes, nothing else.

A task steps aside at most ``MAX_DEFERRALS`` times: should the waiting task's own message be
missing (it is re-sent by the sweeper only after a while), the heavy user's messages would
otherwise circle through the queue until then. Past the bound the task runs in queue order.
"""

from __future__ import annotations

import uuid

MAX_DEFERRALS = 3
# Claims decide one at a time (a transaction-scoped advisory lock, held to the claim's commit):
# two claims at once would both see the same running counts, and both take the busy user's
# tasks when its last ones end together. Every claim of a queued task takes it, up to its
# commit: claims are serialised for a few milliseconds each, which bounds a whole deployment
# at a few hundred claims a second, far above what its containers can start.
_DECIDE_LOCK = 0x7461736B66616972  # "taskfair"


def should_step_aside(cursor, owner: uuid.UUID, deferrals: int) -> bool:
    """Whether a `queued` task of ``owner`` should let another user's task go first."""
    if deferrals >= MAX_DEFERRALS:
        return False
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_DECIDE_LOCK,))
    cursor.execute(
        "SELECT count(*) AS running FROM tasks WHERE user_id = %s AND status = 'running'",
        (owner,),
    )
    running = cursor.fetchone()["running"]
    if running == 0:
        return False  # nobody can have fewer: one index lookup more, and the lock
    # The users with queued tasks, found one index probe each (a loose index scan: PostgreSQL
    # has no skip scan of its own), then whether any of them has fewer running than the owner.
    cursor.execute(
        "WITH RECURSIVE waiting(user_id) AS ("
        "  (SELECT user_id FROM tasks WHERE status = 'queued' ORDER BY user_id LIMIT 1)"
        "  UNION ALL"
        "  SELECT (SELECT t.user_id FROM tasks t WHERE t.status = 'queued'"
        "          AND t.user_id > w.user_id ORDER BY t.user_id LIMIT 1)"
        "  FROM waiting w WHERE w.user_id IS NOT NULL)"
        " SELECT EXISTS (SELECT 1 FROM waiting w"
        "  WHERE w.user_id IS NOT NULL AND w.user_id <> %s"
        "  AND (SELECT count(*) FROM tasks r"
        "       WHERE r.status = 'running' AND r.user_id = w.user_id) < %s) AS waiting",
        (owner, running),
    )
    return cursor.fetchone()["waiting"]
