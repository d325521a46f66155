"""Throughput: many trivial tasks submitted at once, against direct sandbox runs in a thread pool
as wide as the worker's concurrency.

Service, with the warm pool on (SANDBOX_POOL_SIZE 2): tasks per second from the first submit to
the last task's ``finished_at`` (the server's own stamp, so polling does not blur it). Direct:
the same number of cold runs of the worker's own DockerSandbox on a pool of
``WORKER_CONCURRENCY`` threads.

Each side runs BENCH_THROUGHPUT_REPEAT (2) times, A-B-B-A, and its best run counts.

Knobs: BENCH_THROUGHPUT_TASKS (200); BENCH_CONCURRENCY, a comma-separated list of worker
concurrencies to compare (default: the configured one). The target applies to the configured
concurrency; a sweep is how its default was chosen.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from bench.common import (
    Client,
    DirectSandbox,
    Service,
    comparison,
    knob,
    knob_list,
    parse_time,
    print_comparisons,
    private_config,
    tree_cpu_seconds,
    wait_for_quiet_machine,
    write_results,
)
from taskservice.config import Config

TARGET_RATIO = 1.0
POOL_SIZE = "2"  # the pool on, as by default, whatever the environment says
# Threads that post the tasks: enough that submitting takes a small part of the run.
SUBMITTERS = 8


def submit_all(client: Client, count: int) -> list[str]:
    """Submit ``count`` tasks from SUBMITTERS threads, each on a connection of its own; return
    their ids in submission order (roughly: the threads interleave).
    """
    clients = [client.clone() for _ in range(SUBMITTERS)]

    def submit_share(submitter: int) -> list[str]:
        return [clients[submitter].submit() for _ in range(submitter, count, SUBMITTERS)]

    try:
        with ThreadPoolExecutor(max_workers=SUBMITTERS) as pool:
            shares = list(pool.map(submit_share, range(SUBMITTERS)))
    finally:
        for each in clients:
            each.close()
    # Task n was the (n // SUBMITTERS)-th submission of thread n % SUBMITTERS.
    return [shares[n % SUBMITTERS][n // SUBMITTERS] for n in range(count)]


def through_service(config: Config, tasks: int) -> dict:
    with Service(
        config, WORKER_CONCURRENCY=str(config.worker_concurrency), SANDBOX_POOL_SIZE=POOL_SIZE
    ) as service:
        client = Client(service.base)
        try:
            client.wait_final(client.submit(), 0.05)  # the worker is up and warm
            cpu_before = {"api": tree_cpu_seconds(service.api.pid)}
            cpu_before["worker"] = tree_cpu_seconds(service.worker.pid)
            began = time.time()
            task_ids = submit_all(client, tasks)
            submitted = time.time()
            # Tasks run roughly in order: by the time the last one is final, nearly all are.
            # The time comes from the server's stamps, so slow polling loses nothing, and it
            # leaves the CPU to the work being measured.
            statuses = [client.wait_final(task_id, 0.5, within=600) for task_id in task_ids]
            # What the service's own processes spent per task (the polling included).
            cpu_ms = {
                f"{part}_cpu_ms_per_task": (tree_cpu_seconds(pid) - cpu_before[part]) * 1000 / tasks
                for part, pid in (("api", service.api.pid), ("worker", service.worker.pid))
            }
        finally:
            client.close()
    failed = [s for s in statuses if s["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} tasks did not succeed, e.g. {failed[0]}")
    last = max(parse_time(s["finished_at"]) for s in statuses)
    return {
        "tasks_per_s": tasks / (last - began),
        "seconds": last - began,
        "submit_seconds": submitted - began,
        **cpu_ms,
    }


def direct(config: Config, tasks: int) -> dict:
    sandbox = DirectSandbox(config)
    try:
        sandbox.run()  # warm, as the service's worker is
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=config.worker_concurrency) as pool:
            for future in [pool.submit(sandbox.run) for _ in range(tasks)]:
                future.result()
        seconds = time.perf_counter() - began
    finally:
        sandbox.close()
    return {"tasks_per_s": tasks / seconds, "seconds": seconds}


def main() -> None:
    tasks = knob("THROUGHPUT_TASKS", 200)
    repeat = knob("THROUGHPUT_REPEAT", 2)
    quiet = wait_for_quiet_machine()
    runs = []
    comparisons = []
    with private_config() as base_config:
        concurrencies = knob_list("CONCURRENCY", [base_config.worker_concurrency])
        for concurrency in concurrencies:
            config = replace(base_config, worker_concurrency=concurrency)
            print(f"throughput: {tasks} `print(1)` tasks at once, worker concurrency {concurrency}")
            # Best of `repeat` runs each, in A-B-B-A order: other work on the machine only ever
            # slows a run down, and it rarely covers both runs of one side.
            baselines, services = [], []
            for round_number in range(repeat):
                sides = ["direct", "service"] if round_number % 2 == 0 else ["service", "direct"]
                for side in sides:
                    if side == "direct":
                        baselines.append(direct(config, tasks))
                    else:
                        services.append(through_service(config, tasks))
            baseline = max(baselines, key=lambda run: run["tasks_per_s"])
            service = max(services, key=lambda run: run["tasks_per_s"])
            runs.append(
                {
                    "worker_concurrency": concurrency,
                    "service": service,
                    "direct": baseline,
                    "all_service_tasks_per_s": [round(r["tasks_per_s"], 2) for r in services],
                    "all_direct_tasks_per_s": [round(r["tasks_per_s"], 2) for r in baselines],
                }
            )
            is_default = concurrency == base_config.worker_concurrency
            line = comparison(
                f"tasks/s at concurrency {concurrency}, service (pool on) / direct cold",
                service["tasks_per_s"],
                baseline["tasks_per_s"],
                ">=",
                TARGET_RATIO if is_default else None,
            )
            comparisons.append(line)
            print_comparisons([line])
    for run in runs:
        run["service"] = {k: round(v, 2) for k, v in run["service"].items()}
        run["direct"] = {k: round(v, 2) for k, v in run["direct"].items()}
    write_results(
        "throughput",
        {
            "settings": {
                "tasks": tasks,
                "default_worker_concurrency": base_config.worker_concurrency,
                "api_workers": base_config.api_workers,
                "submitters": SUBMITTERS,
                "repeat": repeat,
                "sandbox_pool_size": int(POOL_SIZE),
            },
            "quiet": quiet,
            "figures": {"runs": runs},
            "comparisons": comparisons,
        },
    )


if __name__ == "__main__":
    main()
