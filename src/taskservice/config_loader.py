"""The config loader: the one reader of the process environment, which builds the ``Config``
from it and checks every setting at start-up (a bad one is a ConfigError naming its variable)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from taskservice.body_sizes import smallest_budget_mb
from taskservice.config import (
    LOG_FORMATS,
    MIN_SANDBOX_ORPHAN_GRACE_SECONDS,
    TRACE_EXPORTERS,
    WORKER_STOP_SLACK_SECONDS,
    Config,
)
from taskservice.config_parsing import (
    ConfigError,
    checked,
    in_range,
    parse_networks,
    parse_origins,
    parse_setting,
    rate_limit,
)
from taskservice.language_table import default_languages
from taskservice.webhooks.destinations import parse_allowed_hosts


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Build the Config from ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    defaults = Config()
    values = {
        "database_url": parse_setting(env, "DATABASE_URL", str, defaults.database_url),
        "amqp_url": parse_setting(env, "AMQP_URL", str, defaults.amqp_url),
        "redis_url": parse_setting(env, "REDIS_URL", str, defaults.redis_url),
        "status_cache_ttl_seconds": parse_setting(
            env, "STATUS_CACHE_TTL_SECONDS", int, defaults.status_cache_ttl_seconds
        ),
        "max_wait_seconds": parse_setting(
            env, "MAX_WAIT_SECONDS", float, defaults.max_wait_seconds
        ),
        "queue_name": parse_setting(env, "QUEUE_NAME", str, defaults.queue_name),
        "jwt_secret": env.get("JWT_SECRET", ""),
        "jwt_ttl_seconds": parse_setting(env, "JWT_TTL_SECONDS", int, defaults.jwt_ttl_seconds),
        "bcrypt_rounds": parse_setting(env, "BCRYPT_ROUNDS", int, defaults.bcrypt_rounds),
        "host": parse_setting(env, "HOST", str, defaults.host),
        "port": parse_setting(env, "PORT", int, defaults.port),
        "api_workers": parse_setting(env, "API_WORKERS", int, defaults.api_workers),
        "api_threads": parse_setting(env, "API_THREADS", int, defaults.api_threads),
        "worker_concurrency": parse_setting(
            env, "WORKER_CONCURRENCY", int, defaults.worker_concurrency
        ),
        "docker_host": parse_setting(env, "DOCKER_HOST", str, defaults.docker_host),
        "sandbox_image": parse_setting(env, "SANDBOX_IMAGE", str, defaults.sandbox_image),
        "sandbox_data_image": parse_setting(
            env, "SANDBOX_DATA_IMAGE", str, defaults.sandbox_data_image
        ),
        "sandbox_runtime": parse_setting(env, "SANDBOX_RUNTIME", str, defaults.sandbox_runtime),
        "sandbox_orphan_grace_seconds": parse_setting(
            env, "SANDBOX_ORPHAN_GRACE_SECONDS", int, defaults.sandbox_orphan_grace_seconds
        ),
        "task_timeout_default": parse_setting(
            env, "TASK_TIMEOUT_DEFAULT", int, defaults.task_timeout_default
        ),
        "task_timeout_max": parse_setting(env, "TASK_TIMEOUT_MAX", int, defaults.task_timeout_max),
        "task_memory_mb": parse_setting(env, "TASK_MEMORY_MB", int, defaults.task_memory_mb),
        "task_memory_max_mb": parse_setting(
            env, "TASK_MEMORY_MAX_MB", int, defaults.task_memory_max_mb
        ),
        "task_cpus": parse_setting(env, "TASK_CPUS", float, defaults.task_cpus),
        "task_pids": parse_setting(env, "TASK_PIDS", int, defaults.task_pids),
        "task_tmp_mb": parse_setting(env, "TASK_TMP_MB", int, defaults.task_tmp_mb),
        "max_code_bytes": parse_setting(env, "MAX_CODE_BYTES", int, defaults.max_code_bytes),
        "max_stdin_bytes": parse_setting(env, "MAX_STDIN_BYTES", int, defaults.max_stdin_bytes),
        "max_output_bytes": parse_setting(env, "MAX_OUTPUT_BYTES", int, defaults.max_output_bytes),
        "max_attempts": parse_setting(env, "MAX_ATTEMPTS", int, defaults.max_attempts),
        "sandbox_retries": parse_setting(env, "SANDBOX_RETRIES", int, defaults.sandbox_retries),
        "worker_heartbeat_seconds": parse_setting(
            env, "WORKER_HEARTBEAT_SECONDS", float, defaults.worker_heartbeat_seconds
        ),
        "worker_lease_seconds": parse_setting(
            env, "WORKER_LEASE_SECONDS", float, defaults.worker_lease_seconds
        ),
        "sweep_interval_seconds": parse_setting(
            env, "SWEEP_INTERVAL_SECONDS", float, defaults.sweep_interval_seconds
        ),
        "queued_resend_seconds": parse_setting(
            env, "QUEUED_RESEND_SECONDS", float, defaults.queued_resend_seconds
        ),
        "db_pool_size": parse_setting(env, "DB_POOL_SIZE", int, defaults.db_pool_size),
        "broker_timeout_seconds": parse_setting(
            env, "BROKER_TIMEOUT_SECONDS", float, defaults.broker_timeout_seconds
        ),
        "worker_stop_grace_seconds": parse_setting(
            env, "WORKER_STOP_GRACE_SECONDS", int, defaults.worker_stop_grace_seconds
        ),
        "worker_metrics_host": parse_setting(
            env, "WORKER_METRICS_HOST", str, defaults.worker_metrics_host
        ),
        "worker_metrics_port": parse_setting(
            env, "WORKER_METRICS_PORT", int, defaults.worker_metrics_port
        ),
        "prometheus_multiproc_dir": parse_setting(
            env, "PROMETHEUS_MULTIPROC_DIR", str, defaults.prometheus_multiproc_dir
        ),
        "log_format": parse_setting(env, "LOG_FORMAT", str, defaults.log_format).lower(),
        "otel_traces_exporter": parse_setting(
            env, "OTEL_TRACES_EXPORTER", str, defaults.otel_traces_exporter
        ).lower(),
        "user_max_active_tasks": parse_setting(
            env, "USER_MAX_ACTIVE_TASKS", int, defaults.user_max_active_tasks
        ),
        # --- Retention and bounds ---
        "result_retention_days": parse_setting(
            env, "RESULT_RETENTION_DAYS", int, defaults.result_retention_days
        ),
        "dead_letter_max_length": parse_setting(
            env, "DEAD_LETTER_MAX_LENGTH", int, defaults.dead_letter_max_length
        ),
        "prune_batch_size": parse_setting(env, "PRUNE_BATCH_SIZE", int, defaults.prune_batch_size),
        # --- Completion webhooks ---
        "webhook_allowed_hosts": parse_setting(env, "WEBHOOK_ALLOWED_HOSTS", str, ""),
        "webhook_timeout_seconds": parse_setting(
            env, "WEBHOOK_TIMEOUT_SECONDS", float, defaults.webhook_timeout_seconds
        ),
        "webhook_max_attempts": parse_setting(
            env, "WEBHOOK_MAX_ATTEMPTS", int, defaults.webhook_max_attempts
        ),
        "webhook_retry_seconds": parse_setting(
            env, "WEBHOOK_RETRY_SECONDS", float, defaults.webhook_retry_seconds
        ),
        "webhook_concurrency": parse_setting(
            env, "WEBHOOK_CONCURRENCY", int, defaults.webhook_concurrency
        ),
    }
    in_range("RESULT_RETENTION_DAYS", values["result_retention_days"], 1, 36_500)
    in_range("DEAD_LETTER_MAX_LENGTH", values["dead_letter_max_length"], 1, 100_000_000)
    in_range("PRUNE_BATCH_SIZE", values["prune_batch_size"], 1, 100_000)
    in_range("JWT_TTL_SECONDS", values["jwt_ttl_seconds"], 1)
    in_range("BCRYPT_ROUNDS", values["bcrypt_rounds"], 4, 31)
    in_range("PORT", values["port"], 1, 65535)
    in_range("WORKER_METRICS_PORT", values["worker_metrics_port"], 0, 65535)
    in_range("API_WORKERS", values["api_workers"], 1, 64)
    in_range("API_THREADS", values["api_threads"], 1, 1024)
    in_range("STATUS_CACHE_TTL_SECONDS", values["status_cache_ttl_seconds"], 60, 30 * 86400)
    in_range("MAX_WAIT_SECONDS", values["max_wait_seconds"], 0, 3600)
    in_range("WORKER_CONCURRENCY", values["worker_concurrency"], 1, 256)
    in_range("TASK_TIMEOUT_MAX", values["task_timeout_max"], 1, 24 * 3600)
    in_range("TASK_TIMEOUT_DEFAULT", values["task_timeout_default"], 1, values["task_timeout_max"])
    in_range("TASK_MEMORY_MAX_MB", values["task_memory_max_mb"], 16)
    in_range("TASK_MEMORY_MB", values["task_memory_mb"], 16, values["task_memory_max_mb"])
    in_range("TASK_CPUS", values["task_cpus"], 0.01, 64)
    in_range("TASK_PIDS", values["task_pids"], 8, 100_000)
    in_range("TASK_TMP_MB", values["task_tmp_mb"], 1, 4096)
    in_range(
        "SANDBOX_ORPHAN_GRACE_SECONDS",
        values["sandbox_orphan_grace_seconds"],
        MIN_SANDBOX_ORPHAN_GRACE_SECONDS,
        86400,
    )
    in_range("MAX_CODE_BYTES", values["max_code_bytes"], 1, 16 * 1024 * 1024)
    in_range("MAX_STDIN_BYTES", values["max_stdin_bytes"], 0, 16 * 1024 * 1024)
    in_range("MAX_OUTPUT_BYTES", values["max_output_bytes"], 1024, 256 * 1024 * 1024)
    in_range("USER_MAX_ACTIVE_TASKS", values["user_max_active_tasks"], 1, 1_000_000)
    in_range("MAX_ATTEMPTS", values["max_attempts"], 1, 100)
    in_range("WEBHOOK_TIMEOUT_SECONDS", values["webhook_timeout_seconds"], 0.1, 60)
    in_range("WEBHOOK_MAX_ATTEMPTS", values["webhook_max_attempts"], 1, 20)
    in_range("WEBHOOK_RETRY_SECONDS", values["webhook_retry_seconds"], 0.01, 3600)
    in_range("WEBHOOK_CONCURRENCY", values["webhook_concurrency"], 0, 64)
    try:
        parse_allowed_hosts(values["webhook_allowed_hosts"])
    except ValueError as exc:
        raise ConfigError(f"WEBHOOK_ALLOWED_HOSTS: {exc}") from None
    in_range("SANDBOX_RETRIES", values["sandbox_retries"], 1, 100)
    in_range("WORKER_HEARTBEAT_SECONDS", values["worker_heartbeat_seconds"], 0.1, 600)
    # A lease shorter than a few heartbeats would declare live workers dead.
    in_range(
        "WORKER_LEASE_SECONDS",
        values["worker_lease_seconds"],
        3 * values["worker_heartbeat_seconds"],
    )
    in_range("SWEEP_INTERVAL_SECONDS", values["sweep_interval_seconds"], 0.1, 3600)
    in_range("QUEUED_RESEND_SECONDS", values["queued_resend_seconds"], 1, 7 * 24 * 3600)
    in_range("DB_POOL_SIZE", values["db_pool_size"], 1, 100)
    in_range("BROKER_TIMEOUT_SECONDS", values["broker_timeout_seconds"], 0.1, 120)
    # A graceful stop lets running tasks finish: a supervisor that kills the worker sooner than
    # the longest of them may take would cut them short, so the worker refuses to start at all.
    # Checked here, at start-up, because the two values are set apart (TASK_TIMEOUT_MAX may be
    # raised without a thought for the grace), and Compose cannot compute one from the other.
    grace = values["worker_stop_grace_seconds"]
    needed = values["task_timeout_max"] + WORKER_STOP_SLACK_SECONDS
    if grace is not None and grace < needed:
        raise ConfigError(
            f"WORKER_STOP_GRACE_SECONDS={grace} must be at least TASK_TIMEOUT_MAX"
            f" + {WORKER_STOP_SLACK_SECONDS} = {needed}, or a stopping worker is killed before"
            " its running tasks end"
        )
    for name, url_var, schemes in (
        ("database_url", "DATABASE_URL", ("postgresql://", "postgres://")),
        ("amqp_url", "AMQP_URL", ("amqp://", "amqps://")),
        ("redis_url", "REDIS_URL", ("redis://", "rediss://", "unix://")),
    ):
        # AMQP_URL may list several brokers, comma-separated: each must be a URL.
        parts = values[name].split(",") if name == "amqp_url" else [values[name]]
        if not all(part.strip().startswith(schemes) for part in parts):
            raise ConfigError(f"{url_var} must start with {' or '.join(schemes)}")
    if values["log_format"] not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    for name in values["otel_traces_exporter"].split(","):
        if name.strip() not in (*TRACE_EXPORTERS, "none"):
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: {name.strip()!r} is none of none, otlp, console"
            )
    values.update(_abuse_settings(env, defaults))
    values.update(_pool_settings(env, defaults))
    values.update(_file_settings(env, defaults))
    values.update(_body_budget_settings(env, defaults, values))
    values.update(_broker_settings(env, defaults, values["amqp_url"]))
    languages = default_languages(
        values["sandbox_image"],
        values["sandbox_data_image"],
        values["task_memory_mb"],
        values["task_memory_max_mb"],
    )
    values["languages"] = languages
    return Config(**values)


# --- Warm sandbox pool -------------------------------------------------------------------------


def _pool_settings(env: Mapping[str, str], defaults: Config) -> dict:
    size = parse_setting(env, "SANDBOX_POOL_SIZE", int, defaults.sandbox_pool_size)
    max_age = parse_setting(
        env, "SANDBOX_POOL_MAX_AGE_SECONDS", int, defaults.sandbox_pool_max_age_seconds
    )
    in_range("SANDBOX_POOL_SIZE", size, 0, 64)
    in_range("SANDBOX_POOL_MAX_AGE_SECONDS", max_age, 1, 86400)
    return {"sandbox_pool_size": size, "sandbox_pool_max_age_seconds": max_age}


# --- Files in and artifacts out ---------------------------------------------------------------


def _file_settings(env: Mapping[str, str], defaults: Config) -> dict:
    values = {
        "max_files": parse_setting(env, "MAX_FILES", int, defaults.max_files),
        "max_files_bytes": parse_setting(env, "MAX_FILES_BYTES", int, defaults.max_files_bytes),
        "max_artifacts": parse_setting(env, "MAX_ARTIFACTS", int, defaults.max_artifacts),
        "max_artifact_bytes": parse_setting(
            env, "MAX_ARTIFACT_BYTES", int, defaults.max_artifact_bytes
        ),
    }
    # MAX_FILES is bounded by the JSON values a request body may hold (json_body.MAX_TOKENS).
    in_range("MAX_FILES", values["max_files"], 0, 64)
    in_range("MAX_FILES_BYTES", values["max_files_bytes"], 0, 64 * 1024 * 1024)
    in_range("MAX_ARTIFACTS", values["max_artifacts"], 0, 1000)
    in_range("MAX_ARTIFACT_BYTES", values["max_artifact_bytes"], 0, 256 * 1024 * 1024)
    return values


# --- Memory for request bodies ----------------------------------------------------------------


def _body_budget_settings(env: Mapping[str, str], defaults: Config, values: dict) -> dict:
    wait = parse_setting(env, "BODY_BUDGET_WAIT_SECONDS", float, defaults.body_budget_wait_seconds)
    needed = smallest_budget_mb(
        values["max_code_bytes"],
        values["max_stdin_bytes"],
        values["max_output_bytes"],
        values["max_files"],
        values["max_files_bytes"],
    )
    # Unset, the budget grows with the limits, so raising a limit never stops a process.
    # Set too small, it is refused rather than raised: a budget the largest body cannot fit
    # would refuse that body for ever, and one raised in silence would not be the memory the
    # operator planned for.
    budget = parse_setting(
        env, "BODY_MEMORY_BUDGET_MB", int, max(defaults.body_memory_budget_mb, needed)
    )
    if budget < needed:
        raise ConfigError(
            f"BODY_MEMORY_BUDGET_MB={budget} is less than the {needed} MiB the largest body"
            " the limits (MAX_CODE_BYTES, MAX_STDIN_BYTES, MAX_OUTPUT_BYTES, MAX_FILES,"
            " MAX_FILES_BYTES) admit takes; raise it, leave it unset, or lower those"
        )
    in_range("BODY_MEMORY_BUDGET_MB", budget, needed, 64 * 1024)
    # Under nginx's proxy_read_timeout (65 s) with room for the parse and the store.
    in_range("BODY_BUDGET_WAIT_SECONDS", wait, 0, 30)
    return {"body_memory_budget_mb": budget, "body_budget_wait_seconds": wait}


# --- Several hosts ---------------------------------------------------------------------------


def _broker_settings(env: Mapping[str, str], defaults: Config, amqp_url: str) -> dict:
    queue_type = parse_setting(env, "QUEUE_TYPE", str, defaults.queue_type).lower()
    if queue_type not in ("classic", "quorum"):
        raise ConfigError(f"QUEUE_TYPE={queue_type!r} must be classic or quorum")
    # AMQP_URL: one broker, or the nodes of a cluster separated by commas. Each must name a
    # host (and a valid port); the message names an address by its place and host alone, as
    # the URL may hold a password.
    addresses = [part.strip() for part in amqp_url.split(",")]
    for place, address in enumerate(addresses, start=1):
        try:
            parts = urlsplit(address)
            parts.port  # noqa: B018 - raises ValueError for a port that is not one
        except ValueError:
            raise ConfigError(f"AMQP_URL: address {place} has an invalid port") from None
        if not parts.hostname:
            raise ConfigError(f"AMQP_URL: address {place} names no host")
    if len(set(addresses)) != len(addresses):
        raise ConfigError("AMQP_URL lists the same address twice")
    return {"queue_type": queue_type}


# --- Rate limits, client addresses, CORS ------------------------------------------------------


def _abuse_settings(env: Mapping[str, str], defaults: Config) -> dict:
    return {
        "rate_limit_auth": rate_limit(env, "RATE_LIMIT_AUTH", defaults.rate_limit_auth),
        "rate_limit_submit": rate_limit(env, "RATE_LIMIT_SUBMIT", defaults.rate_limit_submit),
        "rate_limit_read": rate_limit(env, "RATE_LIMIT_READ", defaults.rate_limit_read),
        "trusted_proxies": checked(env, "TRUSTED_PROXIES", parse_networks),
        "cors_origins": checked(env, "CORS_ORIGINS", parse_origins),
    }
