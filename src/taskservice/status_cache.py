"""Redis as a cache of what `GET /status` and `GET /result` answer, and as the signal that a
task changed. PostgreSQL stays the one source of truth: every write here follows a commit there,
and anything this cache cannot vouch for is read from PostgreSQL.

The rules, and what each one guarantees:

1. **Versioned writes: never older than the database.** An entry carries
   ``version = rank * 1000 + attempts`` (rank: queued 1, running 2, final 9; attempts are at most
   ``MAX_ATTEMPTS``, at most 100). A write is a Lua
   compare-and-set that keeps whichever entry has the higher version, so a late writer (an API
   process that stored `queued` after the worker stored `running`, a claim's write that lands
   after its finish's) can never replace a newer state with an older one, and a final entry is
   never replaced at all.
2. **Freshness: readers converge.** A writer can die between its commit and its write here,
   leaving an older state. So a non-final entry says until when it may be trusted: `queued` for
   ``QUEUED_TRUST_SECONDS`` after it was written, `running` until its attempt's deadline (start
   plus time limit plus ``RUNNING_SLACK_SECONDS``). Past that a reader goes to PostgreSQL and
   writes what it found; an equal version is accepted when it is trusted for longer, which is
   how the trust moves on. What a reader writes of a non-final state is trusted for
   ``QUEUED_TRUST_SECONDS`` only: it may have been read just before a commit whose own write
   was then refused or lost. A final entry is trusted until it expires.
3. **A failed write removes the entry.** When a write-through is refused (an error reply) the writer
   deletes the key, so readers fall back to PostgreSQL rather than trust an entry that could not
   be replaced. (A write that fails because Redis is unreachable cannot delete either; rule 2
   bounds how long the entry it left is trusted.)
4. **Ownership without a database read.** An entry names the task's owner, so another user gets
   the same 404 as for an unknown id from the cache alone; an id PostgreSQL does not know is
   remembered as absent (version 0, so any real state replaces it) for ``ABSENT_TTL_SECONDS``.
5. **Deleted data is never served.** When a finished task's code, stdin and output are deleted
   (retention, or its owner's DELETE), its entry is replaced by a tombstone: the same status, no
   result, when and why the data went, and a version above any final one (rank 10), so a
   reader's fill of the row as it was before the deletion, landing late, is refused like any
   older state (rule 1). A batch of tombstones is written in one pipeline.
6. **Signals that cannot be missed.** An accepted write publishes on the task's channel in the
   same script. A waiter subscribes first and reads second (``waits``), so a change between the
   two reaches it either way.

Redis away: each call gives up after a short socket timeout (``redis_client``) and answers "not
known" (a miss, or False), and for ``PAUSE_AFTER_FAILURE_SECONDS`` after a failure Redis is not
asked at all, so a dead Redis costs a request nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from taskservice import json_codec
from taskservice.metrics import NO_METRICS, REDIS, NoMetrics
from taskservice.model import RunOutcome, Task, TaskResult, TaskStatus
from taskservice.task_channels import channel
from taskservice.task_views import deletion_body, result_body, status_body

log = logging.getLogger(__name__)

QUEUED_TRUST_SECONDS = 2.0
RUNNING_SLACK_SECONDS = 30.0
ABSENT_TTL_SECONDS = 60
PAUSE_AFTER_FAILURE_SECONDS = 1.0
# "Trusted until it expires": beyond any deadline, still an exact float in Lua and JSON.
FOREVER = 1e15
_RANK = {TaskStatus.QUEUED: 1, TaskStatus.RUNNING: 2}
_FINAL_RANK = 9
_DELETED_RANK = 10

# KEYS: entry, channel. ARGV: version, trusted_until, owner, status json, result json, ttl ms,
# deletion json.
# An accepted write sets the fields, the expiry, and publishes the status on the channel.
_COMPARE_AND_SET = """
local current = redis.call('HMGET', KEYS[1], 'v', 't')
local version, trusted = tonumber(ARGV[1]), tonumber(ARGV[2])
local current_version = tonumber(current[1])
if current_version then
  if version < current_version then return 0 end
  if version == current_version and trusted <= tonumber(current[2]) then return 0 end
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 't', ARGV[2], 'o', ARGV[3], 's', ARGV[4], 'r', ARGV[5],
  'd', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', KEYS[2], ARGV[4])
return 1
"""


def entry_key(task_id: uuid.UUID) -> str:
    return f"taskservice:task:{task_id}"


_FIELDS = ("t", "o", "s")
_FIELDS_WITH_RESULT = ("t", "o", "s", "r", "d")


def read_command(task_id: uuid.UUID, with_result: bool = False) -> tuple:
    """The Redis command that reads ``task_id``'s entry (``StatusCache.get`` takes its reply)."""
    return ("HMGET", entry_key(task_id), *(_FIELDS_WITH_RESULT if with_result else _FIELDS))


def version_of(task: Task, deleted: bool = False) -> int:
    if deleted:
        return _DELETED_RANK * 1000 + task.attempts
    rank = _FINAL_RANK if task.status.is_final else _RANK[task.status]
    return rank * 1000 + task.attempts


@dataclass(frozen=True)
class CachedTask:
    """What the cache knows of one task. ``owner`` None: the task is known not to exist."""

    owner: uuid.UUID | None
    status: dict | None  # the body of GET /status
    result: dict | None  # the body of GET /result's 200, once final
    deleted: dict | None = None  # once the result was deleted: when and why (task_views)

    @property
    def is_final(self) -> bool:
        return self.result is not None or self.deleted is not None


class StatusCache:
    def __init__(
        self,
        client: redis.Redis,
        ttl_seconds: int,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: NoMetrics = NO_METRICS,
    ):
        self._client = client
        self._metrics = metrics
        self._ttl_ms = ttl_seconds * 1000
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)
        self._paused_until = 0.0
        self._lock = threading.Lock()

    # --- reads ----------------------------------------------------------------------------

    def get(
        self, task_id: uuid.UUID, with_result: bool = False, read: list | None = None
    ) -> CachedTask | None:
        """The trusted entry of ``task_id``; None: a miss, an entry past its trust, or no Redis.
        ``read``: the reply to ``read_command`` already fetched (sent along with another round
        trip); without it (or with one of other fields) Redis is asked now."""
        if read is None or len(read) != len(_FIELDS_WITH_RESULT if with_result else _FIELDS):
            # execute_command, not hmget(): redis-py wraps hmget in a deprecation check that
            # inspects its signature on every call, a tenth of this request's CPU.
            command = read_command(task_id, with_result)
            read = self._call(lambda: self._client.execute_command(*command))
        return self._entry_of(read, with_result)

    def same_server(self, client: redis.Redis) -> bool:
        """Whether ``client`` talks to this cache's Redis (its commands may carry our reads)."""
        ours = self._client.connection_pool.connection_kwargs
        theirs = client.connection_pool.connection_kwargs
        return all(ours.get(k) == theirs.get(k) for k in ("host", "port", "path", "db"))

    def _entry_of(self, values: list | None, with_result: bool) -> CachedTask | None:
        if not values or values[0] is None:
            return None
        trusted_until = float(values[0])
        if self._wall_clock() >= trusted_until:
            return None  # rule 2: PostgreSQL may know better
        owner = values[1].decode()
        if not owner:
            return CachedTask(owner=None, status=None, result=None)
        result = values[3] if with_result else None
        deleted = values[4] if with_result else None
        return CachedTask(
            owner=uuid.UUID(owner),
            status=json_codec.loads(values[2]),
            result=json_codec.loads(result) if result else None,
            deleted=json_codec.loads(deleted) if deleted else None,
        )

    # --- writes ---------------------------------------------------------------------------

    def task_changed(self, task: Task, outcome: RunOutcome | None) -> None:
        """Write through the state just committed (``outcome`` with a final status)."""
        self.put(TaskResult(task, outcome if task.status.is_final else None))

    def put(self, state: TaskResult, read_back: bool = False) -> bool:
        """Write ``state`` through. ``read_back``: a reader's fill from PostgreSQL, not a
        writer's own commit; a non-final state read may already have moved on, so it is trusted
        for ``QUEUED_TRUST_SECONDS`` only (a writer's later write may have been the one lost)."""
        return self._write(*self._entry(state, read_back))

    def task_purged(self, states: Sequence[TaskResult]) -> None:
        """Rule 5: the data of these tasks (each with its ``deleted``) was just deleted; their
        entries become tombstones, all in one round trip."""
        if not states:
            return
        pipe = self._client.pipeline(transaction=False)
        written = [self._entry(state, read_back=False) for state in states]
        for keys, args in written:
            self._compare_and_set(keys=keys, args=args, client=pipe)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            self._failed(exc)
            replies = [exc] * len(written)
        refused = [
            keys[0]
            for (keys, _), reply in zip(written, replies, strict=True)
            if isinstance(reply, Exception)
        ]
        if refused:
            self._forget(refused)  # rule 3

    def _entry(self, state: TaskResult, read_back: bool) -> tuple[list, list]:
        """The compare-and-set's keys and arguments for ``state``."""
        task = state.task
        if task.status.is_final:
            trusted_until = FOREVER
        elif task.status is TaskStatus.RUNNING and task.started_at is not None:
            trusted_until = (
                task.started_at.timestamp() + task.timeout_seconds + RUNNING_SLACK_SECONDS
            )
        else:
            trusted_until = self._wall_clock() + QUEUED_TRUST_SECONDS
        if read_back and not task.status.is_final:
            trusted_until = min(trusted_until, self._wall_clock() + QUEUED_TRUST_SECONDS)
        result = result_body(task, state.outcome) if state.outcome is not None else None
        deleted = deletion_body(state.deleted) if state.deleted is not None else None
        return [entry_key(task.id), channel(task.id)], [
            version_of(task, deleted=deleted is not None),
            repr(float(trusted_until)),
            str(task.user_id),
            # Output as UTF-8, not \u escapes: up to 6 times smaller in Redis.
            json.dumps(status_body(task), ensure_ascii=False),
            json.dumps(result, ensure_ascii=False) if result is not None else "",
            self._ttl_ms,
            json.dumps(deleted) if deleted is not None else "",
        ]

    def put_absent(self, task_id: uuid.UUID) -> bool:
        """Rule 4: PostgreSQL has no such task; say so for a while."""
        until = self._wall_clock() + ABSENT_TTL_SECONDS
        keys = [entry_key(task_id), channel(task_id)]
        args = [0, repr(float(until)), "", "{}", "", ABSENT_TTL_SECONDS * 1000, ""]
        return self._write(keys, args)

    def _write(self, keys: list, args: list) -> bool:
        # Not skipped while reads pause after a failure: a skipped write would leave the entry
        # it should have replaced trusted (rule 3). An unreachable Redis refuses a connection at
        # once, so the attempt costs next to nothing.
        try:
            return bool(self._compare_and_set(keys=keys, args=args))
        except redis.RedisError as exc:
            self._failed(exc)
        self._forget([keys[0]])
        return False

    def _forget(self, keys: list[str]) -> None:
        # Rule 3: an entry a write could not replace must not be trusted. (Unreachable, Redis
        # cannot delete either; rule 2 bounds the trust of what it holds.)
        with contextlib.suppress(redis.RedisError):
            self._client.delete(*keys)

    # --- Redis away -----------------------------------------------------------------------

    def _paused(self) -> bool:
        return self._monotonic() < self._paused_until

    def _failed(self, exc: Exception) -> None:
        self._metrics.dependency_error(REDIS)
        with self._lock:
            if not self._paused():
                log.warning("status cache unavailable, reading PostgreSQL: %s", exc)
            self._paused_until = self._monotonic() + PAUSE_AFTER_FAILURE_SECONDS

    def _call(self, operation):
        if self._paused():
            return None
        try:
            return operation()
        except redis.RedisError as exc:
            self._failed(exc)
            return None


class NoCache:
    """No Redis configured for this piece (tests of the store alone): every answer is a miss."""

    def get(self, task_id: uuid.UUID, with_result: bool = False, read: list | None = None) -> None:
        return None

    def task_changed(self, task: Task, outcome: RunOutcome | None) -> None:
        return None

    def put(self, state: TaskResult, read_back: bool = False) -> bool:
        return False

    def task_purged(self, states: Sequence[TaskResult]) -> None:
        return None

    def put_absent(self, task_id: uuid.UUID) -> bool:
        return False
