"""Configuration: one frozen dataclass, built once from the environment at start-up.

No other module reads ``os.environ``; everything that needs a setting receives the ``Config``
(or the part of it it needs) from its caller.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import limits

from taskservice.webhooks.destinations import parse_allowed_hosts

T = TypeVar("T")

MIN_JWT_SECRET_BYTES = 32
# A live worker may still kill, wait on and read its container for up to about 77 s past the
# deadline (taskservice.sandbox.docker_sandbox.POST_DEADLINE_WORK_SECONDS); another worker's
# janitor must not remove a container before that, so the grace has this floor.
MIN_SANDBOX_ORPHAN_GRACE_SECONDS = 90
# The value .env.example ships with: long enough, but public, so it must never sign a token.
JWT_SECRET_PLACEHOLDER = "change-me-to-a-random-secret-of-at-least-32-bytes"  # noqa: S105
# What a worker's graceful stop may take beyond TASK_TIMEOUT_MAX: a task's time limit runs from
# its container's start; before that the container is created and started, after it the worker
# kills it, waits for its exit (allowing the engine up to 15 s) and stores the outcome.
WORKER_STOP_SLACK_SECONDS = 20
LOG_FORMATS = ("json", "text")
TRACE_EXPORTERS = ("otlp", "console")


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Language:
    """How to run one language: the image, the interpreter command and the file the code goes in.

    ``command`` is the interpreter's argv; the path of the code file is appended to it.
    ``version_code`` is a program in the language that prints its version: the worker runs it in
    the image at start and reports the answer, which ``GET /languages`` shows.
    ``memory_mb`` is the memory of its tasks that ask for none (None: ``TASK_MEMORY_MB``), and
    ``environment`` what its programs find in their environment beside the sandbox's own.
    """

    name: str
    image: str
    command: tuple[str, ...]
    filename: str
    version_code: str
    memory_mb: int | None = None
    environment: tuple[tuple[str, str], ...] = ()

    def default_memory_mb(self, service_default: int) -> int:
        """The memory of a task of this language that asks for none."""
        return self.memory_mb if self.memory_mb is not None else service_default


@dataclass(frozen=True)
class Config:
    database_url: str = "postgresql://127.0.0.1:5432/taskservice"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    redis_url: str = "redis://127.0.0.1:6379/0"
    status_cache_ttl_seconds: int = 24 * 3600
    max_wait_seconds: float = 30.0
    queue_name: str = "taskservice.tasks"
    jwt_secret: str = ""
    jwt_ttl_seconds: int = 3600
    bcrypt_rounds: int = 12
    host: str = "127.0.0.1"
    port: int = 8000
    api_workers: int = 2
    # Threads per API process. A request waiting for a task (`?wait=`) holds one, so there are
    # enough for a few hundred waiting clients beside the short requests (bench/waiters.py).
    api_threads: int = 256
    # Chosen with bench/throughput.py on 2 cores: trivial tasks complete ~5-8% faster at 3
    # than at 2 (the container start leaves a core idle at 2), and slower again at 4.
    worker_concurrency: int = 3
    docker_host: str = "unix:///var/run/docker.sock"
    sandbox_image: str = "taskservice/sandbox-python:3"
    # The python-data language's image: python3 with numpy, pandas, matplotlib and scipy.
    sandbox_data_image: str = "taskservice/sandbox-python-data:3"
    sandbox_runtime: str = ""
    sandbox_orphan_grace_seconds: int = MIN_SANDBOX_ORPHAN_GRACE_SECONDS
    task_timeout_default: int = 10
    task_timeout_max: int = 60
    task_memory_mb: int = 256
    task_memory_max_mb: int = 1024
    task_cpus: float = 1.0
    task_pids: int = 64
    task_tmp_mb: int = 16
    max_code_bytes: int = 64 * 1024
    max_stdin_bytes: int = 1024 * 1024
    max_output_bytes: int = 1024 * 1024
    max_attempts: int = 3
    sandbox_retries: int = 5
    worker_heartbeat_seconds: float = 2.0
    worker_lease_seconds: float = 10.0
    sweep_interval_seconds: float = 15.0
    queued_resend_seconds: float = 600.0
    db_pool_size: int = 4
    broker_timeout_seconds: float = 5.0
    # How long the worker's supervisor waits after SIGTERM before it kills the worker (Compose's
    # stop_grace_period, from the same variable); None where nothing kills it on a clock.
    worker_stop_grace_seconds: int | None = None
    # Where the worker serves its Prometheus metrics; port 0 serves none.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9464
    # Where gunicorn's processes keep their metrics for /metrics to add up; empty: `taskservice
    # api` makes a fresh temporary directory (see taskservice.metrics.multiprocess).
    prometheus_multiproc_dir: str = ""
    # LOG_FORMAT: "json" (one object per line) or "text"; see logs.py.
    log_format: str = "text"
    # OpenTelemetry's standard variable, but our switch: "none" (off, its default here) or a
    # comma-separated list of TRACE_EXPORTERS. The SDK reads the other OTEL_* (tracing.py).
    otel_traces_exporter: str = "none"
    # A user's tasks queued or running at once; one more submit gets 429.
    user_max_active_tasks: int = 20
    # --- Retention and bounds (README, "Limits and abuse") ---
    # Days a finished task's code, stdin and output are kept; its status row stays.
    result_retention_days: int = 7
    # Messages the dead-letter queue keeps; beyond that its oldest are dropped.
    dead_letter_max_length: int = 10_000
    # Rows one pruning statement deletes: each is a short transaction of its own.
    prune_batch_size: int = 500
    # --- Rate limits, client addresses, CORS (rate_limits.py, client_addresses.py) -------------
    # Limits in the `limits` notation ("10/minute", "100 per 5 minutes"), checked at start-up.
    rate_limit_auth: str = "10/minute"
    rate_limit_submit: str = "120/minute"
    rate_limit_read: str = "1200/minute"
    # Comma lists. TRUSTED_PROXIES: proxies (addresses or CIDRs) whose X-Forwarded-For is
    # believed; empty: none, the socket peer is the client. CORS_ORIGINS: origins allowed to
    # call the API from a browser; empty: no CORS headers at all. Parsed by the properties below.
    trusted_proxies: str = ""
    cors_origins: str = ""
    # -------------------------------------------------------------------------------------------
    # --- Completion webhooks (taskservice.webhooks) ---
    # Comma list of host or host:port a callback_url may name although it is not a public address.
    webhook_allowed_hosts: str = ""
    webhook_timeout_seconds: float = 5.0  # one attempt, connect to last byte
    webhook_max_attempts: int = 5
    # The pause after the first failed attempt, each next one 3 times longer: 15 s gives 5 tries
    # over 10 minutes (15 + 45 + 135 + 405 s).
    webhook_retry_seconds: float = 15.0
    webhook_concurrency: int = 2  # dispatcher threads in each worker process; 0: none
    # --- Warm sandbox pool (taskservice.sandbox.pool) ---
    # Containers each worker keeps started ahead, per language that has had a task; 0: none.
    # One waiting longer than the maximum age is replaced.
    sandbox_pool_size: int = 2
    sandbox_pool_max_age_seconds: int = 300
    # --- Files in and artifacts out (task_files.py, content_types.py) ---
    # Files one task may be given, and their decoded bytes together.
    max_files: int = 16
    max_files_bytes: int = 8 * 1024 * 1024
    # Files a task's ./out/ may return, and their bytes together; past either, what fits is kept.
    max_artifacts: int = 32
    max_artifact_bytes: int = 16 * 1024 * 1024
    # --- Several hosts (taskservice.queue_topology, taskservice.broker) ---
    # The queues' type: "quorum" (replicated on a RabbitMQ cluster's nodes) or "classic".
    queue_type: str = "quorum"
    languages: Mapping[str, Language] = field(default_factory=dict)

    @property
    def webhook_allowed_host_keys(self) -> frozenset[str]:
        return parse_allowed_hosts(self.webhook_allowed_hosts)

    @property
    def otel_traces_exporters(self) -> tuple[str, ...]:
        names = (name.strip() for name in self.otel_traces_exporter.split(","))
        return tuple(name for name in names if name and name != "none")

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return _networks("TRUSTED_PROXIES", self.trusted_proxies)

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return _origins("CORS_ORIGINS", self.cors_origins)

    @property
    def max_waiting_requests(self) -> int:
        """Requests of one API process that may wait (`?wait=`) at once: an eighth of its
        threads, at least 2, stay free for everything else."""
        return max(1, self.api_threads - max(2, self.api_threads // 8))

    def check_api(self) -> None:
        """Settings only the API needs; the worker can run without a JWT secret."""
        generate = "generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))'"
        if self.jwt_secret.strip() == JWT_SECRET_PLACEHOLDER:
            raise ConfigError(f"JWT_SECRET is still the placeholder from .env.example; {generate}")
        if len(self.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(
                f"JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes ({generate})"
            )


def _parse(env: Mapping[str, str], name: str, convert: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = convert(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {convert.__name__}") from None
    # float() accepts 'nan' and 'inf'; no setting means either, and NaN slips past every range
    # check (each comparison with it is false).
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a finite number")
    return value


def _in_range(name: str, value: float, low: float, high: float | None = None) -> None:
    # Written so that NaN fails too, should a non-finite value ever come from elsewhere than
    # _parse: every comparison with NaN is false.
    if not (value >= low and (high is None or value <= high)):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name}={value} must be {bound}")


# Libraries write their caches under $HOME or next to themselves; the root filesystem is read-only
# and only /tmp (the sandbox's own tmpfs, hence S108's noqa) is writable. One BLAS thread: a task
# has one CPU's worth, and OpenBLAS would otherwise start a thread per host core against the
# task's process limit.
DATA_ENVIRONMENT = (
    ("MPLBACKEND", "Agg"),  # no display: plots are saved to files
    ("MPLCONFIGDIR", "/tmp/.config/matplotlib"),  # noqa: S108
    ("XDG_CACHE_HOME", "/tmp/.cache"),  # noqa: S108 (fontconfig's cache)
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
)
# numpy, pandas, scipy and matplotlib imported and a small plot saved peak at ~70 MB (measured
# in the sandbox): 512 leaves the data most of it. Never less than TASK_MEMORY_MB, never more than
# TASK_MEMORY_MAX_MB.
DATA_MEMORY_MB = 512
DATA_VERSION_CODE = """\
import platform, matplotlib, numpy, pandas, scipy
print(f"{platform.python_version()} (numpy {numpy.__version__}, pandas {pandas.__version__},"
      f" matplotlib {matplotlib.__version__}, scipy {scipy.__version__})")
"""


def default_languages(
    sandbox_image: str,
    data_image: str = Config.sandbox_data_image,
    memory_mb: int = Config.task_memory_mb,
    memory_max_mb: int = Config.task_memory_max_mb,
) -> dict[str, Language]:
    """The language table. Adding a language is one entry here plus an image that has it."""
    return {
        "python": Language(
            name="python",
            image=sandbox_image,
            command=("python3", "-u"),
            filename="main.py",
            version_code="import platform; print(platform.python_version())",
        ),
        "bash": Language(
            name="bash",
            image=sandbox_image,
            command=("bash",),
            filename="main.sh",
            version_code='echo "${BASH_VERSION%%(*}"',
        ),
        "python-data": Language(
            name="python-data",
            image=data_image,
            command=("python3", "-u"),
            filename="main.py",
            version_code=DATA_VERSION_CODE,
            memory_mb=min(max(DATA_MEMORY_MB, memory_mb), memory_max_mb),
            environment=DATA_ENVIRONMENT,
        ),
    }


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Build the Config from ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    defaults = Config()
    values = {
        "database_url": _parse(env, "DATABASE_URL", str, defaults.database_url),
        "amqp_url": _parse(env, "AMQP_URL", str, defaults.amqp_url),
        "redis_url": _parse(env, "REDIS_URL", str, defaults.redis_url),
        "status_cache_ttl_seconds": _parse(
            env, "STATUS_CACHE_TTL_SECONDS", int, defaults.status_cache_ttl_seconds
        ),
        "max_wait_seconds": _parse(env, "MAX_WAIT_SECONDS", float, defaults.max_wait_seconds),
        "queue_name": _parse(env, "QUEUE_NAME", str, defaults.queue_name),
        "jwt_secret": env.get("JWT_SECRET", ""),
        "jwt_ttl_seconds": _parse(env, "JWT_TTL_SECONDS", int, defaults.jwt_ttl_seconds),
        "bcrypt_rounds": _parse(env, "BCRYPT_ROUNDS", int, defaults.bcrypt_rounds),
        "host": _parse(env, "HOST", str, defaults.host),
        "port": _parse(env, "PORT", int, defaults.port),
        "api_workers": _parse(env, "API_WORKERS", int, defaults.api_workers),
        "api_threads": _parse(env, "API_THREADS", int, defaults.api_threads),
        "worker_concurrency": _parse(env, "WORKER_CONCURRENCY", int, defaults.worker_concurrency),
        "docker_host": _parse(env, "DOCKER_HOST", str, defaults.docker_host),
        "sandbox_image": _parse(env, "SANDBOX_IMAGE", str, defaults.sandbox_image),
        "sandbox_data_image": _parse(env, "SANDBOX_DATA_IMAGE", str, defaults.sandbox_data_image),
        "sandbox_runtime": _parse(env, "SANDBOX_RUNTIME", str, defaults.sandbox_runtime),
        "sandbox_orphan_grace_seconds": _parse(
            env, "SANDBOX_ORPHAN_GRACE_SECONDS", int, defaults.sandbox_orphan_grace_seconds
        ),
        "task_timeout_default": _parse(
            env, "TASK_TIMEOUT_DEFAULT", int, defaults.task_timeout_default
        ),
        "task_timeout_max": _parse(env, "TASK_TIMEOUT_MAX", int, defaults.task_timeout_max),
        "task_memory_mb": _parse(env, "TASK_MEMORY_MB", int, defaults.task_memory_mb),
        "task_memory_max_mb": _parse(env, "TASK_MEMORY_MAX_MB", int, defaults.task_memory_max_mb),
        "task_cpus": _parse(env, "TASK_CPUS", float, defaults.task_cpus),
        "task_pids": _parse(env, "TASK_PIDS", int, defaults.task_pids),
        "task_tmp_mb": _parse(env, "TASK_TMP_MB", int, defaults.task_tmp_mb),
        "max_code_bytes": _parse(env, "MAX_CODE_BYTES", int, defaults.max_code_bytes),
        "max_stdin_bytes": _parse(env, "MAX_STDIN_BYTES", int, defaults.max_stdin_bytes),
        "max_output_bytes": _parse(env, "MAX_OUTPUT_BYTES", int, defaults.max_output_bytes),
        "max_attempts": _parse(env, "MAX_ATTEMPTS", int, defaults.max_attempts),
        "sandbox_retries": _parse(env, "SANDBOX_RETRIES", int, defaults.sandbox_retries),
        "worker_heartbeat_seconds": _parse(
            env, "WORKER_HEARTBEAT_SECONDS", float, defaults.worker_heartbeat_seconds
        ),
        "worker_lease_seconds": _parse(
            env, "WORKER_LEASE_SECONDS", float, defaults.worker_lease_seconds
        ),
        "sweep_interval_seconds": _parse(
            env, "SWEEP_INTERVAL_SECONDS", float, defaults.sweep_interval_seconds
        ),
        "queued_resend_seconds": _parse(
            env, "QUEUED_RESEND_SECONDS", float, defaults.queued_resend_seconds
        ),
        "db_pool_size": _parse(env, "DB_POOL_SIZE", int, defaults.db_pool_size),
        "broker_timeout_seconds": _parse(
            env, "BROKER_TIMEOUT_SECONDS", float, defaults.broker_timeout_seconds
        ),
        "worker_stop_grace_seconds": _parse(
            env, "WORKER_STOP_GRACE_SECONDS", int, defaults.worker_stop_grace_seconds
        ),
        "worker_metrics_host": _parse(
            env, "WORKER_METRICS_HOST", str, defaults.worker_metrics_host
        ),
        "worker_metrics_port": _parse(
            env, "WORKER_METRICS_PORT", int, defaults.worker_metrics_port
        ),
        "prometheus_multiproc_dir": _parse(
            env, "PROMETHEUS_MULTIPROC_DIR", str, defaults.prometheus_multiproc_dir
        ),
        "log_format": _parse(env, "LOG_FORMAT", str, defaults.log_format).lower(),
        "otel_traces_exporter": _parse(
            env, "OTEL_TRACES_EXPORTER", str, defaults.otel_traces_exporter
        ).lower(),
        "user_max_active_tasks": _parse(
            env, "USER_MAX_ACTIVE_TASKS", int, defaults.user_max_active_tasks
        ),
        # --- Retention and bounds ---
        "result_retention_days": _parse(
            env, "RESULT_RETENTION_DAYS", int, defaults.result_retention_days
        ),
        "dead_letter_max_length": _parse(
            env, "DEAD_LETTER_MAX_LENGTH", int, defaults.dead_letter_max_length
        ),
        "prune_batch_size": _parse(env, "PRUNE_BATCH_SIZE", int, defaults.prune_batch_size),
        # --- Completion webhooks ---
        "webhook_allowed_hosts": _parse(env, "WEBHOOK_ALLOWED_HOSTS", str, ""),
        "webhook_timeout_seconds": _parse(
            env, "WEBHOOK_TIMEOUT_SECONDS", float, defaults.webhook_timeout_seconds
        ),
        "webhook_max_attempts": _parse(
            env, "WEBHOOK_MAX_ATTEMPTS", int, defaults.webhook_max_attempts
        ),
        "webhook_retry_seconds": _parse(
            env, "WEBHOOK_RETRY_SECONDS", float, defaults.webhook_retry_seconds
        ),
        "webhook_concurrency": _parse(
            env, "WEBHOOK_CONCURRENCY", int, defaults.webhook_concurrency
        ),
    }
    _in_range("RESULT_RETENTION_DAYS", values["result_retention_days"], 1, 36_500)
    _in_range("DEAD_LETTER_MAX_LENGTH", values["dead_letter_max_length"], 1, 100_000_000)
    _in_range("PRUNE_BATCH_SIZE", values["prune_batch_size"], 1, 100_000)
    _in_range("JWT_TTL_SECONDS", values["jwt_ttl_seconds"], 1)
    _in_range("BCRYPT_ROUNDS", values["bcrypt_rounds"], 4, 31)
    _in_range("PORT", values["port"], 1, 65535)
    _in_range("WORKER_METRICS_PORT", values["worker_metrics_port"], 0, 65535)
    _in_range("API_WORKERS", values["api_workers"], 1, 64)
    _in_range("API_THREADS", values["api_threads"], 1, 1024)
    _in_range("STATUS_CACHE_TTL_SECONDS", values["status_cache_ttl_seconds"], 60, 30 * 86400)
    _in_range("MAX_WAIT_SECONDS", values["max_wait_seconds"], 0, 3600)
    _in_range("WORKER_CONCURRENCY", values["worker_concurrency"], 1, 256)
    _in_range("TASK_TIMEOUT_MAX", values["task_timeout_max"], 1, 24 * 3600)
    _in_range("TASK_TIMEOUT_DEFAULT", values["task_timeout_default"], 1, values["task_timeout_max"])
    _in_range("TASK_MEMORY_MAX_MB", values["task_memory_max_mb"], 16)
    _in_range("TASK_MEMORY_MB", values["task_memory_mb"], 16, values["task_memory_max_mb"])
    _in_range("TASK_CPUS", values["task_cpus"], 0.01, 64)
    _in_range("TASK_PIDS", values["task_pids"], 8, 100_000)
    _in_range("TASK_TMP_MB", values["task_tmp_mb"], 1, 4096)
    _in_range(
        "SANDBOX_ORPHAN_GRACE_SECONDS",
        values["sandbox_orphan_grace_seconds"],
        MIN_SANDBOX_ORPHAN_GRACE_SECONDS,
        86400,
    )
    _in_range("MAX_CODE_BYTES", values["max_code_bytes"], 1, 16 * 1024 * 1024)
    _in_range("MAX_STDIN_BYTES", values["max_stdin_bytes"], 0, 16 * 1024 * 1024)
    _in_range("MAX_OUTPUT_BYTES", values["max_output_bytes"], 1024, 256 * 1024 * 1024)
    _in_range("USER_MAX_ACTIVE_TASKS", values["user_max_active_tasks"], 1, 1_000_000)
    _in_range("MAX_ATTEMPTS", values["max_attempts"], 1, 100)
    _in_range("WEBHOOK_TIMEOUT_SECONDS", values["webhook_timeout_seconds"], 0.1, 60)
    _in_range("WEBHOOK_MAX_ATTEMPTS", values["webhook_max_attempts"], 1, 20)
    _in_range("WEBHOOK_RETRY_SECONDS", values["webhook_retry_seconds"], 0.01, 3600)
    _in_range("WEBHOOK_CONCURRENCY", values["webhook_concurrency"], 0, 64)
    try:
        parse_allowed_hosts(values["webhook_allowed_hosts"])
    except ValueError as exc:
        raise ConfigError(f"WEBHOOK_ALLOWED_HOSTS: {exc}") from None
    _in_range("SANDBOX_RETRIES", values["sandbox_retries"], 1, 100)
    _in_range("WORKER_HEARTBEAT_SECONDS", values["worker_heartbeat_seconds"], 0.1, 600)
    # A lease shorter than a few heartbeats would declare live workers dead.
    _in_range(
        "WORKER_LEASE_SECONDS",
        values["worker_lease_seconds"],
        3 * values["worker_heartbeat_seconds"],
    )
    _in_range("SWEEP_INTERVAL_SECONDS", values["sweep_interval_seconds"], 0.1, 3600)
    _in_range("QUEUED_RESEND_SECONDS", values["queued_resend_seconds"], 1, 7 * 24 * 3600)
    _in_range("DB_POOL_SIZE", values["db_pool_size"], 1, 100)
    _in_range("BROKER_TIMEOUT_SECONDS", values["broker_timeout_seconds"], 0.1, 120)
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
    size = _parse(env, "SANDBOX_POOL_SIZE", int, defaults.sandbox_pool_size)
    max_age = _parse(
        env, "SANDBOX_POOL_MAX_AGE_SECONDS", int, defaults.sandbox_pool_max_age_seconds
    )
    _in_range("SANDBOX_POOL_SIZE", size, 0, 64)
    _in_range("SANDBOX_POOL_MAX_AGE_SECONDS", max_age, 1, 86400)
    return {"sandbox_pool_size": size, "sandbox_pool_max_age_seconds": max_age}


# --- Files in and artifacts out ---------------------------------------------------------------


def _file_settings(env: Mapping[str, str], defaults: Config) -> dict:
    values = {
        "max_files": _parse(env, "MAX_FILES", int, defaults.max_files),
        "max_files_bytes": _parse(env, "MAX_FILES_BYTES", int, defaults.max_files_bytes),
        "max_artifacts": _parse(env, "MAX_ARTIFACTS", int, defaults.max_artifacts),
        "max_artifact_bytes": _parse(env, "MAX_ARTIFACT_BYTES", int, defaults.max_artifact_bytes),
    }
    # MAX_FILES is bounded by the JSON values a request body may hold (json_body.MAX_TOKENS).
    _in_range("MAX_FILES", values["max_files"], 0, 64)
    _in_range("MAX_FILES_BYTES", values["max_files_bytes"], 0, 64 * 1024 * 1024)
    _in_range("MAX_ARTIFACTS", values["max_artifacts"], 0, 1000)
    _in_range("MAX_ARTIFACT_BYTES", values["max_artifact_bytes"], 0, 256 * 1024 * 1024)
    return values


# --- Several hosts ---------------------------------------------------------------------------


def _broker_settings(env: Mapping[str, str], defaults: Config, amqp_url: str) -> dict:
    queue_type = _parse(env, "QUEUE_TYPE", str, defaults.queue_type).lower()
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


def _rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    value = _parse(env, name, str, default)
    try:
        # limits.parse reads "10/minute;100/hour" as its first limit alone: one limit a setting.
        if len(limits.parse_many(value)) != 1:
            raise ValueError(value)
        item = limits.parse(value)
    except ValueError:
        raise ConfigError(
            f"{name}={value!r} is not a rate limit such as '10/minute' or '100 per 5 minutes'"
        ) from None
    if item.amount < 1:
        raise ConfigError(f"{name}={value!r} allows no request at all; the amount must be >= 1")
    return value


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _networks(name: str, value: str) -> tuple[IPNetwork, ...]:
    networks = []
    for part in _comma_list(value):
        try:
            # strict=False: 172.28.0.1/16 means the network it is in, as people often write it.
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _origins(name: str, value: str) -> tuple[str, ...]:
    origins = _comma_list(value)
    for origin in origins:
        # A browser sends its Origin as scheme://host[:port], nothing more; the comparison is
        # exact, so anything else (a path, a trailing slash, "*") would never match or would
        # open the API to every site.
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or any(c in rest for c in "/?#*@ "):
            raise ConfigError(
                f"{name}: {origin!r} is not an origin such as https://app.example.com"
            )
    return tuple(origins)


def _abuse_settings(env: Mapping[str, str], defaults: Config) -> dict:
    return {
        "rate_limit_auth": _rate_limit(env, "RATE_LIMIT_AUTH", defaults.rate_limit_auth),
        "rate_limit_submit": _rate_limit(env, "RATE_LIMIT_SUBMIT", defaults.rate_limit_submit),
        "rate_limit_read": _rate_limit(env, "RATE_LIMIT_READ", defaults.rate_limit_read),
        "trusted_proxies": _checked(env, "TRUSTED_PROXIES", _networks),
        "cors_origins": _checked(env, "CORS_ORIGINS", _origins),
    }


def _checked(env: Mapping[str, str], name: str, parse: Callable[[str, str], object]) -> str:
    value = _parse(env, name, str, "")
    parse(name, value)  # raises ConfigError naming the variable
    return value
