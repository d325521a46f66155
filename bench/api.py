"""API: requests per second and p99 latency of `GET /status/{id}` and `POST /task` under many
concurrent connections, against a bare Falcon app (bench/bare_app.py) with endpoints of the same
shape, served with the service's own gunicorn settings.

Load comes from wrk (Debian's package) on this machine, with bench/wrk_report.lua. No worker
runs: the submitted tasks stay queued, and go away with the run's database and queue.

Both servers run with the same API_WORKERS and API_THREADS (the service's settings, from the
environment: `API_THREADS=4 python -m bench.api` measures both sides with 4 threads each).

`POST /task` is sent as BENCH_API_SUBMITTERS users (16) in turn: one user's submissions pass
its quota check one at a time (tasks.py's lock on the user's row, held until the commit is on
disk), so a single user is bound to about one submission per commit, a few hundred a second,
whatever the rest of the service does; and the submit rate limit would stop one user long
before. The bare POST gets the same tokens (it ignores them).

Knobs: BENCH_API_SECONDS (10) per measurement, BENCH_API_CONNECTIONS (64),
BENCH_API_SUBMITTERS (16).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections import Counter
from urllib.parse import urlsplit

from bench.common import (
    ROOT,
    BareGunicorn,
    Client,
    Service,
    comparison,
    knob,
    print_comparisons,
    private_config,
    server_connections,
    tree_cpu_seconds,
    wait_for_quiet_machine,
    write_results,
)
from tests.service import process_env

TARGET_STATUS_RATIO = 0.6
TARGET_SUBMIT_RATIO = 0.35
WRK_SCRIPT = ROOT / "bench" / "wrk_report.lua"
WRK_THREADS = 2
WARMUP_SECONDS = 2
TASK_BODY = json.dumps({"code": "print(1)"})


def wrk(url: str, seconds: int, connections: int, method: str, body: str, token: str) -> dict:
    """One wrk run; its summary, with requests per second and the error count added.
    ``token``: one bearer token, or several separated by commas, sent in turn."""
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    tokens = "WRK_TOKENS" if "," in token else "WRK_TOKEN"
    env = {**os.environ, "WRK_METHOD": method, "WRK_BODY": body, tokens: token}
    finished = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 30, check=True
    )
    line = next((ln for ln in finished.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{finished.stdout}\n{finished.stderr}")
    summary = json.loads(line.removeprefix("WRK_JSON "))
    summary["rps"] = round(summary["requests"] / (summary["duration_us"] / 1e6), 1)
    summary["error_count"] = sum(summary["errors"].values())
    return summary


def measure(
    name: str,
    server_pid: int,
    url: str,
    method: str,
    body: str,
    token: str,
    ignore_ports: frozenset[int] = frozenset(),
    **load,
):
    """wrk against ``url``; adds the server's CPU time per request (its processes only), which
    says what a request costs even when the machine is too busy for the rates to mean much, and
    how wrk's connections were spread over the server's processes halfway through (gunicorn's
    processes race to accept each connection; one may get them all). Connections from the
    client ports in ``ignore_ports`` are not wrk's.
    """
    wrk(url, WARMUP_SECONDS, load["connections"], method, body, token)  # pools opened
    spread: list[int] = []

    def sample() -> None:
        owners = Counter(
            seen["pid"]
            for port, seen in server_connections(urlsplit(url).port).items()
            if port not in ignore_ports and seen["pid"] is not None
        )
        spread.extend(sorted(owners.values(), reverse=True))

    halfway = threading.Timer(load["seconds"] / 2, sample)
    halfway.start()
    cpu_before = tree_cpu_seconds(server_pid)
    try:
        result = wrk(url, load["seconds"], load["connections"], method, body, token)
    finally:
        halfway.cancel()
    cpu = tree_cpu_seconds(server_pid) - cpu_before
    halfway.join()
    result["server_cpu_ms_per_request"] = round(cpu * 1000 / max(result["requests"], 1), 3)
    result["connections_per_process"] = spread
    print(
        f"  {name:<12} {result['rps']:>8.1f} req/s  p99 {result['latency_us']['p99'] / 1000:7.1f}"
        f" ms  errors {result['error_count']}"
        f"  server CPU {result['server_cpu_ms_per_request']:.3f} ms/request"
        f"  connections per process {spread}"
    )
    return result


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench.api needs wrk: apt-get install wrk (make bench installs it)")
    seconds = knob("API_SECONDS", 10)
    connections = knob("API_CONNECTIONS", 64)
    quiet = wait_for_quiet_machine()
    with private_config() as config:
        # Said explicitly to both servers: the bare app must not run with other settings.
        gunicorn = {"API_WORKERS": str(config.api_workers), "API_THREADS": str(config.api_threads)}
        print(
            f"api: wrk, {connections} connections, {seconds} s each, service vs bare Falcon,"
            f" {config.api_workers} processes x {config.api_threads} threads each"
        )
        runs = measure_both(config, gunicorn, seconds, connections)
    report(config, runs, seconds, connections, quiet)


def other_users(base: str, count: int) -> list[str]:
    """The tokens of ``count`` more users (registered here)."""
    tokens = []
    for _ in range(count):
        client = Client(base)
        tokens.append(client.token)
        client.close()
    return tokens


def measure_both(config, gunicorn: dict[str, str], seconds: int, connections: int) -> dict:
    submitters = knob("API_SUBMITTERS", 16)
    bare_env = process_env(config, config.jwt_secret, **gunicorn)
    with (
        Service(config, worker=False, **gunicorn) as service,
        BareGunicorn("bench.bare_app:app", bare_env) as bare,
    ):
        client = Client(service.base)
        task_id = client.submit()
        token = client.token
        client.close()
        tokens = ",".join([token, *other_users(service.base, submitters - 1)])
        load = {"seconds": seconds, "connections": connections}
        status, submit = f"/status/{task_id}", "/task"
        api, bare_api = service.api.pid, bare.popen.pid
        runs = {
            "bare_get": measure("bare GET", bare_api, bare.base + status, "GET", "", "", **load),
            "status": measure("GET /status", api, service.base + status, "GET", "", token, **load),
            "bare_post": measure(
                "bare POST", bare_api, bare.base + submit, "POST", TASK_BODY, tokens, **load
            ),
            "submit": measure(
                "POST /task", api, service.base + submit, "POST", TASK_BODY, tokens, **load
            ),
        }
    return runs


def report(config, runs: dict, seconds: int, connections: int, quiet: dict) -> None:
    def p99_ms(run: str) -> float:
        return runs[run]["latency_us"]["p99"] / 1000

    comparisons = [
        comparison(
            "GET /status req/s, service / bare",
            runs["status"]["rps"],
            runs["bare_get"]["rps"],
            ">=",
            TARGET_STATUS_RATIO,
        ),
        comparison("GET /status p99 ms, service / bare", p99_ms("status"), p99_ms("bare_get")),
        comparison(
            "POST /task req/s, service / bare",
            runs["submit"]["rps"],
            runs["bare_post"]["rps"],
            ">=",
            TARGET_SUBMIT_RATIO,
        ),
        comparison("POST /task p99 ms, service / bare", p99_ms("submit"), p99_ms("bare_post")),
    ]
    errors = sum(run["error_count"] for run in runs.values())
    no_errors = {
        "what": "errors (connect, read, write, timeout, non-2xx)",
        "service": runs["status"]["error_count"] + runs["submit"]["error_count"],
        "baseline": runs["bare_get"]["error_count"] + runs["bare_post"]["error_count"],
        "ratio": None,
        "target": "0",
        "met": errors == 0,
    }
    comparisons.append(no_errors)
    print_comparisons(comparisons)
    write_results(
        "api",
        {
            "settings": {
                "seconds": seconds,
                "connections": connections,
                "wrk_threads": WRK_THREADS,
                "api_workers": config.api_workers,
                "api_threads": config.api_threads,
                "db_pool_size": config.db_pool_size,
                "submitters": knob("API_SUBMITTERS", 16),
            },
            "quiet": quiet,
            "figures": runs,
            "comparisons": comparisons,
        },
    )


if __name__ == "__main__":
    main()
