"""What every benchmark needs: a private database and queue, the service's real processes, a
client, the direct-sandbox baseline, percentiles, resident memory, and the results file.

Benchmarks are run from the repository root as modules (``python -m bench.latency``), so that
they can share the tests' process helpers. Knobs are ``BENCH_*`` environment variables, read
here and only here (the service itself reads its settings through ``taskservice.config_loader``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from taskservice.config import Config
from taskservice.config_loader import load_config
from taskservice.model import TaskStatus
from taskservice.sandbox import DockerSandbox, SandboxJob, docker_client
from taskservice.worker.main import sandbox_settings
from tests.service import (
    Process,
    free_port,
    own_database_and_queues,
    process_env,
    wait_for_http,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
TRIVIAL_CODE = "print(1)"
FINAL_STATUSES = {status.value for status in TaskStatus if status.is_final}


# --- knobs -------------------------------------------------------------------------------------


def knob(name: str, default, convert=int):
    """A ``BENCH_<name>`` setting from the environment, or ``default``."""
    raw = os.environ.get(f"BENCH_{name}", "").strip()
    return convert(raw) if raw else default


def knob_list(name: str, default: list[int]) -> list[int]:
    raw = os.environ.get(f"BENCH_{name}", "").strip()
    return [int(part) for part in raw.split(",") if part.strip()] if raw else default


# --- the machine -------------------------------------------------------------------------------


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet_machine() -> dict:
    """With BENCH_QUIET_LOAD set, wait (BENCH_QUIET_WAIT seconds at most) for the 1-minute load
    average to drop under it: figures taken while other work runs are noise. Returns what
    happened, for the results file.
    """
    threshold = knob("QUIET_LOAD", 0.0, float)
    waited = 0
    if threshold > 0:
        limit = knob("QUIET_WAIT", 2400)
        while load_average() >= threshold and waited < limit:
            print(f"  load {load_average():.2f} >= {threshold}: waiting for a quieter machine")
            time.sleep(30)
            waited += 30
    return {"load_at_start": load_average(), "quiet_threshold": threshold, "waited_s": waited}


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


# --- statistics --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100), interpolating between the two nearest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def comparison(
    what: str, service: float, baseline: float, target_op: str = "", target: float | None = None
) -> dict:
    """One 'service against its baseline' line: the ratio, and whether it meets its target
    (``met`` is None for a line shown for information, without a target).
    """
    ratio = service / baseline if baseline else math.nan
    met = None
    if target is not None:
        met = bool(ratio <= target if target_op == "<=" else ratio >= target)
    return {
        "what": what,
        "service": round(service, 2),
        "baseline": round(baseline, 2),
        "ratio": round(ratio, 3),
        "target": f"{target_op} {target}" if target is not None else "-",
        "met": met,
    }


def verdict(met: bool | None) -> str:
    return {True: "ok", False: "MISSED", None: ""}[met]


# --- memory ------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident memory of one process (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces; the parent pid follows its ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return sorted(children)


def tree_rss_kib(pid: int) -> dict:
    """A process and its direct children (a gunicorn master and its workers): each and the sum."""
    pids = [pid, *child_pids(pid)]
    each = {str(p): rss_kib(p) for p in pids}
    return {"total_kib": sum(each.values()), "processes": each}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by a process and its direct children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for each in (pid, *child_pids(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def server_connections(port: int) -> dict[int, dict]:
    """The established TCP connections to ``port`` on this machine, from the server's side
    (``ss -tnp``), by the client's port: ``unread``, the bytes received that the server has not
    read yet (Recv-Q), and ``pid``, the process that accepted it (None: still in the listening
    socket's queue, not accepted yet).
    """
    listed = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    connections = {}
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        owner = re.search(r"pid=(\d+)", line)
        connections[int(fields[3].rsplit(":", 1)[1])] = {
            "unread": int(fields[0]),
            "pid": int(owner.group(1)) if owner else None,
        }
    return connections


# --- results -----------------------------------------------------------------------------------


def write_results(name: str, results: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "load_at_end": load_average(),
        **results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"  written to {path.relative_to(ROOT)}")
    return path


def print_comparisons(comparisons: list[dict]) -> None:
    for line in comparisons:
        ratio = "-" if line["ratio"] is None else line["ratio"]
        print(
            f"  {line['what']:<44} service {line['service']:>9}  baseline {line['baseline']:>9}"
            f"  ratio {ratio:>6}  target {line['target']:<7}  {verdict(line['met'])}"
        )


# --- a private database and queue --------------------------------------------------------------


@contextlib.contextmanager
def private_config() -> Iterator[Config]:
    """The machine's Config with a database (migrated) and queue of this run's own, both
    removed at the end. Everything else (limits, concurrency, workers) is the real setting.
    """
    run_id = uuid.uuid4().hex[:10]
    base = load_config(
        {
            **os.environ,
            "QUEUE_NAME": f"taskservice.bench.{run_id}",
            "JWT_SECRET": os.environ.get("JWT_SECRET") or secrets.token_hex(32),
        }
    )
    with own_database_and_queues(base, f"taskservice_bench_{run_id}") as config:
        yield config


# --- the service's processes -------------------------------------------------------------------


class Service:
    """`taskservice api` and/or `taskservice worker`, as the operator would start them."""

    def __init__(self, config: Config, api: bool = True, worker: bool = True, **env: str):
        self._logs = tempfile.TemporaryDirectory(prefix="taskservice-bench-")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        environment = process_env(config, config.jwt_secret, PORT=str(port), **env)
        self.api = Process("api", environment, Path(self._logs.name) / "api.log") if api else None
        self.worker = (
            Process("worker", environment, Path(self._logs.name) / "worker.log") if worker else None
        )

    def __enter__(self) -> Service:
        try:
            if self.api is not None:
                wait_for_http(self.base, self.api.alive, self.api.log)
            if self.worker is not None:
                self._wait_for_worker()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_for_worker(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while "consuming from" not in self.worker.log():
            if not self.worker.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{self.worker.log()[-3000:]}")
            time.sleep(0.1)

    def __exit__(self, *exc_info) -> None:
        for process in (self.worker, self.api):
            if process is not None:
                process.stop()
        self._logs.cleanup()


class BareGunicorn:
    """gunicorn serving another WSGI app (``module:app``) with the service's gunicorn settings."""

    def __init__(self, app_module: str, env: dict[str, str]):
        self._logs = tempfile.TemporaryDirectory(prefix="taskservice-bench-")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = Path(self._logs.name) / "gunicorn.log"
        command = ["-m", "gunicorn", "--config", "python:taskservice.gunicorn_conf", app_module]
        with open(self.log_path, "a") as log:
            self.popen = subprocess.Popen(
                [sys.executable, *command],
                env={**env, "PORT": str(port)},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> BareGunicorn:
        try:
            wait_for_http(
                self.base, lambda: self.popen.poll() is None, lambda: self.log_path.read_text()
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._logs.cleanup()


# --- a client ----------------------------------------------------------------------------------


class Client:
    """A registered, logged-in user on one keep-alive connection (not thread-safe: one each).

    Plain http.client rather than requests: the client shares the machine's two cores with the
    service, and requests spends about four times the CPU per call (0.45 ms against 0.11 ms),
    which a tight polling loop takes away from the containers being measured.
    """

    # Below gunicorn's keep-alive (5 s): a connection idle longer is replaced before use rather
    # than found closed by the server halfway through a request.
    _REUSE_WITHIN_SECONDS = 2.0

    def __init__(self, base: str, token: str | None = None, timeout: float = 30):
        self.base = base
        self.timeout = timeout  # seconds a call may take; longer for `?wait=` calls
        parts = urlsplit(base)
        self._address = (parts.hostname, parts.port)
        self._connection: http.client.HTTPConnection | None = None
        self._last_used = 0.0
        self.token = token or self._register_and_log_in()

    def _register_and_log_in(self) -> str:
        name, password = f"bench{uuid.uuid4().hex[:12]}", "correct horse battery"
        body = {"username": name, "password": password}
        status, _ = self._call("POST", "/register", body, authorized=False)
        if status != 201:
            raise RuntimeError(f"register: {status}")
        status, answer = self._call("POST", "/login", body, authorized=False)
        if status != 200:
            raise RuntimeError(f"login: {status} {answer}")
        return answer["token"]

    def _call(self, method: str, path: str, body=None, authorized: bool = True):
        """(status, decoded JSON body or None)."""
        headers = {"Authorization": f"Bearer {self.token}"} if authorized else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._connection is not None and (
            time.monotonic() - self._last_used > self._REUSE_WITHIN_SECONDS
        ):
            self.close()
        if self._connection is None:
            self._connection = http.client.HTTPConnection(*self._address, timeout=self.timeout)
        try:
            self._connection.request(method, path, body=payload, headers=headers)
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        self._last_used = time.monotonic()
        is_json = response.getheader("Content-Type", "").startswith("application/json")
        return response.status, json.loads(data) if data and is_json else None

    def clone(self) -> Client:
        """The same user on a connection of its own, for another thread."""
        return Client(self.base, self.token, self.timeout)

    def submit(self, code: str = TRIVIAL_CODE, **options) -> str:
        """``options``: the task's other fields (``timeout``, ``language``, ...)."""
        status, answer = self._call("POST", "/task", {"code": code, **options})
        if status != 201:
            raise RuntimeError(f"submit: {status} {answer}")
        return answer["task_id"]

    def result(self, task_id: str) -> dict | None:
        """The result once the task is final, else None."""
        status, answer = self._call("GET", f"/result/{task_id}")
        if status == 202:
            return None
        if status != 200:
            raise RuntimeError(f"result: {status} {answer}")
        return answer

    def wait_result(self, task_id: str, seconds: float) -> tuple[int, dict | None]:
        """`GET /result?wait=`: (200, the result) once final, (202, the status) if the wait ended
        first; the connection's timeout must outlast ``seconds``.
        """
        return self._call("GET", f"/result/{task_id}?wait={seconds:g}")

    def status(self, task_id: str) -> dict:
        status, answer = self._call("GET", f"/status/{task_id}")
        if status != 200:
            raise RuntimeError(f"status: {status} {answer}")
        return answer

    def wait_final(self, task_id: str, poll_seconds: float, within: float = 120) -> dict:
        """Poll the status until it is final; return it."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            status = self.status(task_id)
            if status["status"] in FINAL_STATUSES:
                return status
            time.sleep(poll_seconds)
        raise RuntimeError(f"task {task_id} did not finish within {within} s")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def parse_time(stamp: str) -> float:
    """An API timestamp ('...Z') as epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- the baseline: a hardened `docker run --rm` from the command line --------------------------


class DockerRunCli:
    """`docker run --rm` with the sandbox's own limits, as an operator would type it: what one
    locked-down container costs without any of the service's code."""

    def __init__(self, config: Config):
        settings = sandbox_settings(config)
        memory = f"{config.task_memory_mb}m"
        tmp = f"/tmp:rw,noexec,nosuid,nodev,size={settings.tmp_mb}m"  # noqa: S108 (in the container)
        self._argv = [
            "docker",
            "-H",
            config.docker_host,
            "run",
            "--rm",
            "--network=none",
            "--read-only",
            f"--tmpfs={tmp}",
            "--user=65534:65534",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--ipc=none",
            "--init",
            f"--memory={memory}",
            f"--memory-swap={memory}",
            f"--cpus={settings.cpus}",
            f"--pids-limit={settings.pids}",
            f"--ulimit=nofile={settings.max_open_files}:{settings.max_open_files}",
            "--ulimit=core=0:0",
            "--log-driver=none",
            *([f"--runtime={settings.runtime}"] if settings.runtime else []),
            config.languages["python"].image,
            "python3",
            "-c",
            TRIVIAL_CODE,
        ]

    def run(self) -> None:
        finished = subprocess.run(self._argv, capture_output=True, timeout=60)
        if finished.returncode != 0 or finished.stdout != b"1\n":
            raise RuntimeError(f"docker run failed: {finished.stderr[-500:]!r}")


# --- the baseline: the project's own sandbox, called directly ----------------------------------


class DirectSandbox:
    """The worker's DockerSandbox with the worker's settings, minus queue, database and API.

    What it costs is the floor; what the service adds on top of it is the service's overhead.
    It is the cold path with the removal on the task's path (no pool): a direct run as it was
    before the warm pool, the baseline the pool is measured against.
    """

    def __init__(self, config: Config):
        self._config = config
        self._client = docker_client(config.docker_host)
        self._sandbox = DockerSandbox(self._client, sandbox_settings(config))

    def run(self, code: str = TRIVIAL_CODE):
        config = self._config
        outcome = self._sandbox.run(
            SandboxJob(
                task_id=str(uuid.uuid4()),
                language=config.languages["python"],
                code=code.encode(),
                stdin=b"",
                timeout_seconds=config.task_timeout_default,
                memory_mb=config.task_memory_mb,
            )
        )
        if outcome.status is not TaskStatus.SUCCEEDED:
            raise RuntimeError(f"direct sandbox run failed: {outcome}")
        return outcome

    def close(self) -> None:
        self._client.close()
