"""The warm pool and the background removal, with the real engine and the real sandbox image
(the spec and the remover's bound are checked without one)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import docker.errors
import pytest

from taskservice.language_table import default_languages
from taskservice.model import TaskStatus
from taskservice.sandbox import DockerSandbox, SandboxJob, SandboxSettings
from taskservice.sandbox.container_names import TASK_NAME_PREFIX, task_name
from taskservice.sandbox.pool import POOL_LABEL, PoolSettings, pool_spec
from taskservice.sandbox.remover import BackgroundRemover
from taskservice.sandbox.spec import (
    SERVICE_LABEL,
    SERVICE_LABEL_VALUE,
    TIMEOUT_LABEL,
    container_spec,
)
from tests.conftest import RUN_ID
from tests.service import ROOT

RUN_LABEL = f"pool-test-{RUN_ID}"
SETTINGS = SandboxSettings(max_output_bytes=64 * 1024)
# The container a program runs in, as it sees it: the id in its cgroup path (cgroup v1).
WHO_AM_I = "print(open('/proc/self/cgroup').read().split('/docker/')[1][:64])"


def job(config, code: str, timeout=5, memory_mb=256, task_id=None) -> SandboxJob:
    return SandboxJob(
        task_id or f"{RUN_LABEL}-{uuid.uuid4().hex[:8]}",
        config.languages["python"],
        code.encode(),
        b"",
        timeout,
        memory_mb,
    )


@contextlib.contextmanager
def pooled_sandbox(docker_client, **pool):
    settings = PoolSettings(**{"size": 2, "max_age_seconds": 300, "memory_mb": 256, **pool})
    sandbox = DockerSandbox(docker_client, SETTINGS, pool=settings, remove_in_background=True)
    try:
        yield sandbox
    finally:
        sandbox.close()


def pool_ids(docker_client, sandbox, running=True) -> set[str]:
    filters = {"label": f"{POOL_LABEL}={sandbox._pool.pool_id}"}
    if running:
        filters["status"] = "running"
    # Summaries: containers.list inspects each, and fails on one removed meanwhile.
    return {c["Id"] for c in docker_client.api.containers(all=True, filters=filters)}


def wait_for_pool(docker_client, sandbox, size: int, within: float = 60) -> set[str]:
    """The ids of the pool's containers once ``size`` of them are started and waiting."""
    deadline = time.monotonic() + within
    while True:
        ready = sandbox._pool.ids() & pool_ids(docker_client, sandbox)
        if len(ready) >= size and not sandbox._pool._filling_ids:
            return ready
        assert time.monotonic() < deadline, f"the pool holds {len(ready)} of {size}"
        time.sleep(0.1)


def container_of(outcome) -> str:
    assert outcome.status is TaskStatus.SUCCEEDED, outcome
    return outcome.stdout.decode().splitlines()[-1]


# --- without an engine ---------------------------------------------------------------------


def test_a_pooled_container_is_the_cold_one_but_for_its_labels():
    language = default_languages("some/image:1")["python"]
    settings = SandboxSettings(cpus=0.5, pids=32, tmp_mb=8, runtime="runsc")
    pool = PoolSettings(size=2, max_age_seconds=300, memory_mb=96, longest_task_seconds=60)
    cold = container_spec(SandboxJob("t-1", language, b"x", b"", 7, 96), settings)
    warm = pool_spec(language, settings, pool, "pool-1")
    assert {k: v for k, v in warm.items() if k != "labels"} == {
        k: v for k, v in cold.items() if k != "labels"
    }
    # The longest it may live: waiting its maximum age, then running the longest task.
    assert warm["labels"] == {
        SERVICE_LABEL: SERVICE_LABEL_VALUE,
        POOL_LABEL: "pool-1",
        TIMEOUT_LABEL: "360",
    }


def test_a_languages_pool_has_its_own_default_memory_and_environment():
    language = default_languages("some/image:1", "some/data:1")["python-data"]
    settings = SandboxSettings()
    pool = PoolSettings(size=2, max_age_seconds=300, memory_mb=96, longest_task_seconds=60)
    cold = container_spec(SandboxJob("t-1", language, b"x", b"", 7, 512), settings)
    warm = pool_spec(language, settings, pool, "pool-1")
    assert warm["mem_limit"] == "512m" and warm["environment"]["MPLBACKEND"] == "Agg"
    assert {k: v for k, v in warm.items() if k != "labels"} == {
        k: v for k, v in cold.items() if k != "labels"
    }


def test_task_names_are_valid_container_names_and_unique():
    first, second = task_name("a/b c"), task_name("a/b c")
    assert first != second
    assert first.startswith(TASK_NAME_PREFIX + "a_b_c-")


def test_removals_beyond_the_bound_happen_on_the_callers_thread():
    busy, release = threading.Event(), threading.Event()
    removed: list[tuple[int, str]] = []

    def remove(item):
        if item == 0:
            busy.set()
            release.wait(10)  # the background thread is stuck on the first one
        removed.append((item, threading.current_thread().name))

    remover = BackgroundRemover(remove, capacity=2)
    remover.submit(0)
    assert busy.wait(10)
    for item in range(1, 5):
        remover.submit(item)
    # 0 is being removed, 1 and 2 wait in the queue: 3 and 4 found it full.
    caller = threading.current_thread().name
    assert removed == [(3, caller), (4, caller)]
    release.set()
    remover.drain()
    assert sorted(item for item, _ in removed) == [0, 1, 2, 3, 4]
    assert {name for item, name in removed if item < 3} == {"sandbox-remove"}
    remover.close()
    remover.submit(5)  # after the close: at once
    assert removed[-1] == (5, caller)


# --- with the engine -----------------------------------------------------------------------


def test_each_container_runs_one_task_and_tasks_share_nothing(docker_client, config):
    with pooled_sandbox(docker_client) as sandbox:
        assert sandbox.run(job(config, "print(1)")).stdout == b"1\n"  # the pool fills now
        pooled = wait_for_pool(docker_client, sandbox, 2)
        # The first leaves a file in /tmp and a process that outlives it.
        leave_behind = (
            "import os, subprocess\n"
            "open('/tmp/left-behind', 'w').write('secret')\n"
            "subprocess.Popen(['sleep', '600'], start_new_session=True)\n" + WHO_AM_I
        )
        first = container_of(sandbox.run(job(config, leave_behind)))
        look = (
            "import os\n"
            "print(sorted(os.listdir('/tmp')))\n"
            # argv[0] of each process: docker-init, the bootstrap, the program, and no other.
            "print(sorted(open(f'/proc/{p}/cmdline').read().split(chr(0))[0]"
            " for p in os.listdir('/proc') if p.isdigit()))\n" + WHO_AM_I
        )
        outcome = sandbox.run(job(config, look))
        second = container_of(outcome)
        files, processes, _ = outcome.stdout.decode().splitlines()
        assert first != second and {first, second} <= pooled
        assert files == "['main.py', 'out']"
        assert processes == "['/sbin/docker-init', 'python3', 'python3']"
        sandbox.drain_removals()
        for used in (first, second):
            with pytest.raises(docker.errors.NotFound):
                docker_client.containers.get(used)


def test_a_dead_pooled_container_is_never_handed_out(docker_client, config):
    with pooled_sandbox(docker_client) as sandbox:
        sandbox.run(job(config, "print(1)"))
        pooled = wait_for_pool(docker_client, sandbox, 2)
        for container_id in pooled:
            docker_client.api.kill(container_id)
        ran_in = container_of(sandbox.run(job(config, WHO_AM_I)))
        assert ran_in not in pooled


def test_pooled_containers_past_their_age_are_replaced(docker_client, config):
    with pooled_sandbox(docker_client, max_age_seconds=2) as sandbox:
        sandbox.run(job(config, "print(1)"))
        old = wait_for_pool(docker_client, sandbox, 2)
        deadline = time.monotonic() + 60
        while old & pool_ids(docker_client, sandbox, running=False):
            assert time.monotonic() < deadline, "containers past their age are still there"
            time.sleep(0.2)
        new = wait_for_pool(docker_client, sandbox, 2)
        assert new and not new & old


def test_the_time_limit_counts_from_the_code_not_from_the_start(docker_client, config):
    with pooled_sandbox(docker_client) as sandbox:
        sandbox.run(job(config, "print(1)"))
        pooled = wait_for_pool(docker_client, sandbox, 2)
        time.sleep(2.5)  # the containers have been running longer than the task's limit
        code = "import time\ntime.sleep(0.3)\n" + WHO_AM_I
        outcome = sandbox.run(job(config, code, timeout=2))
        assert container_of(outcome) in pooled
        assert outcome.duration_ms < 2000


@pytest.mark.parametrize("memory_mb", [64, 512])
def test_a_task_with_other_memory_gets_it_in_a_pooled_container(docker_client, config, memory_mb):
    with pooled_sandbox(docker_client, memory_mb=256) as sandbox:
        sandbox.run(job(config, "print(1)"))
        pooled = wait_for_pool(docker_client, sandbox, 2)
        code = (
            WHO_AM_I + "\n"
            "print(open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read().strip())\n"
            "print(open('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes').read().strip())\n"
            # More than the pool's 256 MiB, less than 512: fits only where the new limit is 512.
            "data = bytearray(300 * 2**20)\n"
        )
        outcome = sandbox.run(job(config, code, memory_mb=memory_mb))
        ran_in, *limits = outcome.stdout.decode().splitlines()
        assert ran_in in pooled
        assert limits == [str(memory_mb * 2**20)] * 2
        if memory_mb == 512:
            assert outcome.status is TaskStatus.SUCCEEDED, outcome
        else:
            assert outcome.status is TaskStatus.FAILED and outcome.oom_killed, outcome
            assert f"out of memory (limit {memory_mb} MiB)" in outcome.error


def test_a_later_attempt_finds_a_pooled_container_by_its_task(docker_client, config):
    task_id = f"{RUN_LABEL}-again-{uuid.uuid4().hex[:8]}"
    other_worker = DockerSandbox(docker_client, SETTINGS)
    with pooled_sandbox(docker_client) as sandbox, ThreadPoolExecutor(1) as pool:
        sandbox.run(job(config, "print(1)"))
        wait_for_pool(docker_client, sandbox, 2)
        code = "import time\nprint('up', flush=True)\ntime.sleep(60)"
        running = pool.submit(sandbox.run, job(config, code, timeout=60, task_id=task_id))
        deadline = time.monotonic() + 30
        while not docker_client.containers.list(filters={"name": task_name(task_id)[:-8]}):
            assert time.monotonic() < deadline, "the taken container was never named"
            time.sleep(0.05)
        assert other_worker.remove_task_containers(task_id) == 1
        with contextlib.suppress(Exception):
            running.result(timeout=60)  # its container went away under it: any ending will do
        assert docker_client.containers.list(all=True, filters={"name": task_id}) == []


def test_a_pooled_run_is_cancelled_by_its_task(docker_client, config):
    task_id = f"{RUN_LABEL}-cancel-{uuid.uuid4().hex[:8]}"
    with pooled_sandbox(docker_client) as sandbox, ThreadPoolExecutor(1) as pool:
        sandbox.run(job(config, "print(1)"))
        wait_for_pool(docker_client, sandbox, 2)
        code = "import time\nprint('up', flush=True)\ntime.sleep(60)"
        running = pool.submit(sandbox.run, job(config, code, timeout=60, task_id=task_id))
        deadline = time.monotonic() + 30
        while not sandbox.kill_task(task_id):
            assert time.monotonic() < deadline, "the run never became known as the task's"
            time.sleep(0.05)
        outcome = running.result(timeout=60)
        assert outcome.status is not TaskStatus.TIMED_OUT
        assert outcome.duration_ms < 30_000
        assert not outcome.oom_killed  # our kill, not the kernel's


def test_the_close_removes_the_pool(docker_client, config):
    sandbox = DockerSandbox(
        docker_client, SETTINGS, pool=PoolSettings(size=2), remove_in_background=True
    )
    try:
        sandbox.run(job(config, "print(1)"))
        wait_for_pool(docker_client, sandbox, 2)
    finally:
        sandbox.close()
    assert pool_ids(docker_client, sandbox, running=False) == set()


def test_the_probe_runs_cold_so_only_languages_with_tasks_get_a_pool(docker_client, config):
    with pooled_sandbox(docker_client) as sandbox:
        sandbox.probe_version(config.languages["bash"])
        time.sleep(1)
        assert pool_ids(docker_client, sandbox, running=False) == set()


# A worker that fills its pool, then dies without a word: SIGKILL, nothing removed.
DYING_WORKER = """
import os, signal, sys, time, docker
from taskservice.language_table import default_languages
from taskservice.sandbox import DockerSandbox, SandboxJob, SandboxSettings
from taskservice.sandbox.pool import PoolSettings
python = default_languages(sys.argv[1])["python"]
pool = PoolSettings(size=2, max_age_seconds=1, memory_mb=64, longest_task_seconds=1)
sandbox = DockerSandbox(docker.from_env(), SandboxSettings(), pool=pool)
sandbox.run(SandboxJob(sys.argv[2], python, b"print(1)", b"", 5, 64))
while len(sandbox._active_ids()) < 2 or sandbox._pool._filling_ids:
    time.sleep(0.05)
print(sandbox._pool.pool_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_dead_workers_pool_is_removed_by_any_janitor(docker_client, config):
    finished = subprocess.run(
        [sys.executable, "-c", DYING_WORKER, config.sandbox_image, RUN_LABEL],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    pool_id = finished.stdout.strip()
    assert pool_id, finished.stderr
    only_these = [f"{POOL_LABEL}={pool_id}"]
    left = docker_client.containers.list(filters={"label": only_these})
    try:
        assert len(left) == 2  # still running, waiting for code that will never come
        assert all(c.labels[TIMEOUT_LABEL] == "2" for c in left)
        janitor = DockerSandbox(docker_client, SandboxSettings()).janitor
        time.sleep(2.5)  # past the longest life they could have had in a live worker
        assert sorted(janitor.remove_expired(0, label_filters=only_these)) == sorted(
            c.id for c in left
        )
    finally:
        for container in left:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def test_a_live_workers_janitor_leaves_its_own_pool_alone(docker_client, config):
    with pooled_sandbox(docker_client, max_age_seconds=1, longest_task_seconds=0) as sandbox:
        sandbox.run(job(config, "print(1)"))
        pooled = wait_for_pool(docker_client, sandbox, 2)
        sandbox._pool._stopped.set()  # no replacing from now on: they only grow older
        time.sleep(1.5)  # past their labelled life
        only_these = [f"{POOL_LABEL}={sandbox._pool.pool_id}"]
        assert sandbox.janitor.remove_expired(0, label_filters=only_these) == []
        # Any other worker's janitor takes them for a dead worker's.
        other = DockerSandbox(docker_client, SandboxSettings()).janitor
        assert sorted(other.remove_expired(0, label_filters=only_these)) == sorted(pooled)
