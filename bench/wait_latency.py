"""Wait latency: how soon after a task's commit a client has its result, waiting on it
(`GET /result/{id}?wait=30`, woken through Redis) against polling `GET /result/{id}` every 10 ms.

Each client submits `print(1)` (a worker runs it) and takes the time at which it has the final
result in hand; its delay is that moment less the task's `finished_at` (the worker's stamp just
before its commit; millisecond resolution, truncated, so delays read up to 1 ms long), which
`GET /status` gives once the clock has stopped (the result body has no timestamps). The two
clients alternate, one task each per round (waiting, polling, waiting, ...), so that whatever
else the machine does falls on both alike.

Knobs: BENCH_WAIT_TASKS (20) per client, BENCH_WARMUP (3) rounds left out, BENCH_POLL_MS (10).
"""

from __future__ import annotations

import time

from bench.common import (
    Client,
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

TARGET_WAITING_P50_MS = 20.0
WAIT_SECONDS = 30


def checked(task_id: str, result: dict) -> dict:
    if result["status"] != "succeeded" or result["stdout"] != "1\n":
        raise RuntimeError(f"task {task_id} ended {result['status']}: {result}")
    return result


def waiting(client: Client) -> dict:
    """Submit, then one `GET /result?wait=`; the delay and the number of result requests."""
    task_id = client.submit()
    status, answer = client.wait_result(task_id, WAIT_SECONDS)
    had_it = time.time()
    if status != 200:
        raise RuntimeError(f"waiting for {task_id}: {status} {answer} (the wait ended without it)")
    checked(task_id, answer)
    return delay(client, task_id, had_it, requests=1)


def polling(client: Client, poll_seconds: float) -> dict:
    """Submit, then `GET /result` until it is there, ``poll_seconds`` apart."""
    task_id = client.submit()
    requests = 1
    while (result := client.result(task_id)) is None:
        time.sleep(poll_seconds)
        requests += 1
    had_it = time.time()
    checked(task_id, result)
    return delay(client, task_id, had_it, requests)


def delay(client: Client, task_id: str, had_it: float, requests: int) -> dict:
    status = client.status(task_id)  # its timestamps, after the clock has stopped
    finished = parse_time(status["finished_at"])
    return {
        "delay_s": had_it - finished,
        "submit_to_result_s": had_it - parse_time(status["created_at"]),
        "result_requests": requests,
    }


def summary(runs: list[dict]) -> dict:
    delays = [run["delay_s"] for run in runs]
    return {
        "delay_ms": {
            "p50": ms(percentile(delays, 50)),
            "p90": ms(percentile(delays, 90)),
            "max": ms(max(delays)),
        },
        "submit_to_result_ms_p50": ms(percentile([run["submit_to_result_s"] for run in runs], 50)),
        "result_requests_p50": percentile([run["result_requests"] for run in runs], 50),
    }


def main() -> None:
    tasks = knob("WAIT_TASKS", 20)
    warmup = knob("WARMUP", 3)
    poll_seconds = knob("POLL_MS", 10) / 1000
    quiet = wait_for_quiet_machine()
    print(
        f"wait_latency: {tasks} `print(1)` tasks each, GET /result?wait={WAIT_SECONDS}"
        f" vs polling every {poll_seconds * 1000:g} ms, alternating"
    )
    with private_config() as config, Service(config) as service:
        waiter = Client(service.base, timeout=WAIT_SECONDS + 30)
        poller = waiter.clone()
        waited, polled = [], []
        try:
            for round_number in range(warmup + tasks):
                one_waited = waiting(waiter)
                one_polled = polling(poller, poll_seconds)
                if round_number >= warmup:
                    waited.append(one_waited)
                    polled.append(one_polled)
        finally:
            waiter.close()
            poller.close()

    figures = {"waiting": summary(waited), "polling": summary(polled)}
    for name, figure in figures.items():
        print(f"  {name:<8} {figure}")
    waiting_p50 = figures["waiting"]["delay_ms"]["p50"]
    comparisons = [
        comparison(
            "wait: commit to client p50 ms, vs 20 ms",
            waiting_p50,
            TARGET_WAITING_P50_MS,
            "<=",
            1.0,
        ),
        comparison(
            f"commit to client p50 ms, wait / poll {poll_seconds * 1000:g} ms",
            waiting_p50,
            figures["polling"]["delay_ms"]["p50"],
        ),
        comparison(
            f"commit to client p90 ms, wait / poll {poll_seconds * 1000:g} ms",
            figures["waiting"]["delay_ms"]["p90"],
            figures["polling"]["delay_ms"]["p90"],
        ),
    ]
    print_comparisons(comparisons)
    write_results(
        "wait_latency",
        {
            "settings": {
                "tasks": tasks,
                "warmup": warmup,
                "poll_ms": poll_seconds * 1000,
                "wait_seconds": WAIT_SECONDS,
                "worker_concurrency": config.worker_concurrency,
                "api_workers": config.api_workers,
                "api_threads": config.api_threads,
            },
            "quiet": quiet,
            "figures": figures,
            "comparisons": comparisons,
            "raw_delay_ms": {
                "waiting": [ms(run["delay_s"]) for run in waited],
                "polling": [ms(run["delay_s"]) for run in polled],
            },
        },
    )


if __name__ == "__main__":
    main()
