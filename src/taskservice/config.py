"""Configuration: one frozen dataclass, built once from the environment at start-up.

No other module reads ``os.environ``: ``config_loader.load_config`` builds the ``Config`` from it,
and everything that needs a setting receives the ``Config`` (or the part of it it needs) from its
caller. The language table is ``language_table``; reading one setting, ``config_parsing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from taskservice.config_parsing import ConfigError, IPNetwork, parse_networks, parse_origins
from taskservice.webhooks.destinations import parse_allowed_hosts

__all__ = ["Config", "ConfigError", "Language"]

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
        return parse_networks("TRUSTED_PROXIES", self.trusted_proxies)

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return parse_origins("CORS_ORIGINS", self.cors_origins)

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
