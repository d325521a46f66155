"""The liveness rule: when a task's holder counts as gone, as SQL for the stores' statements.

A task `running` on another worker is taken over (by a claim) or sent anew (by the sweeper) only
when its holder is gone:
- the holder has no row in ``workers`` (it left cleanly, or was forgotten), or
- the holder's heartbeat is older than the lease, *and* the judging worker has itself reached
  the database without a break for a whole lease (``workers.connected_since``).
Both times are the database's own clock. The second condition is what makes a database outage
harmless: while the database is away nobody's heartbeat lands, so afterwards every holder looks
stale; but every judge's run of heartbeats starts anew at the same moment, and a live holder
beats again well within the lease that the judges must wait. (A holder cut off from the
database alone, while others reach it, is judged gone after a lease: that is what a lease
means; its late outcome is refused by the attempt guard, so one outcome is stored.)
"""

# The judge's run of contact is unbroken up to now (its last beat is recent) and a lease long.
_JUDGE_MAY_JUDGE = (
    "EXISTS (SELECT 1 FROM workers j WHERE j.id = %(judge)s"
    " AND j.heartbeat_at > now() - make_interval(secs => %(lease)s / 2.0)"
    " AND j.connected_since <= now() - make_interval(secs => %(lease)s))"
)
HOLDER_GONE = (
    f"(w.id IS NULL OR (w.heartbeat_at <= now() - make_interval(secs => %(lease)s)"
    f" AND {_JUDGE_MAY_JUDGE}))"
)
