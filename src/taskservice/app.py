"""The WSGI application: ``create_app`` only wires; ``get_app`` builds the real collaborators."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import falcon
from limits.storage import RedisStorage, Storage

from taskservice import errors, http_errors, json_codec, tracing
from taskservice.api_keys import ApiKeys
from taskservice.auth import AuthMiddleware, PasswordHasher, TokenService
from taskservice.body_budget import BodyBudget
from taskservice.body_budget_middleware import BodyBudgetMiddleware
from taskservice.body_limit import BodyLimitMiddleware
from taskservice.body_sizes import MIB
from taskservice.client_addresses import ClientAddresses
from taskservice.clock import Clock, IdGenerator, new_id, utc_now
from taskservice.config import Config
from taskservice.config_loader import load_config
from taskservice.cors import cors_middleware
from taskservice.json_body import CheckedJSONHandler
from taskservice.judge0 import errors as judge0_errors
from taskservice.judge0 import resources as judge0
from taskservice.malloc_arenas import limit_malloc_arenas
from taskservice.metrics.api import ApiMetrics, MetricsMiddleware, MetricsResource
from taskservice.output_streams import OutputReader, reader_client
from taskservice.ports import TaskPublisher, UnitsOfWork
from taskservice.rate_limits import RateLimiter, RateLimitMiddleware, policies, redis_storage
from taskservice.readiness import Readiness
from taskservice.redis_client import redis_client
from taskservice.request_ids import RequestIdMiddleware
from taskservice.resources.accounts import LoginResource, RegisterResource
from taskservice.resources.api_keys import ApiKeyResource, ApiKeysResource
from taskservice.resources.artifacts import ArtifactResource
from taskservice.resources.docs import OpenApiResource
from taskservice.resources.events import TaskEventsResource
from taskservice.resources.health import HealthResource
from taskservice.resources.languages import LanguagesResource
from taskservice.resources.me import MeResource, WebhookSecretResource, account_limits
from taskservice.resources.ready import ReadyResource
from taskservice.resources.static_pages import (
    PLAYGROUND_CSP,
    SWAGGER_CSP,
    StaticPageResource,
)
from taskservice.resources.task_lifecycle import TaskCancelResource, TaskListResource
from taskservice.resources.tasks import (
    TaskResource,
    TaskResultResource,
    TasksResource,
    TaskStatusResource,
)
from taskservice.services import (
    STOP_WAIT_SECONDS,
    Accounts,
    TaskDataDeletion,
    TaskSubmissions,
    WebhookSecrets,
)
from taskservice.status_cache import NoCache, StatusCache
from taskservice.store.api_keys import ApiKeyStore
from taskservice.store.db import Database
from taskservice.store.judge0 import Judge0Store
from taskservice.store.languages import LanguageVersionStore
from taskservice.store.retention import RetentionStore
from taskservice.store.task_files import ArtifactStore
from taskservice.store.task_listing import TaskListing
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.store.webhooks import WebhookStore
from taskservice.task_events import TaskEvents
from taskservice.task_queries import TaskQueries
from taskservice.validation import TaskLimits
from taskservice.waits import TaskWaits
from taskservice.webhooks.destinations import DestinationGuard, Resolver, system_resolver

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
    # Where the rate limits count (rate_limits.py); without one nothing is limited.
    rate_limit_storage: Storage | None = None
    # How callback URLs' hosts are resolved (tests give names addresses without DNS).
    resolver: Resolver = system_resolver
    # Live output's streams (blocking reads: a Redis client of their own). Without Redis the
    # event streams send the output from PostgreSQL once the task is final.
    outputs: OutputReader = field(default_factory=lambda: OutputReader(None))
    # What this process's large request bodies may cost at once (body_budget.py); without one
    # they are not counted.
    body_budget: BodyBudget | None = None


def _rate_limit_middleware(config: Config, collaborators: Collaborators) -> list:
    """After AuthMiddleware: the per-user limits need the user it found."""
    if collaborators.rate_limit_storage is None:
        return []
    limiter = RateLimiter(
        collaborators.rate_limit_storage,
        policies(config.rate_limit_auth, config.rate_limit_submit, config.rate_limit_read),
        collaborators.metrics,
    )
    clients = ClientAddresses(config.trusted_proxy_networks)
    storage, cache = collaborators.rate_limit_storage, collaborators.cache
    # A status read rides on the count's round trip when both are in the same Redis.
    reads_along = (
        isinstance(storage, RedisStorage)
        and isinstance(cache, StatusCache)
        and cache.same_server(storage.get_connection())
    )
    return [RateLimitMiddleware(limiter, clients, collaborators.metrics, reads_along)]


def _body_budget_middleware(config: Config, collaborators: Collaborators) -> list:
    """Last: a request refused for its credentials or its rate waits for no share."""
    if collaborators.body_budget is None:
        return []
    return [
        BodyBudgetMiddleware(
            collaborators.body_budget, config.body_budget_wait_seconds, collaborators.metrics
        )
    ]


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
    # --- Completion webhooks: the callback's state on reads, the URL's check on submits ---
    webhooks = WebhookStore(collaborators.db)
    webhook_secrets = WebhookSecrets(users)
    destinations = DestinationGuard(config.webhook_allowed_host_keys, collaborators.resolver)
    queries = TaskQueries(
        tasks,
        collaborators.cache,
        collaborators.waits,
        retention=timedelta(days=config.result_retention_days),
        clock=collaborators.clock,
        webhooks=webhooks,
    )
    submissions = TaskSubmissions(
        tasks,
        collaborators.publisher,
        collaborators.clock,
        collaborators.new_id,
        collaborators.metrics,
        max_active_tasks=config.user_max_active_tasks,
        destinations=destinations,
    )
    limits = TaskLimits(
        languages=frozenset(config.languages),
        timeout_default=config.task_timeout_default,
        timeout_max=config.task_timeout_max,
        memory_default_mb=config.task_memory_mb,
        memory_max_mb=config.task_memory_max_mb,
        max_code_bytes=config.max_code_bytes,
        max_stdin_bytes=config.max_stdin_bytes,
        max_files=config.max_files,
        max_files_bytes=config.max_files_bytes,
        code_filenames=frozenset(language.filename for language in config.languages.values()),
        language_memory_mb={
            name: language.memory_mb
            for name, language in config.languages.items()
            if language.memory_mb is not None
        },
    )

    api_keys = ApiKeys(ApiKeyStore(collaborators.db), collaborators.clock, collaborators.new_id)
    versions = LanguageVersionStore(collaborators.db)

    # Metrics first: its clock starts before, and its count follows, every other middleware.
    metrics = MetricsMiddleware(collaborators.metrics)
    app = falcon.App(
        middleware=[
            metrics,
            RequestIdMiddleware(),
            *cors_middleware(config.cors_origin_list),
            BodyLimitMiddleware(),
            AuthMiddleware(tokens, api_keys),
            *_rate_limit_middleware(config, collaborators),
            *_body_budget_middleware(config, collaborators),
        ]
    )
    app.req_options.strip_url_path_trailing_slash = False
    # JSON only: Falcon would otherwise also parse form bodies into media. The body's shape is
    # checked while it is read, before it is parsed (json_body.py).
    app.req_options.media_handlers = falcon.media.Handlers(
        {falcon.MEDIA_JSON: CheckedJSONHandler()}
    )
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(
        dumps=json_codec.dumps, loads=json_codec.loads
    )
    app.set_error_serializer(http_errors.serialize_error)
    app.add_error_handler(Exception, http_errors.map_unexpected_error)
    app.add_error_handler(errors.DomainError, http_errors.map_domain_error)
    app.add_error_handler(judge0_errors.Judge0Error, judge0_errors.handle)

    openapi = OpenApiResource(docs_root / "openapi.yaml")
    static = docs_root / "static"
    swagger = StaticPageResource(static / "swagger", "/swagger/", SWAGGER_CSP, "Swagger UI")
    playground = StaticPageResource(
        static / "playground", "/playground/", PLAYGROUND_CSP, "playground"
    )

    # The route table: every URL the service answers, in one place.
    app.add_route("/", HealthResource())
    app.add_route("/ready", ReadyResource(Readiness.of_service(config)))
    app.add_route("/metrics", MetricsResource(collaborators.metrics))
    app.add_route("/register", RegisterResource(accounts))
    app.add_route("/login", LoginResource(accounts))
    app.add_route("/me", MeResource(users, tasks, account_limits(config), webhook_secrets))
    app.add_route("/me/webhook-secret", WebhookSecretResource(webhook_secrets))
    max_wait = config.max_wait_seconds
    app.add_route("/task", TasksResource(submissions, queries, limits, max_wait))
    app.add_route("/tasks", TaskListResource(TaskListing(collaborators.db), limits.languages))
    app.add_route("/task/{task_id:uuid}/cancel", TaskCancelResource(tasks, collaborators.clock))
    app.add_route("/status/{task_id:uuid}", TaskStatusResource(queries))
    app.add_route(
        "/result/{task_id:uuid}",
        TaskResultResource(queries, max_wait, config.result_retention_days),
    )
    # Files a task left in ./out/ (name: one folder level at most, so the path converter).
    app.add_route(
        "/result/{task_id:uuid}/artifacts/{name:path}",
        ArtifactResource(ArtifactStore(collaborators.db)),
    )
    # Retention: a finished task's data deleted at its owner's request.
    deletion = TaskDataDeletion(
        RetentionStore(collaborators.db, changes=collaborators.cache),
        collaborators.clock,
        tasks,
        queries,
        stop_wait_seconds=min(STOP_WAIT_SECONDS, config.max_wait_seconds),
    )
    app.add_route("/task/{task_id:uuid}", TaskResource(deletion))
    # Live output (Server-Sent Events).
    events = TaskEvents(queries, collaborators.outputs, collaborators.waits)
    app.add_route("/task/{task_id:uuid}/events", TaskEventsResource(queries, events))
    app.add_route("/languages", LanguagesResource(config, versions))
    app.add_route("/openapi.yaml", openapi)
    app.add_route("/openapi.json", openapi, suffix="json")
    app.add_route("/swagger", swagger, suffix="redirect")
    app.add_route("/swagger/", swagger)
    app.add_route("/swagger/{filename}", swagger)
    # The playground: a page to write, run and follow code in the browser, on this API.
    app.add_route("/playground", playground, suffix="redirect")
    app.add_route("/playground/", playground)
    app.add_route("/playground/{filename}", playground)

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
    # Before the request threads start: the memory of large bodies goes back between them.
    limit_malloc_arenas()
    redis = redis_client(config.redis_url)  # connects on first use
    # All gunicorn processes' values, added up (taskservice.metrics.multiprocess).
    metrics = ApiMetrics(config.prometheus_multiproc_dir)
    collaborators = Collaborators(
        db=Database(config.database_url, size=config.db_pool_size, metrics=metrics),
        publisher=Publisher(
            config.amqp_url,
            config.queue_name,
            config.broker_timeout_seconds,
            metrics=metrics,
            dead_letter_max_length=config.dead_letter_max_length,
            queue_type=config.queue_type,
        ),
        hasher=PasswordHasher(config.bcrypt_rounds),
        cache=StatusCache(redis, config.status_cache_ttl_seconds, metrics=metrics),
        waits=TaskWaits(redis, metrics=metrics, max_waiting=config.max_waiting_requests),
        metrics=metrics,
        rate_limit_storage=redis_storage(config.redis_url),  # connects on first use
        outputs=OutputReader(reader_client(config.redis_url)),
        body_budget=BodyBudget(config.body_memory_budget_mb * MIB),
    )
    return create_app(config, collaborators)
