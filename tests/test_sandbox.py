"""The Docker sandbox on its own, with the real engine and the real sandbox image."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import docker.errors
import pytest

from taskservice.model import TaskStatus
from taskservice.sandbox import DockerSandbox, SandboxFailure, SandboxJob, SandboxSettings
from taskservice.sandbox.janitor import parse_engine_time
from taskservice.sandbox.spec import SERVICE_LABEL, SERVICE_LABEL_VALUE, TASK_LABEL, TIMEOUT_LABEL
from tests.conftest import RUN_ID
from tests.service import ROOT

RUN_LABEL = f"sandbox-test-{RUN_ID}"


@pytest.fixture(scope="module")
def sandbox(docker_client):
    return DockerSandbox(docker_client, SandboxSettings(max_output_bytes=64 * 1024))


@pytest.fixture
def run(sandbox, config):
    def run(code: str, language="python", stdin=b"", timeout=5, memory_mb=128):
        return sandbox.run(
            SandboxJob(
                task_id=RUN_LABEL,
                language=config.languages[language],
                code=code.encode(),
                stdin=stdin,
                timeout_seconds=timeout,
                memory_mb=memory_mb,
            )
        )

    return run


def start(pool, sandbox, config, code: str, timeout=5, memory_mb=128):
    """Run ``code`` on a thread of ``pool``; return its task id and the future outcome."""
    task_id = f"{RUN_LABEL}-{uuid.uuid4().hex[:8]}"
    job = SandboxJob(task_id, config.languages["python"], code.encode(), b"", timeout, memory_mb)
    return task_id, pool.submit(sandbox.run, job)


def running_container(docker_client, task_id: str, within: float = 30):
    deadline = time.monotonic() + within
    while True:
        listed = docker_client.containers.list(
            filters={"label": f"{TASK_LABEL}={task_id}", "status": "running"}
        )
        if listed:
            return listed[0]
        assert time.monotonic() < deadline, f"no running container of {task_id}"
        time.sleep(0.05)


class Watched:
    """A second attach to a running container: what the engine relays of its output."""

    def __init__(self, container):
        self.output = {1: b"", 2: b""}
        self._changed = threading.Condition()
        stream = container.attach(stdout=True, stderr=True, stream=True, demux=True)
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for stdout, stderr in stream:
            with self._changed:
                self.output[1] += stdout or b""
                self.output[2] += stderr or b""
                self._changed.notify_all()

    def wait_for(self, stream: int, data: bytes, within: float = 30) -> None:
        with self._changed:
            seen = self._changed.wait_for(lambda: data in self.output[stream], within)
        assert seen, f"{data!r} never came on stream {stream}: {self.output}"


def wait_for_memory_samples(docker_client, container, at_least: int, samples=2, within=30):
    """Wait until the engine has published ``samples`` stats of ``container`` at ``at_least``.

    The engine answers a stats request at its own collection tick (once a second on Docker
    20.10), and the sandbox's sampler asks again within 0.1 s of each answer: of two ticks with
    the memory held, the sampler was waiting for at least one.
    """
    deadline = time.monotonic() + within
    seen = set()
    while len(seen) < samples:
        assert time.monotonic() < deadline, f"only {len(seen)} samples at {at_least} bytes"
        stats = docker_client.api.stats(container.id, stream=False, one_shot=True)
        memory = stats.get("memory_stats") or {}
        assert memory, "the container stopped before the engine sampled it"
        if memory.get("usage", 0) >= at_least:
            seen.add(stats["read"])


def test_prints(run):
    outcome = run("print(6*7)")
    assert outcome.status is TaskStatus.SUCCEEDED
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (0, b"42\n", b"")
    assert outcome.duration_ms is not None and outcome.duration_ms > 0


def test_stdin_reaches_the_program_intact(run):
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value, NULs included
    code = "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"
    import hashlib

    outcome = run(code, stdin=data)
    assert outcome.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


def test_exit_code_and_traceback(run):
    outcome = run("import sys\nprint('before')\nsys.exit(3)")
    assert (outcome.status, outcome.exit_code, outcome.stdout) == (
        TaskStatus.FAILED,
        3,
        b"before\n",
    )
    outcome = run("1/0")
    assert outcome.status is TaskStatus.FAILED and b"ZeroDivisionError" in outcome.stderr


def test_wall_clock_timeout_kills(run):
    outcome = run("import time\nprint('started', flush=True)\ntime.sleep(60)", timeout=1)
    assert outcome.status is TaskStatus.TIMED_OUT
    assert outcome.stdout == b"started\n"
    assert outcome.signal == "SIGKILL"
    assert outcome.duration_ms < 10_000


def test_output_is_capped_and_flagged(sandbox, config, docker_client):
    # The engine relays stdout and stderr independently, so the program writes its stderr
    # bytes and floods stdout only once the test, attached too, has seen the engine relay them.
    # It writes "ready" until then so that the test knows its attach is in place first.
    code = (
        "import signal, sys\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})\n"
        "while signal.sigtimedwait({signal.SIGUSR1}, 0.05) is None:\n"
        "    print('ready', flush=True)\n"
        "sys.stderr.write('e' * 10)\n"
        "sys.stderr.flush()\n"
        "signal.sigwait({signal.SIGUSR2})\n"
        "while True: print('x' * 1000)\n"
    )
    with ThreadPoolExecutor(1) as pool:
        task_id, outcome = start(pool, sandbox, config, code, timeout=30)
        container = running_container(docker_client, task_id)
        watched = Watched(container)
        watched.wait_for(1, b"ready\n")
        container.kill(signal="SIGUSR1")
        watched.wait_for(2, b"e" * 10)
        container.kill(signal="SIGUSR2")
        outcome = outcome.result()
    assert outcome.status is TaskStatus.FAILED
    assert outcome.stdout_truncated and not outcome.stderr_truncated
    assert len(outcome.stdout) == 64 * 1024
    assert re.fullmatch(rb"(ready\n)+(x{1000}\n)*x*", outcome.stdout)  # cut at the cap
    assert outcome.stderr == b"e" * 10
    assert "more than 65536 bytes to stdout" in outcome.error


def test_memory_limit(run):
    outcome = run("x = bytearray(400 * 1024 * 1024)\nprint('survived')", memory_mb=64)
    assert outcome.status is TaskStatus.FAILED
    assert outcome.oom_killed
    assert outcome.stdout == b""


def test_bash_and_the_locked_down_user(run):
    outcome = run(
        "id -u; id -g; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status;"
        " ls /sys/class/net; touch /not-allowed 2>/dev/null || echo read-only",
        language="bash",
    )
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    lines = outcome.stdout.decode().split("\n")
    assert lines[0:2] == ["65534", "65534"]
    assert "CapEff:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines
    assert "lo" in lines and "eth0" not in lines
    assert "read-only" in lines


def test_no_container_is_left(run, docker_client):
    # Each run below creates a container labelled with this run's id, then removes it.
    run("print(1)")
    run("import time; time.sleep(30)", timeout=1)
    run("print('x' * 10**7)")
    left = docker_client.containers.list(all=True, filters={"label": f"{TASK_LABEL}={RUN_LABEL}"})
    assert left == []


def test_missing_image_is_a_clear_failure(docker_client, config):
    from dataclasses import replace

    language = replace(config.languages["python"], image="taskservice/no-such-image:0")
    sandbox = DockerSandbox(docker_client, SandboxSettings())
    job = SandboxJob("t", language, b"print(1)", b"", 5, 64)
    with pytest.raises(SandboxFailure, match="no-such-image"):
        sandbox.run(job)


def test_memory_peak_is_sampled_while_the_program_runs(sandbox, config, docker_client):
    # The program holds its 100 MiB until the engine has sampled them, then exits.
    code = (
        "import signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
        "held = bytearray(100 * 2**20)\n"
        "signal.sigwait({signal.SIGUSR1})\n"
        "print(len(held))\n"
    )
    with ThreadPoolExecutor(1) as pool:
        task_id, outcome = start(pool, sandbox, config, code, timeout=30, memory_mb=256)
        container = running_container(docker_client, task_id)
        wait_for_memory_samples(docker_client, container, 100 * 2**20)
        container.kill(signal="SIGUSR1")
        outcome = outcome.result()
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    assert outcome.stdout == b"104857600\n"
    assert outcome.memory_peak_bytes is not None, "no sample was taken"
    assert 100 * 2**20 <= outcome.memory_peak_bytes <= 256 * 2**20


def test_memory_peak_of_a_program_killed_at_its_deadline(sandbox, config, docker_client):
    # A deadline cannot wait for an event; the test checks instead that the engine sampled the
    # held 50 MiB before it, and 8 s leave room for that on a busy machine.
    code = "import time\nheld = bytearray(50 * 2**20)\ntime.sleep(600)\n"
    with ThreadPoolExecutor(1) as pool:
        task_id, outcome = start(pool, sandbox, config, code, timeout=8, memory_mb=128)
        container = running_container(docker_client, task_id)
        wait_for_memory_samples(docker_client, container, 50 * 2**20)
        outcome = outcome.result()
    assert outcome.status is TaskStatus.TIMED_OUT
    assert outcome.memory_peak_bytes is not None, "no sample was taken"
    assert 50 * 2**20 <= outcome.memory_peak_bytes <= 128 * 2**20


def test_child_killed_for_memory_fails_the_task_though_the_parent_exits_0(run):
    code = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    hog = bytearray(200 * 2**20)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print('parent done')\n"
    )
    outcome = run(code, memory_mb=64)
    assert (outcome.status, outcome.exit_code, outcome.signal) == (TaskStatus.FAILED, 0, None)
    assert outcome.oom_killed
    assert outcome.stdout == b"parent done\n"
    assert "out of memory (limit 64 MiB)" in outcome.error


def _plant(docker_client, config, task_id: str, timeout: int | str, start: bool = True):
    """A sleeping container labelled as the service's, as a worker that died would leave it."""
    container = docker_client.containers.create(
        config.sandbox_image,
        ["sleep", "600"],
        labels={
            SERVICE_LABEL: SERVICE_LABEL_VALUE,
            TASK_LABEL: task_id,
            TIMEOUT_LABEL: str(timeout),
        },
        network_mode="none",
        user="65534:65534",
    )
    if start:
        container.start()
    return container


def test_remove_expired_counts_the_limit_from_the_start_then_the_grace(docker_client, config):
    sandbox = DockerSandbox(docker_client, SandboxSettings())
    task_id = f"{RUN_LABEL}-orphans"
    short = _plant(docker_client, config, task_id, 1)
    never_started = _plant(docker_client, config, task_id, 1, start=False)
    long = _plant(docker_client, config, task_id, 600)
    unreadable = _plant(docker_client, config, task_id, "soon")
    planted = [short, never_started, long, unreadable]
    # Only this test's containers: other runs on this engine have their own.
    only_these = [f"{TASK_LABEL}={task_id}"]
    try:
        # Within the grace, nothing goes, whatever the limit.
        assert sandbox.janitor.remove_expired(3600, label_filters=only_these) == []
        short.reload()
        started = parse_engine_time(short.attrs["State"]["StartedAt"])
        while time.time() < started + 1.5:  # the short limit passes, counted from the start
            time.sleep(0.1)
        removed = sandbox.janitor.remove_expired(0, label_filters=only_these)
        assert sorted(removed) == sorted([short.id, never_started.id])
        left = docker_client.containers.list(all=True, filters={"label": only_these})
        assert {c.id for c in left} == {long.id, unreadable.id}
    finally:
        for container in planted:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def test_version_probe_reports_what_the_image_runs(sandbox, docker_client, config):
    for language in config.languages.values():
        # Asked independently of the sandbox: a plain container with the image's own shell.
        independent = docker_client.containers.run(
            language.image,
            [*language.command, "-c", language.version_code],
            remove=True,
            network_mode="none",
            user="65534:65534",
            labels={TASK_LABEL: RUN_LABEL},
        )
        probed = sandbox.probe_version(language)
        assert probed == independent.decode().strip()
        # python-data adds its libraries' versions in brackets.
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?( \(.+\))?", probed), probed


@pytest.mark.runsc  # changes the host's dockerd: run by `make test-runsc` only
def test_runsc_runs_a_task_when_registered(docker_client, config):
    # The script installs Debian's runsc and registers it with the running dockerd (a reload,
    # not a restart); after it, a task runs under gVisor's own kernel, not the host's.
    setup = subprocess.run(
        [str(ROOT / "scripts" / "enable-runsc.sh")], capture_output=True, text=True, timeout=600
    )
    assert setup.returncode == 0, setup.stderr
    sandbox = DockerSandbox(
        docker_client, SandboxSettings(runtime="runsc", max_output_bytes=64 * 1024)
    )
    job = SandboxJob(
        RUN_LABEL,
        config.languages["python"],
        b"import os, platform\n"
        b"print(platform.release())\n"
        b"print(sorted(os.listdir('/sys/class/net')))\n",
        b"",
        10,
        128,
    )
    outcome = sandbox.run(job)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.stderr
    release, interfaces = outcome.stdout.decode().splitlines()
    assert release != os.uname().release
    assert interfaces == "['lo']"


def test_another_workers_janitor_leaves_a_live_workers_container_alone(docker_client, config):
    # Two workers on one engine: one runs a task to its deadline and past it (kill, wait, read
    # the exit), while the other's janitor sweeps without pause with the configured grace.
    runner = DockerSandbox(docker_client, SandboxSettings())
    other = DockerSandbox(docker_client, SandboxSettings())
    task_id = f"{RUN_LABEL}-two-workers"
    swept: list[str] = []
    done = threading.Event()

    def sweep_until_done():
        while not done.is_set():
            swept.extend(
                other.janitor.remove_expired(
                    config.sandbox_orphan_grace_seconds, label_filters=[f"{TASK_LABEL}={task_id}"]
                )
            )
            time.sleep(0.05)

    sweeper = threading.Thread(target=sweep_until_done)
    sweeper.start()
    try:
        outcome = runner.run(
            SandboxJob(
                task_id=task_id,
                language=config.languages["python"],
                code=b"import time; print('up', flush=True); time.sleep(60)",
                stdin=b"",
                timeout_seconds=1,
                memory_mb=64,
            )
        )
    finally:
        done.set()
        sweeper.join()
    assert outcome.status is TaskStatus.TIMED_OUT, outcome
    assert outcome.stdout == b"up\n"
    assert swept == []
