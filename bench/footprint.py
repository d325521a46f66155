"""Footprint: resident memory of the API (gunicorn master and workers, summed) and of the worker,
idle, then after many trivial tasks, with the warm pool on (SANDBOX_POOL_SIZE 2).

"Idle" is taken twice: right after start-up, and after a short warm-up (connections open, lazy
imports done). Growth is judged against the warmed-up figure, since what the first tasks load
is paid once; growth from start-up is shown too.

Knobs: BENCH_FOOTPRINT_TASKS (1000), BENCH_FOOTPRINT_WARMUP (20).
"""

from __future__ import annotations

import time

from bench.common import (
    Client,
    Service,
    comparison,
    knob,
    print_comparisons,
    private_config,
    tree_rss_kib,
    wait_for_quiet_machine,
    write_results,
)
from bench.throughput import submit_all

TARGET_GROWTH_RATIO = 1.10
POOL_SIZE = "2"  # the pool on, as by default, whatever the environment says
BATCH = 100  # tasks submitted at once; each batch finishes before the next
SETTLE_SECONDS = 3  # idle time before a reading, so that in-flight work has ended


def run_tasks(client: Client, count: int) -> None:
    done = 0
    while done < count:
        batch = min(BATCH, count - done)
        for task_id in submit_all(client, batch):
            status = client.wait_final(task_id, 0.1, within=600)
            if status["status"] != "succeeded":
                raise RuntimeError(f"task {task_id} ended {status['status']}")
        done += batch
        print(f"  {done}/{count} tasks done")


def reading(service: Service) -> dict:
    time.sleep(SETTLE_SECONDS)
    return {
        "api": tree_rss_kib(service.api.pid),
        "worker": tree_rss_kib(service.worker.pid),
    }


def main() -> None:
    tasks = knob("FOOTPRINT_TASKS", 1000)
    warmup = knob("FOOTPRINT_WARMUP", 20)
    quiet = wait_for_quiet_machine()
    print(f"footprint: resident memory idle and after {tasks} tasks")
    with private_config() as config, Service(config, SANDBOX_POOL_SIZE=POOL_SIZE) as service:
        client = Client(service.base)
        try:
            started = reading(service)
            run_tasks(client, warmup)
            warm = reading(service)
            run_tasks(client, tasks)
            after = reading(service)
        finally:
            client.close()

    def mib(sample: dict, part: str) -> float:
        return sample[part]["total_kib"] / 1024

    comparisons = []
    for part, label in (("api", "API (master + workers)"), ("worker", "worker (pool on)")):
        comparisons.append(
            comparison(
                f"{label} RSS MiB, after / warm idle",
                mib(after, part),
                mib(warm, part),
                "<=",
                TARGET_GROWTH_RATIO,
            )
        )
        comparisons.append(
            comparison(f"{label} RSS MiB, after / at start", mib(after, part), mib(started, part))
        )
    print_comparisons(comparisons)
    write_results(
        "footprint",
        {
            "settings": {
                "tasks": tasks,
                "warmup_tasks": warmup,
                "api_workers": config.api_workers,
                "worker_concurrency": config.worker_concurrency,
                "sandbox_pool_size": int(POOL_SIZE),
            },
            "quiet": quiet,
            "figures": {"at_start": started, "warm_idle": warm, "after_tasks": after},
            "comparisons": comparisons,
        },
    )


if __name__ == "__main__":
    main()
