"""Use cases behind the HTTP resources: accounts and task submission."""

from __future__ import annotations

import hashlib
import logging
import uuid

from taskservice.auth import IssuedToken, PasswordHasher, TokenService
from taskservice.clock import Clock, IdGenerator
from taskservice.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    InvalidCredentials,
    TaskNotFinished,
    TooManyActiveTasks,
)
from taskservice.metrics import NO_METRICS, NoMetrics
from taskservice.model import IdempotencyKey, Task, TaskRequest, TaskStatus
from taskservice.ports import TaskPublisher
from taskservice.store.retention import RetentionStore
from taskservice.store.tasks import AlsoStore, CancelResult, TaskStore
from taskservice.store.users import User, UserStore
from taskservice.task_queries import TaskQueries
from taskservice.webhooks.destinations import DestinationGuard
from taskservice.webhooks.signing import new_secret

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
        if not self._hasher.is_current(user.password_hash):
            # A hash from before passphrases of any length: the password is at hand only now.
            new_hash = self._hasher.hash(password)
            self._users.replace_password_hash(user.id, user.password_hash, new_hash)
        return self._tokens.issue(user.id)


class WebhookSecrets:
    """The per-user secret that signs webhooks: made on first need, replaced on request."""

    def __init__(self, users: UserStore):
        self._users = users

    def current(self, user_id: uuid.UUID, known: str | None = None) -> str | None:
        """The user's secret (``known``: as just read), made now if it has none; None when
        the account is gone."""
        return known or self._users.ensure_webhook_secret(user_id, new_secret())

    def rotate(self, user_id: uuid.UUID) -> str | None:
        secret = new_secret()
        return secret if self._users.replace_webhook_secret(user_id, secret) else None


def request_fingerprint(request: TaskRequest) -> str:
    """Identifies a submission's content, defaults applied, for idempotency checks."""
    digest = hashlib.sha256()
    parts = [
        request.language.encode(),
        request.code,
        request.stdin,
        str(request.timeout_seconds).encode(),
        str(request.memory_mb).encode(),
    ]
    if request.callback_url is not None:
        # Only when there is one, so that the keys stored before callbacks existed still match.
        parts.append(request.callback_url.encode())
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    # Only when there are any, so that the fingerprints stored before arguments existed still
    # match their repeats.
    for argument in request.arguments:
        part = argument.encode()
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    # Likewise the files, only when there are any; a marker keeps a file's name and content
    # from being taken for two arguments.
    if request.files:
        digest.update(b"\x00files")
        for file in request.files:
            for part in (file.name.encode(), file.content):
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
        destinations: DestinationGuard | None = None,
    ):
        self._tasks = tasks
        self._destinations = destinations or DestinationGuard()
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
        if request.callback_url is not None:
            # Before anything is stored: a URL that may not be called is a 400 (CallbackUrlRefused).
            self._destinations.check(request.callback_url)
        idempotency = (
            IdempotencyKey(idempotency_key, request_fingerprint(request))
            if idempotency_key is not None
            else None
        )
        # Stored first, published second: a worker that gets the message always finds the task.
        try:
            task, created = self._tasks.create(
                self._new_id(),
                user_id,
                request,
                self._clock(),
                idempotency,
                max_active=self._max_active_tasks,
                also=also,
            )
        except TooManyActiveTasks:
            self._metrics.rate_limited("active_tasks")  # with the rate limits' refusals
            raise
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


# How long DELETE of a running task waits for its worker to stop it after the cancel.
STOP_WAIT_SECONDS = 10.0


class TaskDataDeletion:
    """DELETE /task/{id}: a task's code, stdin and output deleted at its owner's request
    (``store.retention`` says what stays). A task not yet finished is cancelled first."""

    def __init__(
        self,
        store: RetentionStore,
        clock: Clock,
        tasks: TaskStore,
        queries: TaskQueries,
        stop_wait_seconds: float = STOP_WAIT_SECONDS,
    ):
        self._store = store
        self._clock = clock
        self._tasks = tasks
        self._queries = queries
        self._stop_wait = stop_wait_seconds

    def delete(self, user_id: uuid.UUID, task_id: uuid.UUID) -> bool:
        """True once the data is gone, now or before (a repeat); False when ``user_id`` has no
        such task. A running task is cancelled and waited for; one that has not stopped within
        ``stop_wait_seconds`` raises ``TaskNotFinished`` (its cancel stands: a repeat deletes)."""
        state = self._store.delete_for_owner(task_id, user_id, self._clock())
        if state is None:
            return False
        if state.deleted is not None:
            return True
        cancelled = self._tasks.cancel(task_id, user_id, self._clock())
        if cancelled is not None and cancelled[0] is CancelResult.REQUESTED:
            # Its worker kills it within about a second and stores `cancelled`.
            self._queries.result(user_id, task_id, wait_seconds=self._stop_wait)
        state = self._store.delete_for_owner(task_id, user_id, self._clock())
        if state is None:
            return False
        if state.deleted is None:
            raise TaskNotFinished(state.task.status.value)
        return True
