"""Use cases behind the HTTP resources: accounts and task submission."""

from __future__ import annotations

import hashlib
import logging
import uuid

from taskservice.auth import IssuedToken, PasswordHasher, TokenService
from taskservice.clock import Clock, IdGenerator
from taskservice.errors import BrokerUnavailable, DatabaseUnavailable, InvalidCredentials
from taskservice.metrics import NO_METRICS, NoMetrics
from taskservice.model import IdempotencyKey, Task, TaskRequest, TaskStatus
from taskservice.ports import TaskPublisher
from taskservice.store.tasks import AlsoStore, TaskStore
from taskservice.store.users import User, UserStore

log = logging.getLogger(__name__)


class Accounts:
    def __init__(
        self,
        users: UserStore,
        hasher: PasswordHasher,
        tokens: TokenService,
        clock: Clock,
        new_id: IdGenerator,
    ):
        self._users = users
        self._hasher = hasher
        self._tokens = tokens
        self._clock = clock
        self._new_id = new_id

    def register(self, username: str, password: str) -> User:
        password_hash = self._hasher.hash(password)
        return self._users.create(self._new_id(), username, password_hash, self._clock())

    def login(self, username: str, password: str) -> IssuedToken:
        user = self._users.find_by_username(username)
        # Always run bcrypt, against a dummy hash when there is no such user, so both failures
        # take the same time and give the same answer.
        matched = self._hasher.verify(password, user.password_hash if user else None)
        if user is None or not matched:
            raise InvalidCredentials()
        return self._tokens.issue(user.id)


def request_fingerprint(request: TaskRequest) -> str:
    """Identifies a submission's content, defaults applied, for idempotency checks."""
    digest = hashlib.sha256()
    for part in (
        request.language.encode(),
        request.code,
        request.stdin,
        str(request.timeout_seconds).encode(),
        str(request.memory_mb).encode(),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    # Only when there are any, so that the fingerprints stored before arguments existed still
    # match their repeats.
    for argument in request.arguments:
        part = argument.encode()
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


# An idempotent repeat of a still-queued task sends its id anew at most this often: the first
# request may have died between storing and publishing, but a client that repeats in a loop
# must not be able to pile up messages.
REPEAT_RESEND_INTERVAL_SECONDS = 10.0
NEVER_QUEUED = "The message broker was unavailable, so the task was never queued; nothing ran."


class TaskSubmissions:
    def __init__(
        self,
        tasks: TaskStore,
        publisher: TaskPublisher,
        clock: Clock,
        new_id: IdGenerator,
        metrics: NoMetrics = NO_METRICS,
        max_active_tasks: int | None = None,
    ):
        self._tasks = tasks
        self._max_active_tasks = max_active_tasks
        self._publisher = publisher
        self._clock = clock
        self._new_id = new_id
        self._metrics = metrics

    def submit(
        self,
        user_id: uuid.UUID,
        request: TaskRequest,
        idempotency_key: str | None = None,
        also: AlsoStore | None = None,
    ) -> tuple[Task, bool]:
        """Store and queue a task; return it and whether it is new (False: an idempotent repeat).

        ``also`` stores more about the task in the same unit of work (see ``TaskStore.create``).
        """
        idempotency = (
            IdempotencyKey(idempotency_key, request_fingerprint(request))
            if idempotency_key is not None
            else None
        )
        # Stored first, published second: a worker that gets the message always finds the task.
        task, created = self._tasks.create(
            self._new_id(),
            user_id,
            request,
            self._clock(),
            idempotency,
            max_active=self._max_active_tasks,
            also=also,
        )
        if not created:
            # The first request may have died between storing and publishing; a second message
            # is harmless (the claim skips what is running or done), a lost one not.
            if task.status is TaskStatus.QUEUED and self._tasks.mark_resend(
                task.id, REPEAT_RESEND_INTERVAL_SECONDS
            ):
                try:
                    self._publisher.publish(task.id)
                except BrokerUnavailable:
                    self._tasks.give_back_resend(task.id)  # not sent: the bound is for sends
                    raise
            return task, False
        try:
            self._publisher.publish(task.id)
        except BrokerUnavailable:
            # The client gets a 503 and never learns this id, and no message for it exists, so
            # the task is ended as `error` now rather than left `queued` forever. Should the
            # broker have kept the message after all, the worker finds a final task and skips it.
            # Should a worker have taken it already, the message did get through: accepted.
            try:
                failed = self._tasks.fail_unqueued(task.id, NEVER_QUEUED, self._clock())
            except DatabaseUnavailable:
                # Neither the broker nor the database now: the task stays stored as `queued`, and
                # the sweeper sends it once the broker is back. A 503 would be a lie the task
                # could outlive (it would run after the client gave up on it, or twice after a
                # retry), so the client is told the truth: accepted, to run later.
                log.warning("task %s stored but not queued yet; the sweeper will send it", task.id)
                self._metrics.task_submitted(task.language)
                return task, True
            if failed:
                raise
        self._metrics.task_submitted(task.language)
        return task, True
