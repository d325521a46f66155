"""The sandbox alone: `print(1)` through DockerSandbox.run, cold and from the warm pool.

No queue, database or API: what one run costs the worker, from the call to the outcome
("run"), and the program's own part of it, from the code's sending to the exit status read
("code_sent_to_exit", the outcome's duration). The pool's runs wait for the pool to be full
before each run, so that each takes a waiting container (the refill is not timed).

Knobs: BENCH_SANDBOX_RUNS (20 per mode), BENCH_WARMUP (3 per mode).
"""

from __future__ import annotations

import statistics
import time
import uuid

from bench.common import knob, ms, percentile, wait_for_quiet_machine, write_results
from taskservice.config_loader import load_config
from taskservice.model import TaskStatus
from taskservice.sandbox import DockerSandbox, SandboxJob, docker_client
from taskservice.sandbox.pool import PoolSettings
from taskservice.worker.main import sandbox_settings


def _job(config) -> SandboxJob:
    return SandboxJob(
        task_id=f"bench-{uuid.uuid4()}",
        language=config.languages["python"],
        code=b"print(1)",
        stdin=b"",
        timeout_seconds=config.task_timeout_default,
        memory_mb=config.task_memory_mb,
    )


def _wait_for_full_pool(sandbox: DockerSandbox, size: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while len(sandbox._pool.ids()) < size:  # a benchmark may look inside
        if time.monotonic() > deadline:
            raise RuntimeError("the pool never filled")
        time.sleep(0.02)
    time.sleep(0.2)  # the last fill's start settles


def measure(config, mode: str, runs: int, warmup: int) -> dict:
    client = docker_client(config.docker_host)
    pool = PoolSettings(size=2, memory_mb=config.task_memory_mb) if mode == "pool" else None
    sandbox = DockerSandbox(client, sandbox_settings(config), pool=pool)
    total, program = [], []
    try:
        for number in range(warmup + runs):
            if pool is not None and number > 0:
                _wait_for_full_pool(sandbox, pool.size)
            began = time.perf_counter()
            outcome = sandbox.run(_job(config))
            elapsed = time.perf_counter() - began
            if outcome.status is not TaskStatus.SUCCEEDED or outcome.stdout != b"1\n":
                raise RuntimeError(f"run failed: {outcome}")
            if number >= warmup:
                total.append(elapsed)
                program.append(outcome.duration_ms / 1000)
    finally:
        sandbox.close()
        client.close()
    return {
        "run_p50_ms": ms(statistics.median(total)),
        "run_p90_ms": ms(percentile(total, 90)),
        "code_sent_to_exit_p50_ms": ms(statistics.median(program)),
        "code_sent_to_exit_p90_ms": ms(percentile(program, 90)),
    }


def main() -> None:
    runs = knob("SANDBOX_RUNS", 20)
    warmup = knob("WARMUP", 3)
    quiet = wait_for_quiet_machine()
    config = load_config()
    results = {"runs": runs, "machine_at_start": quiet}
    for mode in ("cold", "pool"):
        results[mode] = measure(config, mode, runs, warmup)
        print(mode, results[mode])
    print("results in", write_results("sandbox_runs", results))


if __name__ == "__main__":
    main()
