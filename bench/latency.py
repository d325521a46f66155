"""Latency: sequential trivial tasks through the API against direct sandbox runs.

Each task is submitted, then its result polled until it is there (the client's view: `GET
/result` answers 202 until the task is final). The direct runs call the worker's own
DockerSandbox with the worker's own settings. The two alternate, one of each per round, so that
whatever else the machine does falls on both alike.

Knobs: BENCH_LATENCY_TASKS (30), BENCH_WARMUP (3), BENCH_POLL_MS (10).
"""

from __future__ import annotations

import statistics
import time

from bench.common import (
    Client,
    DirectSandbox,
    Service,
    comparison,
    knob,
    ms,
    parse_time,
    percentile,
    print_comparisons,
    private_config,
    wait_for_quiet_machine,
    write_results,
)

TARGET_P50_RATIO = 1.15


def through_service(client: Client, poll_seconds: float) -> tuple[float, dict]:
    """Seconds from submit to the client seeing the final status, and a breakdown of them."""
    started = time.time()
    begin = time.perf_counter()
    task_id = client.submit()
    submitted = time.perf_counter()
    while (result := client.result(task_id)) is None:
        time.sleep(poll_seconds)
    elapsed = time.perf_counter() - begin
    if result["status"] != "succeeded" or result["stdout"] != "1\n":
        raise RuntimeError(f"task {task_id} ended {result['status']}: {result}")
    status = client.status(task_id)  # its timestamps, after the clock has stopped
    created, claimed = parse_time(status["created_at"]), parse_time(status["started_at"])
    finished = parse_time(status["finished_at"])
    # Server timestamps have millisecond resolution; good enough to see where the time goes.
    return elapsed, {
        "submit": submitted - begin,
        "queued_to_claimed": claimed - created,
        "claimed_to_finished": finished - claimed,
        "finished_to_seen": started + elapsed - finished,
    }


def main() -> None:
    tasks = knob("LATENCY_TASKS", 30)
    warmup = knob("WARMUP", 3)
    poll_seconds = knob("POLL_MS", 10) / 1000
    quiet = wait_for_quiet_machine()
    print(f"latency: {tasks} sequential `print(1)` tasks, service vs direct sandbox")
    with private_config() as config, Service(config) as service:
        client = Client(service.base)
        direct = DirectSandbox(config)
        service_s, direct_s, parts = [], [], []
        try:
            for round_number in range(warmup + tasks):
                begin = time.perf_counter()
                direct.run()
                direct_elapsed = time.perf_counter() - begin
                service_elapsed, breakdown = through_service(client, poll_seconds)
                if round_number >= warmup:
                    direct_s.append(direct_elapsed)
                    service_s.append(service_elapsed)
                    parts.append(breakdown)
        finally:
            client.close()
            direct.close()

    figures = {
        "service_ms": {"p50": ms(percentile(service_s, 50)), "p90": ms(percentile(service_s, 90))},
        "direct_ms": {"p50": ms(percentile(direct_s, 50)), "p90": ms(percentile(direct_s, 90))},
        # Medians of where a service task's time went (server clock, millisecond stamps).
        "service_breakdown_median_ms": {
            key: ms(statistics.median(part[key] for part in parts)) for key in parts[0]
        },
    }
    comparisons = [
        comparison(
            "latency p50 (ms), service / direct",
            figures["service_ms"]["p50"],
            figures["direct_ms"]["p50"],
            "<=",
            TARGET_P50_RATIO,
        ),
        comparison(
            "latency p90 (ms), service / direct",
            figures["service_ms"]["p90"],
            figures["direct_ms"]["p90"],
        ),  # for information: the issue sets a target for p50 only
    ]
    print(f"  breakdown of a service task (median ms): {figures['service_breakdown_median_ms']}")
    print_comparisons(comparisons)
    write_results(
        "latency",
        {
            "settings": {
                "tasks": tasks,
                "warmup": warmup,
                "poll_ms": poll_seconds * 1000,
                "worker_concurrency": config.worker_concurrency,
                "api_workers": config.api_workers,
            },
            "quiet": quiet,
            "figures": figures,
            "comparisons": comparisons,
            "raw_ms": {
                "service": [ms(s) for s in service_s],
                "direct": [ms(s) for s in direct_s],
            },
        },
    )


if __name__ == "__main__":
    main()
