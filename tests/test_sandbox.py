"""The Docker sandbox on its own, with the real engine and the real sandbox image."""

from __future__ import annotations

import pytest

from taskservice.model import TaskStatus
from taskservice.worker.sandbox import (
    TASK_LABEL,
    DockerSandbox,
    SandboxFailure,
    SandboxJob,
    SandboxSettings,
)
from tests.conftest import RUN_ID

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


def test_output_is_capped_and_flagged(run):
    outcome = run("import sys\nsys.stderr.write('e'*10)\nwhile True: print('x'*1000)")
    assert outcome.status is TaskStatus.FAILED
    assert outcome.stdout_truncated and not outcome.stderr_truncated
    assert len(outcome.stdout) == 64 * 1024
    assert outcome.stderr == b"e" * 10
    assert "more than 65536 bytes" in outcome.error


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
