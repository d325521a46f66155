"""One fresh, locked-down Docker container per task: create, attach, start, supervise, remove.

What the container is lives in ``spec``; what the worker and the container's ``bootstrap`` say
in ``protocol`` and ``artifacts``; a started container's run in ``supervisor``; the byte stream
in ``framing``; what an ending means in ``outcome``; memory sampling in ``memory``; the removal
of abandoned containers in ``janitor``; containers started ahead of their task in ``pool``;
removal off the task's path in ``remover``.
This module only drives the engine. It knows nothing of PostgreSQL or RabbitMQ.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import docker.errors
import requests.exceptions
from opentelemetry import trace

from taskservice.config import Language
from taskservice.metrics import DOCKER, NO_METRICS, NoMetrics
from taskservice.model import RunOutcome, TaskStatus
from taskservice.sandbox.attach_stream import close_attach
from taskservice.sandbox.container_names import task_name
from taskservice.sandbox.errors import SandboxFailure, SandboxUnavailable
from taskservice.sandbox.janitor import Janitor
from taskservice.sandbox.pool import PoolSettings, WarmPool
from taskservice.sandbox.remover import BackgroundRemover
from taskservice.sandbox.spec import SandboxJob, SandboxSettings, container_spec
from taskservice.sandbox.supervisor import OOM_EVENT_WAIT_SECONDS, WAIT_SECONDS, supervise
from taskservice.sandbox.warm_container import Warm

log = logging.getLogger(__name__)
# OpenTelemetry's global tracer: a no-op until the worker sets up a provider (taskservice.tracing).
_tracer = trace.get_tracer(__name__)

# Pinned rather than negotiated: negotiation asks the engine at construction, so a worker started
# while the engine is down would crash instead of retrying. 1.41 is Docker 20.10, the oldest
# engine this was checked on; newer engines accept it.
DOCKER_API_VERSION = "1.41"
DOCKER_TIMEOUT_SECONDS = 30
# The longest a live worker may still use its container after the deadline: a kill and a
# reload that each may take the client's whole timeout, the wait, and the OOM record's delay.
# The janitor's grace must exceed it (config.MIN_SANDBOX_ORPHAN_GRACE_SECONDS).
POST_DEADLINE_WORK_SECONDS = 2 * DOCKER_TIMEOUT_SECONDS + WAIT_SECONDS + OOM_EVENT_WAIT_SECONDS

_DOCKER_ERRORS = (docker.errors.APIError, requests.exceptions.RequestException)


def docker_client(base_url: str, timeout: int = DOCKER_TIMEOUT_SECONDS) -> docker.DockerClient:
    """A client that does not contact the engine until it is used."""
    return docker.DockerClient(base_url=base_url, version=DOCKER_API_VERSION, timeout=timeout)


class DockerSandbox:
    def __init__(
        self,
        client: docker.DockerClient,
        settings: SandboxSettings,
        metrics: NoMetrics = NO_METRICS,
        pool: PoolSettings | None = None,
        remove_in_background: bool = False,
    ):
        """Without ``pool`` every task's container is created when the task comes (the cold
        path); with it, started containers wait for tasks (``pool``). ``remove_in_background``
        takes the removal of finished containers off the task's path."""
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self._active: dict[str, object] = {}
        self._task_of: dict[str, str] = {}  # a pooled container's labels do not name its task
        self._active_lock = threading.Lock()
        self._stopping = False
        # Containers killed by kill_task: their SIGKILL was ours, not the kernel's OOM killer.
        self._cancelled: set[str] = set()
        self._remover = BackgroundRemover(self._remove) if remove_in_background else None
        self._pool = (
            WarmPool(client, settings, pool, self._discard) if pool and pool.size > 0 else None
        )
        self._renames = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandbox-rename")
        self.janitor = Janitor(client, self._active_ids)

    def _active_ids(self) -> set[str]:
        pooled = self._pool.ids() if self._pool is not None else set()
        with self._active_lock:
            return set(self._active) | pooled

    def run(self, job: SandboxJob) -> RunOutcome:
        """Run one job in a container of its own and always remove the container afterwards."""
        with _tracer.start_as_current_span(
            "sandbox.run", attributes={"taskservice.task_id": job.task_id}
        ):
            return self._run(job, pooled=True)

    def close(self) -> None:
        """Remove the pool's containers and those still to remove (the worker's stop)."""
        if self._pool is not None:
            self._pool.close()
        if self._remover is not None:
            self._remover.close()
        self._renames.shutdown(wait=True)

    def drain_removals(self) -> None:
        """Return once every finished container so far is removed."""
        if self._remover is not None:
            self._remover.drain()

    def _run(self, job: SandboxJob, pooled: bool) -> RunOutcome:
        began = time.monotonic()
        warm = None
        # A waiting container's command is fixed: a task with arguments of its own (they go on
        # the interpreter's command line) takes the cold path.
        if pooled and self._pool is not None and not job.arguments:
            with _tracer.start_as_current_span("sandbox.take"):
                warm = self._pool.take(job.language, job.memory_mb)
        if warm is not None:
            container = warm.container
        else:
            with _tracer.start_as_current_span("sandbox.create"):
                container = self._create(job)
        with self._active_lock:
            self._active[container.id] = container
            self._task_of[container.id] = job.task_id
            stopping = self._stopping
        try:
            if stopping:  # created just as kill_all ran: never start it
                raise SandboxUnavailable("The worker is stopping.")
            if warm is not None:
                return self._run_warm(warm, job, began)
            return self._attach_and_run(container, job, began)
        except (*_DOCKER_ERRORS, OSError) as exc:
            self._metrics.dependency_error(DOCKER)
            raise SandboxUnavailable(f"Docker failed while running the task: {exc}") from exc
        finally:
            if warm is not None:
                close_attach(warm.attach, warm.sock)  # closed already, unless it never ran
            with self._active_lock:
                self._active.pop(container.id, None)
                self._task_of.pop(container.id, None)
                self._cancelled.discard(container.id)
            self._discard(container)
            if warm is not None:
                self._pool.refill(job.language.name)

    def _run_warm(self, warm: Warm, job: SandboxJob, began: float) -> RunOutcome:
        """Send the job's code to a pooled container that already waits for it."""
        # Named after its task while the code runs (a rename takes 5-40 ms of the engine's
        # time): remove_task_containers finds it by that name. Only a worker dying within
        # those milliseconds leaves it unnamed, and then the janitor removes it by its labels.
        renamed = self._renames.submit(self._rename, warm.container, job.task_id)
        started = time.monotonic()  # the wall-clock limit counts from the code's sending
        self._metrics.sandbox_started(started - began)
        try:
            with _tracer.start_as_current_span("sandbox.wait"):
                return self._supervise(warm.container, job, warm.attach, warm.sock, started)
        except (*_DOCKER_ERRORS, OSError) as exc:
            # The code may have run: as on the cold path, running it again would not be honest.
            raise SandboxFailure(
                f"Docker failed while the program ran, so its outcome is unknown: {exc}"
            ) from exc
        finally:
            renamed.result()

    @staticmethod
    def _rename(container, task_id: str) -> None:
        try:
            container.rename(task_name(task_id))
        except _DOCKER_ERRORS as exc:
            log.warning("could not name sandbox %s after its task: %s", container.id[:12], exc)

    def _discard(self, container) -> None:
        if self._remover is None:
            with _tracer.start_as_current_span("sandbox.remove"):
                self._remove(container)
        else:
            self._remover.submit(container)

    def kill_all(self) -> None:
        """Kill every running sandbox (the worker's hard stop); their tasks will run again."""
        with self._active_lock:
            self._stopping = True
            containers = list(self._active.values())
        for container in containers:
            with contextlib.suppress(*_DOCKER_ERRORS):
                container.kill()

    def kill_task(self, task_id: str) -> bool:
        """Kill the running sandbox of ``task_id`` (its owner cancelled it); whether one was.

        Its run then ends as any killed program's does, with the output read until the kill.
        """
        with self._active_lock:
            containers = [
                self._active[container_id]
                for container_id, task in self._task_of.items()
                if task == task_id
            ]
            self._cancelled.update(container.id for container in containers)
        for container in containers:
            with contextlib.suppress(*_DOCKER_ERRORS):
                container.kill()
        return bool(containers)

    def remove_task_containers(self, task_id: str) -> int:
        return self.janitor.remove_task_containers(task_id)

    def probe_version(self, language: Language) -> str:
        """The version of ``language`` in its image, found by running its ``version_code``.

        It runs as any task does, under the same limits, so what it reports is what tasks get;
        in a container of its own, so that only languages that have tasks get a pool.
        """
        outcome = self._run(
            SandboxJob(
                task_id=f"version-probe-{language.name}",
                language=language,
                code=language.version_code.encode(),
                stdin=b"",
                timeout_seconds=30,
                # Its libraries' imports may need more than the 128 MB a bare interpreter does.
                memory_mb=max(128, language.default_memory_mb(128)),
            ),
            pooled=False,
        )
        version = outcome.stdout.decode(errors="replace").strip()
        if outcome.status is not TaskStatus.SUCCEEDED or not version:
            raise SandboxFailure(
                f"{language.name}'s version probe failed ({outcome.status.value}):"
                f" {outcome.stderr[-300:].decode(errors='replace')}"
            )
        return version

    def _create(self, job: SandboxJob):
        try:
            return self._client.containers.create(**container_spec(job, self._settings))
        except docker.errors.ImageNotFound as exc:
            raise SandboxFailure(
                f"The sandbox image {job.language.image!r} for {job.language.name} is missing."
            ) from exc
        except _DOCKER_ERRORS as exc:
            self._metrics.dependency_error(DOCKER)
            raise SandboxUnavailable(f"Docker could not create the sandbox: {exc}") from exc

    def _attach_and_run(self, container, job: SandboxJob, began: float) -> RunOutcome:
        attach = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        sock: socket.socket = getattr(attach, "_sock", attach)
        try:
            with _tracer.start_as_current_span("sandbox.start"):
                container.start()
            started = time.monotonic()
            self._metrics.sandbox_started(started - began)
        except BaseException:
            close_attach(attach, sock)
            raise  # nothing ran: the engine's failure, which the caller may retry
        try:
            # From the start until the exit status is known: the program's own run.
            with _tracer.start_as_current_span("sandbox.wait"):
                return self._supervise(container, job, attach, sock, started)
        except (*_DOCKER_ERRORS, OSError) as exc:
            # The program ran, or may have: running it again would not be honest, so the task
            # ends `error` instead of being retried.
            raise SandboxFailure(
                f"Docker failed while the program ran, so its outcome is unknown: {exc}"
            ) from exc

    def _supervise(self, container, job: SandboxJob, attach, sock, started: float) -> RunOutcome:
        def killed_by_us() -> bool:
            with self._active_lock:
                return container.id in self._cancelled

        return supervise(
            self._client, self._settings, container, job, attach, sock, started, killed_by_us
        )

    def _remove(self, container) -> None:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except _DOCKER_ERRORS as exc:
            # The janitor removes it later: it is labelled, and past its limit it counts as
            # abandoned.
            log.warning("could not remove sandbox %s: %s", container.id[:12], exc)
