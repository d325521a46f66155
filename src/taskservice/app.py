"""The WSGI application: ``create_app`` only wires; ``get_app`` builds the real collaborators."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import falcon

from taskservice import errors, http_errors, tracing
from taskservice.api_keys import ApiKeys
from taskservice.auth import AuthMiddleware, PasswordHasher, TokenService
from taskservice.clock import Clock, IdGenerator, new_id, utc_now
from taskservice.config import Config, load_config
from taskservice.judge0 import errors as judge0_errors
from taskservice.judge0 import resources as judge0
from taskservice.metrics.api import ApiMetrics, MetricsMiddleware, MetricsResource
from taskservice.ports import TaskPublisher, UnitsOfWork
from taskservice.readiness import Readiness
from taskservice.request_ids import RequestIdMiddleware
from taskservice.resources.accounts import LoginResource, RegisterResource
from taskservice.resources.api_keys import ApiKeyResource, ApiKeysResource
from taskservice.resources.docs import OpenApiResource, SwaggerUiResource
from taskservice.resources.health import HealthResource
from taskservice.resources.languages import LanguagesResource
from taskservice.resources.me import MeResource, account_limits
from taskservice.resources.ready import ReadyResource
from taskservice.resources.task_lifecycle import TaskCancelResource, TaskListResource
from taskservice.resources.tasks import TaskResultResource, TasksResource, TaskStatusResource
from taskservice.services import Accounts, TaskSubmissions
from taskservice.status_cache import NoCache, StatusCache, redis_client
from taskservice.store.api_keys import ApiKeyStore
from taskservice.store.db import Database
from taskservice.store.judge0 import Judge0Store
from taskservice.store.languages import LanguageVersionStore
from taskservice.store.task_listing import TaskListing
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.task_queries import TaskQueries
from taskservice.validation import TaskLimits
from taskservice.waits import TaskWaits

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Collaborators:
    db: UnitsOfWork
    publisher: TaskPublisher
    hasher: PasswordHasher
    clock: Clock = utc_now
    new_id: IdGenerator = new_id
    # Without Redis every read goes to PostgreSQL and waits check it once a second.
    cache: StatusCache | NoCache = field(default_factory=NoCache)
    waits: TaskWaits = field(default_factory=lambda: TaskWaits(None))
    # A registry of its own: GET /metrics shows this app's requests alone.
    metrics: ApiMetrics = field(default_factory=ApiMetrics)


class BodyLimitMiddleware:
    """Refuses a body larger than the resource accepts before anything reads it."""

    def process_resource(self, req: falcon.Request, resp, resource, params) -> None:
        limit = getattr(resource, "max_body_bytes", DEFAULT_BODY_LIMIT)
        if req.content_length is not None and req.content_length > limit:
            raise http_errors.PayloadTooLarge(f"The request body is over {limit} bytes.")
        if req.content_length is None and req.get_header("Transfer-Encoding"):
            # Falcon reads a body of unknown length as empty; say so rather than answer as if
            # the client had sent nothing. (nginx in front turns chunked bodies into sized ones.)
            raise falcon.HTTPLengthRequired(
                title="Length required",
                description="Send the request body with a Content-Length header, not chunked.",
            )


def _json_loads(text: str):
    try:
        return json.loads(text)
    except RecursionError:
        # A few thousand nested brackets fit in any body limit and exhaust the parser's stack;
        # Falcon answers 400 for a ValueError, where a RecursionError would be a 500.
        raise ValueError("The JSON is nested too deeply.") from None


def create_app(
    config: Config, collaborators: Collaborators, docs_root: Path = PROJECT_ROOT
) -> falcon.App:
    tokens = TokenService(config.jwt_secret, config.jwt_ttl_seconds, collaborators.clock)
    users = UserStore(collaborators.db)
    accounts = Accounts(
        users,
        collaborators.hasher,
        tokens,
        collaborators.clock,
        collaborators.new_id,
    )
    tasks = TaskStore(collaborators.db, changes=collaborators.cache)
    queries = TaskQueries(tasks, collaborators.cache, collaborators.waits)
    submissions = TaskSubmissions(
        tasks,
        collaborators.publisher,
        collaborators.clock,
        collaborators.new_id,
        collaborators.metrics,
        max_active_tasks=config.user_max_active_tasks,
    )
    limits = TaskLimits(
        languages=frozenset(config.languages),
        timeout_default=config.task_timeout_default,
        timeout_max=config.task_timeout_max,
        memory_default_mb=config.task_memory_mb,
        memory_max_mb=config.task_memory_max_mb,
        max_code_bytes=config.max_code_bytes,
        max_stdin_bytes=config.max_stdin_bytes,
    )

    api_keys = ApiKeys(ApiKeyStore(collaborators.db), collaborators.clock, collaborators.new_id)
    versions = LanguageVersionStore(collaborators.db)

    # Metrics first: its clock starts before, and its count follows, every other middleware.
    metrics = MetricsMiddleware(collaborators.metrics)
    auth = AuthMiddleware(tokens, api_keys)
    app = falcon.App(middleware=[metrics, RequestIdMiddleware(), BodyLimitMiddleware(), auth])
    app.req_options.strip_url_path_trailing_slash = False
    # JSON only: Falcon would otherwise also parse form bodies into media.
    app.req_options.media_handlers = falcon.media.Handlers(
        {falcon.MEDIA_JSON: falcon.media.JSONHandler(loads=_json_loads)}
    )
    app.set_error_serializer(http_errors.serialize_error)
    app.add_error_handler(Exception, http_errors.map_unexpected_error)
    app.add_error_handler(errors.DomainError, http_errors.map_domain_error)
    app.add_error_handler(judge0_errors.Judge0Error, judge0_errors.handle)

    openapi = OpenApiResource(docs_root / "openapi.yaml")
    swagger = SwaggerUiResource(docs_root / "static" / "swagger")

    # The route table: every URL the service answers, in one place.
    app.add_route("/", HealthResource())
    app.add_route("/ready", ReadyResource(Readiness.of_service(config)))
    app.add_route("/metrics", MetricsResource(collaborators.metrics))
    app.add_route("/register", RegisterResource(accounts))
    app.add_route("/login", LoginResource(accounts))
    app.add_route("/me", MeResource(users, tasks, account_limits(config)))
    max_wait = config.max_wait_seconds
    app.add_route("/task", TasksResource(submissions, queries, limits, max_wait))
    app.add_route("/tasks", TaskListResource(TaskListing(collaborators.db), limits.languages))
    app.add_route("/task/{task_id:uuid}/cancel", TaskCancelResource(tasks, collaborators.clock))
    app.add_route("/status/{task_id:uuid}", TaskStatusResource(queries))
    app.add_route("/result/{task_id:uuid}", TaskResultResource(queries, max_wait))
    app.add_route("/languages", LanguagesResource(config, versions))
    app.add_route("/openapi.yaml", openapi)
    app.add_route("/openapi.json", openapi, suffix="json")
    app.add_route("/swagger", swagger, suffix="redirect")
    app.add_route("/swagger/", swagger)
    app.add_route("/swagger/{filename}", swagger)

    # API keys, and the Judge0-compatible API (taskservice.judge0): its submissions are tasks.
    app.add_route("/api-keys", ApiKeysResource(api_keys))
    app.add_route("/api-keys/{key_id:uuid}", ApiKeyResource(api_keys))
    j0 = judge0.Judge0(config, submissions, queries, Judge0Store(collaborators.db), versions)
    app.add_route("/judge0/about", judge0.AboutResource())
    app.add_route("/judge0/config_info", judge0.ConfigInfoResource(j0))
    app.add_route("/judge0/statuses", judge0.StatusesResource())
    app.add_route("/judge0/languages", judge0.LanguagesResource(j0))
    app.add_route("/judge0/languages/{language_id}", judge0.LanguagesResource(j0), suffix="one")
    app.add_route("/judge0/submissions", judge0.SubmissionsResource(j0))
    app.add_route("/judge0/submissions/batch", judge0.BatchResource(j0))
    app.add_route("/judge0/submissions/{token}", judge0.SubmissionResource(j0))
    return app


def get_app(config: Config | None = None) -> falcon.App:
    """The real application, for gunicorn. Connections open lazily, after the fork."""
    from taskservice.queue import Publisher  # the HTTP layer itself never touches pika

    config = config or load_config()
    config.check_api()
    tracing.configure_api(config)  # here, after gunicorn's fork; a no-op unless tracing is on
    redis = redis_client(config.redis_url)  # connects on first use
    # All gunicorn processes' values, added up (taskservice.metrics.multiprocess).
    metrics = ApiMetrics(config.prometheus_multiproc_dir)
    collaborators = Collaborators(
        db=Database(config.database_url, size=config.db_pool_size, metrics=metrics),
        publisher=Publisher(
            config.amqp_url, config.queue_name, config.broker_timeout_seconds, metrics=metrics
        ),
        hasher=PasswordHasher(config.bcrypt_rounds),
        cache=StatusCache(redis, config.status_cache_ttl_seconds, metrics=metrics),
        waits=TaskWaits(redis, metrics=metrics, max_waiting=config.max_waiting_requests),
        metrics=metrics,
    )
    return create_app(config, collaborators)
