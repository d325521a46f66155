"""The /judge0 endpoints. Reading Judge0's input is ``requests`` and ``query_params``, writing
its submissions ``views``; ``TaskSubmissions`` stores and queues a submission as any task."""

from __future__ import annotations

import math
import threading
import time
import uuid

import falcon

from taskservice.config import Config
from taskservice.errors import ServiceUnavailable, TooManyActiveTasks
from taskservice.judge0 import catalog
from taskservice.judge0.errors import Judge0Error, bad_request, not_found, unprocessable_message
from taskservice.judge0.query_params import fields_param, flag, only_parameters
from taskservice.judge0.requests import Judge0Limits, Judge0Submission
from taskservice.judge0.requests import submission as parse_submission
from taskservice.judge0.views import DEFAULT_FIELDS, FIELDS, SubmissionView
from taskservice.model import Task
from taskservice.services import TaskSubmissions
from taskservice.store.judge0 import Judge0Extras, Judge0Store, insert_extras
from taskservice.store.languages import LanguageVersionStore
from taskservice.task_queries import TaskQueries

SUBMISSION_NOT_FOUND = "submission not found"
# Versions change only when a worker with another image starts.
_VERSIONS_TTL_SECONDS = 30.0


class Judge0:
    """What the /judge0 resources share: the limits, the catalog and the use cases."""

    def __init__(
        self,
        config: Config,
        submissions: TaskSubmissions,
        queries: TaskQueries,
        store: Judge0Store,
        versions: LanguageVersionStore,
    ):
        self.config = config
        self.limits = Judge0Limits.of(config)
        self.info = catalog.config_info(config)
        self.languages = catalog.languages(config)
        self.view = SubmissionView(self.info)
        self.max_wait = config.max_wait_seconds
        self._submissions = submissions
        self._queries = queries
        self._store = store
        self._versions = versions
        self._versions_cache: tuple[dict[str, str], float] | None = None
        self._lock = threading.Lock()
        # Base64 and JSON escapes make a body up to 6 bytes per byte of its texts; the zip of
        # additional_files stores its files' bytes at worst, with a header per file.
        texts = config.max_code_bytes + config.max_stdin_bytes + config.max_output_bytes
        zipped = config.max_files_bytes + config.max_files * 1024
        self.max_body_bytes = 6 * (texts + zipped) + 8192

    def versions(self) -> dict[str, str]:
        """The versions the workers reported (GET /languages), read at most every 30 s once
        every language has one (until then, on every call: a worker is starting)."""
        with self._lock:
            cached = self._versions_cache
            if cached is None or time.monotonic() - cached[1] > _VERSIONS_TTL_SECONDS:
                versions = self._versions.versions()
                complete = all(entry.language.name in versions for entry in self.languages.values())
                cached = (versions, time.monotonic() if complete else -math.inf)
                self._versions_cache = cached
        return cached[0]

    def language_names(self) -> dict[int, str]:
        versions = self.versions()
        return {language_id: entry.name(versions) for language_id, entry in self.languages.items()}

    def submit(self, user_id: uuid.UUID, parsed: Judge0Submission) -> Task:
        extras = Judge0Extras(
            language_id=parsed.language_id,
            expected_output=parsed.expected_output,
            command_line_arguments=parsed.command_line_arguments,
            cpu_time_limit=parsed.cpu_time_limit,
            wall_time_limit=parsed.wall_time_limit,
            memory_limit=parsed.memory_limit,
        )
        task, _ = self._submissions.submit(
            user_id,
            parsed.task,
            also=lambda cursor, task_id: insert_extras(cursor, task_id, extras),
        )
        return task

    def wait(self, user_id: uuid.UUID, task_id: uuid.UUID) -> None:
        self._queries.result(user_id, task_id, self.max_wait)

    def bodies(
        self, user_id: uuid.UUID, tokens: list[str], fields: tuple[str, ...], encoded: bool
    ) -> list[dict | None]:
        """The user's submissions, in the order of ``tokens``; None for an unknown token."""
        ids = [_task_id(token) for token in tokens]
        records = self._store.records(user_id, [task_id for task_id in ids if task_id])
        names = self.language_names() if "language" in fields else {}
        return [
            self.view.body(records[task_id], fields, encoded, names) if task_id in records else None
            for task_id in ids
        ]


def _task_id(token: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(token.strip())
    except ValueError:
        return None


class AboutResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = catalog.about()


class ConfigInfoResource:
    def __init__(self, judge0: Judge0):
        self._info = judge0.info

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._info


class StatusesResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = [catalog.status_body(status) for status in catalog.Judge0Status]


class LanguagesResource:
    def __init__(self, judge0: Judge0):
        self._judge0 = judge0

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        names = self._judge0.language_names()
        resp.media = [{"id": language_id, "name": name} for language_id, name in names.items()]

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, language_id: str) -> None:
        entry = self._judge0.languages.get(int(language_id)) if language_id.isdigit() else None
        if entry is None:
            raise not_found(f"language with id {language_id[:40]} doesn't exist")
        resp.media = entry.detail(self._judge0.versions())


class SubmissionsResource:
    auth_required = True

    def __init__(self, judge0: Judge0):
        self._judge0 = judge0
        self.max_body_bytes = judge0.max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        judge0 = self._judge0
        only_parameters(req.params, {"base64_encoded", "wait", "fields"})
        encoded = flag(req.params, "base64_encoded")
        wait = flag(req.params, "wait")
        if wait and judge0.max_wait <= 0:
            raise bad_request("wait not allowed")
        fields = fields_param(req.get_param("fields"), FIELDS, DEFAULT_FIELDS)
        parsed = parse_submission(req.get_media(), encoded, judge0.limits)
        user_id = req.context.user_id
        task = judge0.submit(user_id, parsed)
        resp.status = falcon.HTTP_201
        if not wait:
            resp.media = {"token": str(task.id)}
            return
        judge0.wait(user_id, task.id)
        resp.media = judge0.bodies(user_id, [str(task.id)], fields, encoded)[0]


class SubmissionResource:
    # A resource of its own, not a suffixed responder: AuthMiddleware looks for ``on_get``.
    auth_required = True

    def __init__(self, judge0: Judge0):
        self._judge0 = judge0

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        only_parameters(req.params, {"base64_encoded", "fields"})
        encoded = flag(req.params, "base64_encoded")
        fields = fields_param(req.get_param("fields"), FIELDS, DEFAULT_FIELDS)
        body = self._judge0.bodies(req.context.user_id, [token], fields, encoded)[0]
        if body is None:
            raise not_found(SUBMISSION_NOT_FOUND)
        resp.media = body


class BatchResource:
    auth_required = True

    def __init__(self, judge0: Judge0):
        self._judge0 = judge0
        self.max_body_bytes = judge0.max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        judge0 = self._judge0
        only_parameters(req.params, {"base64_encoded"})
        encoded = flag(req.params, "base64_encoded")
        media = req.get_media()
        items = media.get("submissions") if isinstance(media, dict) else None
        if not isinstance(items, list):
            raise bad_request('the body must be {"submissions": [...]}')
        if not all(isinstance(item, dict) for item in items):
            # Not a submission at all: the body's shape is wrong, not one item's content.
            raise bad_request("each of submissions must be an object")
        _check_batch_size(len(items), "submissions")
        user_id = req.context.user_id
        answers = []
        # Each item on its own, as Judge0 does: a token, or what is wrong with that item.
        for item in items:
            try:
                task = judge0.submit(user_id, parse_submission(item, encoded, judge0.limits))
            except Judge0Error as exc:
                answers.append(exc.body)
            except (TooManyActiveTasks, ServiceUnavailable) as exc:
                answers.append({"error": _item_error(exc)})
            else:
                answers.append({"token": str(task.id)})
        resp.status = falcon.HTTP_201
        resp.media = answers

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        only_parameters(req.params, {"tokens", "base64_encoded", "fields"})
        encoded = flag(req.params, "base64_encoded")
        fields = fields_param(req.get_param("fields"), FIELDS, DEFAULT_FIELDS)
        raw = req.get_param("tokens")
        if not raw:
            raise bad_request("tokens is required: a comma-separated list of tokens")
        tokens = [token for token in raw.split(",") if token.strip()]
        _check_batch_size(len(tokens), "tokens")
        resp.media = {
            "submissions": self._judge0.bodies(req.context.user_id, tokens, fields, encoded)
        }


def _check_batch_size(count: int, what: str) -> None:
    if not 1 <= count <= catalog.MAX_BATCH_SIZE:
        raise unprocessable_message(
            f"number of {what} in a batch should be between 1 and {catalog.MAX_BATCH_SIZE}"
        )


def _item_error(exc: Exception) -> str:
    if isinstance(exc, TooManyActiveTasks):
        return (
            f"You have {exc.limit} tasks queued or running, the most allowed at once;"
            " this submission was not stored."
        )
    return "The service is unavailable; this submission was not queued. Try again shortly."
