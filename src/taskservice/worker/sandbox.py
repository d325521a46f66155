"""One fresh, locked-down Docker container per task.

How code and output move (and why the worker never touches a path inside the container):
code and stdin travel *into* the container over the attach socket, as one byte stream: a header
line with the code's length, the code, then stdin. A tiny bootstrap (PID 2, under docker-init)
reads exactly that many bytes, writes the code to a file on the container's own tmpfs, and execs
the interpreter on it with the rest of the stream as the program's stdin. stdout and stderr come
back over the same socket, capped in the worker's memory. There are no bind mounts, no
``put_archive``/``get_archive`` and no copy of a file out of the container, so nothing the
program plants in its filesystem (a symlink in /tmp, say) can make the worker read, write or
chown a host path; and the worker can itself run in a container next to the engine.

Every container carries labels: the service's role, the task id and a deadline (epoch seconds).
A worker that dies mid-task leaves its container behind; ``remove_expired`` (which the worker
calls at start and periodically) removes any container of the service past its deadline plus a
grace period, whichever worker created it.

This module knows nothing of PostgreSQL or RabbitMQ.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal as signals
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import docker
import docker.errors
import docker.types
import requests.exceptions

from taskservice.config import Language
from taskservice.model import RunOutcome, TaskStatus

log = logging.getLogger(__name__)

SERVICE_LABEL = "taskservice.role"
SERVICE_LABEL_VALUE = "sandbox"
TASK_LABEL = "taskservice.task_id"
DEADLINE_LABEL = "taskservice.deadline"

# Reads the header line and the code from fd 0 with raw os.read calls (a buffered reader would
# swallow the start of the user's stdin), writes the code file, then execs the interpreter.
BOOTSTRAP = """\
import os, sys
header = b""
while not header.endswith(b"\\n"):
    byte = os.read(0, 1)
    if not byte:
        sys.exit("sandbox bootstrap: input ended before the header")
    header += byte
remaining = int(header)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
while remaining:
    chunk = os.read(0, min(remaining, 65536))
    if not chunk:
        sys.exit("sandbox bootstrap: input ended inside the code")
    os.write(fd, chunk)
    remaining -= len(chunk)
os.close(fd)
os.execvp(sys.argv[2], sys.argv[2:] + [sys.argv[1]])
"""

_FRAME_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
_READ_CHUNK = 65536
_STOP_GRACE_SECONDS = 5
_TMP_INODES_PER_MB = 1024
_OOM_EVENT_WAIT_SECONDS = 2.0
# Pause between memory samples. The engine may answer a stats request only at its own collection
# tick (Docker 20.10 collects once a second), so the real rate can be lower than this.
_MEMORY_SAMPLE_INTERVAL_SECONDS = 0.1


# Pinned rather than negotiated: negotiation asks the engine at construction, so a worker started
# while the engine is down would crash instead of retrying. 1.41 is Docker 20.10, the oldest
# engine this was checked on; newer engines accept it.
DOCKER_API_VERSION = "1.41"


def docker_client(base_url: str, timeout: int = 30) -> docker.DockerClient:
    """A client that does not contact the engine until it is used."""
    return docker.DockerClient(base_url=base_url, version=DOCKER_API_VERSION, timeout=timeout)


class SandboxUnavailable(Exception):
    """The Docker engine could not be used; nothing is known about the user's code. Retryable."""


class SandboxFailure(Exception):
    """The sandbox cannot run this task at all (a missing image, say). Not retryable."""


@dataclass(frozen=True)
class SandboxSettings:
    """Limits that apply to every task, from the service's configuration."""

    cpus: float = 1.0
    pids: int = 64
    tmp_mb: int = 16
    max_output_bytes: int = 1024 * 1024
    runtime: str = ""
    max_open_files: int = 256


@dataclass(frozen=True)
class SandboxJob:
    task_id: str
    language: Language
    code: bytes
    stdin: bytes
    timeout_seconds: int
    memory_mb: int


@dataclass
class _Capture:
    """Demultiplexes Docker's attach stream into stdout and stderr, keeping at most ``cap`` each."""

    cap: int
    buffers: dict[int, bytearray] = field(default_factory=lambda: {1: bytearray(), 2: bytearray()})
    truncated: dict[int, bool] = field(default_factory=lambda: {1: False, 2: False})
    _pending: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= _FRAME_HEADER.size:
            stream, size = _FRAME_HEADER.unpack_from(self._pending)
            end = _FRAME_HEADER.size + size
            if len(self._pending) < end:
                return
            payload = self._pending[_FRAME_HEADER.size : end]
            del self._pending[:end]
            if stream not in self.buffers:
                continue
            room = self.cap - len(self.buffers[stream])
            if len(payload) > room:
                self.truncated[stream] = True
            self.buffers[stream] += payload[: max(room, 0)]

    @property
    def over_cap(self) -> bool:
        return self.truncated[_STDOUT] or self.truncated[_STDERR]


class _MemorySampler:
    """Samples a running container's memory use through the engine's stats API, on a thread.

    On cgroup v1 each sample carries ``max_usage`` (the cgroup's own high-water mark, page cache
    and /tmp pages included, as the limit counts them), so the largest sample is the true peak up
    to the last sample; on cgroup v2 only the current ``usage`` exists, so the largest sample
    is a lower bound. A container's cgroup is gone once it exits, so a program that ends
    between samples reports the peak of the last sample taken, and one that ends before the
    first sample reports none.
    """

    def __init__(self, client: docker.DockerClient, container_id: str):
        self._client = client
        self._container_id = container_id
        self._stopped = threading.Event()
        self.peak_bytes: int | None = None
        self._thread = threading.Thread(
            target=self._sample_until_stopped, name=f"memory-{container_id[:12]}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int | None:
        """Stop sampling (without waiting for a request in flight) and return the peak so far."""
        self._stopped.set()
        return self.peak_bytes

    def _sample_until_stopped(self) -> None:
        while not self._stopped.is_set():
            try:
                stats = self._client.api.stats(self._container_id, stream=False, one_shot=True)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                return  # the container is gone, or the engine is busy: keep what we have
            memory = stats.get("memory_stats") or {}
            if not memory:
                return  # not running any more: the engine has nothing to report
            sample = max(memory.get("max_usage") or 0, memory.get("usage") or 0)
            if not self._stopped.is_set() and sample > (self.peak_bytes or 0):
                self.peak_bytes = sample
            self._stopped.wait(_MEMORY_SAMPLE_INTERVAL_SECONDS)


def _signal_name(exit_code: int | None) -> str | None:
    # docker-init reports a child killed by signal N as exit code 128 + N.
    if exit_code is None or exit_code <= 128:
        return None
    try:
        return signals.Signals(exit_code - 128).name
    except ValueError:
        return None


class DockerSandbox:
    def __init__(self, client: docker.DockerClient, settings: SandboxSettings):
        self._client = client
        self._settings = settings
        self._active: dict[str, object] = {}
        self._active_lock = threading.Lock()
        self._stopping = False

    def run(self, job: SandboxJob) -> RunOutcome:
        """Run one job in a new container and always remove the container afterwards."""
        container = self._create(job)
        with self._active_lock:
            self._active[container.id] = container
            stopping = self._stopping
        try:
            if stopping:  # created just as kill_all ran: never start it
                raise SandboxUnavailable("The worker is stopping.")
            return self._attach_and_run(container, job)
        except (docker.errors.APIError, requests.exceptions.RequestException, OSError) as exc:
            raise SandboxUnavailable(f"Docker failed while running the task: {exc}") from exc
        finally:
            with self._active_lock:
                self._active.pop(container.id, None)
            self._remove(container)

    def kill_all(self) -> None:
        """Kill every running sandbox (the worker's hard stop); their tasks will run again."""
        with self._active_lock:
            self._stopping = True
            containers = list(self._active.values())
        for container in containers:
            with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
                container.kill()

    def remove_expired(self, grace_seconds: float, label_filters: Sequence[str] = ()) -> list[str]:
        """Force-remove the service's containers past their deadline plus ``grace_seconds``.

        A live worker removes its container right after the run, so one still there past that
        point was left by a worker that died. ``label_filters`` (``"key=value"``) narrow the
        sweep further. Returns the ids of the containers removed.
        """
        filters = {"label": [f"{SERVICE_LABEL}={SERVICE_LABEL_VALUE}", *label_filters]}
        try:
            listed = self._client.api.containers(all=True, filters=filters)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise SandboxUnavailable(f"Docker could not list the sandboxes: {exc}") from exc
        with self._active_lock:
            active = set(self._active)
        now = time.time()
        removed = []
        for summary in listed:
            container_id = summary["Id"]
            try:
                deadline = int((summary.get("Labels") or {})[DEADLINE_LABEL])
            except (KeyError, ValueError):
                log.warning("sandbox %s has no valid deadline label; left alone", container_id)
                continue
            if container_id in active or now < deadline + grace_seconds:
                continue
            try:
                self._client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                continue  # its own worker removed it meanwhile
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                log.warning("could not remove expired sandbox %s: %s", container_id[:12], exc)
                continue
            log.warning("removed sandbox %s, abandoned past its deadline", container_id[:12])
            removed.append(container_id)
        return removed

    def probe_version(self, language: Language) -> str:
        """The version of ``language`` in its image, found by running its ``version_code``.

        It runs as any task does, under the same limits, so what it reports is what tasks get.
        """
        outcome = self.run(
            SandboxJob(
                task_id=f"version-probe-{language.name}",
                language=language,
                code=language.version_code.encode(),
                stdin=b"",
                timeout_seconds=30,
                memory_mb=128,
            )
        )
        version = outcome.stdout.decode(errors="replace").strip()
        if outcome.status is not TaskStatus.SUCCEEDED or not version:
            raise SandboxFailure(
                f"{language.name}'s version probe failed ({outcome.status.value}):"
                f" {outcome.stderr[-300:].decode(errors='replace')}"
            )
        return version

    def remove_task_containers(self, task_id: str) -> int:
        """Force-remove every container of ``task_id``: what an earlier attempt left behind.

        Called before a task runs again, so that the run of a worker that died does not go on
        beside the new one until its deadline.
        """
        filters = {"label": [f"{SERVICE_LABEL}={SERVICE_LABEL_VALUE}", f"{TASK_LABEL}={task_id}"]}
        try:
            listed = self._client.api.containers(all=True, filters=filters)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise SandboxUnavailable(f"Docker could not list the sandboxes: {exc}") from exc
        removed = 0
        for summary in listed:
            try:
                self._client.api.remove_container(summary["Id"], force=True)
                removed += 1
            except docker.errors.NotFound:
                continue
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                raise SandboxUnavailable(f"Docker could not remove a sandbox: {exc}") from exc
        return removed

    def remove_expired_until(
        self, stopped: threading.Event, grace_seconds: float, interval_seconds: float
    ) -> None:
        """Call ``remove_expired`` now and every ``interval_seconds`` until ``stopped`` is set."""
        while not stopped.is_set():
            try:
                self.remove_expired(grace_seconds)
            except SandboxUnavailable as exc:
                log.warning("sweep of expired sandboxes skipped: %s", exc)
            stopped.wait(interval_seconds)

    def _create(self, job: SandboxJob):
        settings = self._settings
        language = job.language
        code_path = f"/tmp/{language.filename}"
        memory = f"{job.memory_mb}m"
        deadline = int(time.time()) + job.timeout_seconds
        # Each file costs about 1 KiB of kernel memory, charged to the task: without an inode
        # cap, empty files would exhaust the memory limit long before the tmpfs's size.
        tmp_options = (
            f"rw,noexec,nosuid,nodev,size={settings.tmp_mb}m,"
            f"nr_inodes={settings.tmp_mb * _TMP_INODES_PER_MB},mode=1777"
        )
        try:
            return self._client.containers.create(
                image=language.image,
                command=["python3", "-c", BOOTSTRAP, code_path, *language.command],
                # stdin_open without detach is how the SDK sets StdinOnce: closing our write
                # side of the attach socket then closes the program's stdin.
                stdin_open=True,
                detach=False,
                user="65534:65534",
                working_dir="/tmp",
                environment={"HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
                hostname="sandbox",
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": tmp_options},
                mem_limit=memory,
                memswap_limit=memory,  # equal to the limit: no swap
                nano_cpus=int(settings.cpus * 1e9),
                pids_limit=settings.pids,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                ipc_mode="none",
                init=True,
                ulimits=[
                    docker.types.Ulimit(
                        name="nofile", soft=settings.max_open_files, hard=settings.max_open_files
                    ),
                    docker.types.Ulimit(name="core", soft=0, hard=0),
                ],
                # Output is read from the attach stream; a log driver would keep a second,
                # unbounded copy of it on the host's disk.
                log_config=docker.types.LogConfig(type="none"),
                runtime=settings.runtime or None,
                labels={
                    SERVICE_LABEL: SERVICE_LABEL_VALUE,
                    TASK_LABEL: job.task_id,
                    DEADLINE_LABEL: str(deadline),
                },
            )
        except docker.errors.ImageNotFound as exc:
            raise SandboxFailure(
                f"The sandbox image {language.image!r} for {language.name} is missing."
            ) from exc
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise SandboxUnavailable(f"Docker could not create the sandbox: {exc}") from exc

    def _attach_and_run(self, container, job: SandboxJob) -> RunOutcome:
        attach = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        sock: socket.socket = getattr(attach, "_sock", attach)
        capture = _Capture(self._settings.max_output_bytes)
        outgoing = memoryview(b"%d\n" % len(job.code) + job.code + job.stdin)
        sampler = _MemorySampler(self._client, container.id)
        try:
            container.start()
            started = time.monotonic()
        except BaseException:
            self._close_attach(attach, sock)
            raise  # nothing ran: the engine's failure, which the caller may retry
        try:
            return self._supervise(
                container, job, attach, sock, sampler, capture, outgoing, started
            )
        except (docker.errors.APIError, requests.exceptions.RequestException, OSError) as exc:
            # The program ran, or may have: running it again would not be honest, so the task
            # ends `error` instead of being retried.
            raise SandboxFailure(
                f"Docker failed while the program ran, so its outcome is unknown: {exc}"
            ) from exc

    @staticmethod
    def _close_attach(attach, sock: socket.socket) -> None:
        # Closing the socket first: kill() and remove() can block for the whole API timeout
        # while an attach stream is still open.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
        with contextlib.suppress(OSError):
            attach.close()

    def _supervise(self, container, job, attach, sock, sampler, capture, outgoing, started):
        try:
            sampler.start()
            ended_by = self._pump(sock, outgoing, capture, started + job.timeout_seconds)
        finally:
            memory_peak_bytes = sampler.stop()
            self._close_attach(attach, sock)
        if ended_by != "exit":
            with contextlib.suppress(docker.errors.APIError):
                container.kill()
        exit_code = container.wait(timeout=_STOP_GRACE_SECONDS + 10)["StatusCode"]
        duration_ms = int((time.monotonic() - started) * 1000)
        oom_killed = self._oom_killed(container, probably=ended_by == "exit" and exit_code == 137)
        outcome = self._outcome(job, ended_by, exit_code, oom_killed, duration_ms, capture)
        return replace(outcome, memory_peak_bytes=memory_peak_bytes)

    @staticmethod
    def _oom_killed(container, probably: bool) -> bool:
        """Read State.OOMKilled; when a SIGKILL nobody sent makes it likely, wait for it a little.

        The engine records the OOM event separately from the exit, and under load the exit can
        come first: reading at once would report an out-of-memory kill as a plain SIGKILL.
        """
        give_up = time.monotonic() + (_OOM_EVENT_WAIT_SECONDS if probably else 0)
        while True:
            container.reload()
            if container.attrs["State"].get("OOMKilled"):
                return True
            if time.monotonic() >= give_up:
                return False
            time.sleep(0.1)

    def _pump(self, sock: socket.socket, outgoing: memoryview, capture: _Capture, deadline: float):
        """Send input and collect output until the program exits, the deadline, or the cap."""
        sock.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout"
                for _key, mask in selector.select(min(remaining, 1.0)):
                    if mask & selectors.EVENT_WRITE:
                        outgoing = self._send(sock, outgoing)
                        if not outgoing:
                            selector.modify(sock, selectors.EVENT_READ)
                    if mask & selectors.EVENT_READ:
                        try:
                            data = sock.recv(_READ_CHUNK)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except ConnectionResetError:
                            return "exit"
                        if not data:
                            return "exit"
                        capture.feed(data)
                        if capture.over_cap:
                            return "output_limit"
        finally:
            selector.close()

    @staticmethod
    def _send(sock: socket.socket, outgoing: memoryview) -> memoryview:
        try:
            sent = sock.send(outgoing[:_READ_CHUNK])
        except (BlockingIOError, InterruptedError):
            return outgoing
        except (BrokenPipeError, ConnectionResetError):
            return memoryview(b"")  # the program stopped reading its stdin: that is its business
        outgoing = outgoing[sent:]
        if not outgoing:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)  # end of stdin for the program
        return outgoing

    def _outcome(
        self,
        job: SandboxJob,
        ended_by: str,
        exit_code: int,
        oom_killed: bool,
        duration_ms: int,
        capture: _Capture,
    ) -> RunOutcome:
        error = None
        if ended_by == "timeout":
            status = TaskStatus.TIMED_OUT
            error = f"The program ran past its {job.timeout_seconds} s time limit and was killed."
        elif ended_by == "output_limit":
            status = TaskStatus.FAILED
            error = (
                f"The program wrote more than {self._settings.max_output_bytes} bytes to"
                f" {'stdout' if capture.truncated[_STDOUT] else 'stderr'} and was killed."
            )
        elif oom_killed:
            status = TaskStatus.FAILED
            error = f"A process ran out of memory (limit {job.memory_mb} MiB) and was killed."
        else:
            status = TaskStatus.SUCCEEDED if exit_code == 0 else TaskStatus.FAILED
        return RunOutcome(
            status=status,
            exit_code=exit_code,
            stdout=bytes(capture.buffers[_STDOUT]),
            stderr=bytes(capture.buffers[_STDERR]),
            stdout_truncated=capture.truncated[_STDOUT],
            stderr_truncated=capture.truncated[_STDERR],
            duration_ms=duration_ms,
            error=error,
            oom_killed=oom_killed,
            signal=_signal_name(exit_code),
        )

    def _remove(self, container) -> None:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            # The periodic sweep of labelled containers past their deadline removes it later.
            log.warning("could not remove sandbox %s: %s", container.id[:12], exc)
