"""200 event streams: `GET /status` under wrk while 200 clients each follow a running task's live
output (`GET /task/{id}/events`), against the same wrk run while the same tasks run unwatched.

A worker runs `WORKER_CONCURRENCY` tasks (3 by default) that print the time every
BENCH_EVENTS_INTERVAL seconds (0.2); the 200 followers are spread over them, so the API sends
about 200 / 0.2 = 1,000 output events a second besides its keep-alives. Each round: the tasks
start, wrk measures without followers, the followers connect (each counts once its first line
has come), they follow for 5 s alone, wrk measures with them, and the followers hang up. An
event stream holds one of the API's threads, from the same budget as `?wait=` (seven eighths of
`API_THREADS` per process): the figure says whether the threads left serve the short requests.
The followers also measure how long a line takes from the program's `print` to the client (the
container shares the host's clock), before wrk and under it, and count lines out of order (lost
or repeated). Beside wrk, the same probe as bench/waiters.py opens a new connection for a
`GET /status` five times a second.

Knobs: BENCH_EVENTS (200 streams), BENCH_EVENTS_ROUNDS (2), BENCH_EVENTS_INTERVAL (0.2 s),
BENCH_API_SECONDS (10) per measurement, BENCH_API_CONNECTIONS (64).
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time

from bench.api import WARMUP_SECONDS, measure
from bench.common import (
    Client,
    Service,
    comparison,
    knob,
    ms,
    percentile,
    print_comparisons,
    private_config,
    wait_for_quiet_machine,
    write_results,
)
from bench.waiters import Probe, log_problems
from tests.sse import EventSource

TARGET_RATIO = 0.5
CONNECT_WITHIN_SECONDS = 20
# With the followers connected and before wrk starts: the delay of live output on its own.
QUIET_SECONDS = 5
PROGRAM = """\
import time
end = time.time() + {seconds}
while time.time() < end:
    print(repr(time.time()), flush=True)
    time.sleep({interval})
"""


class Follower(threading.Thread):
    """One client following one task's events on its own connection."""

    def __init__(self, base: str, token: str, task_id: str):
        super().__init__(daemon=True)
        self._base = base
        self._headers = {"Authorization": f"Bearer {token}"}
        self.task_id = task_id
        self.following = threading.Event()  # connected, and the first line has come
        self.delays: list[tuple[float, float]] = []  # (arrival, monotonic; print -> arrival)
        self.lines = 0
        self.out_of_order = 0
        self.error: str | None = None
        self.released = False
        self.ended = False
        self._source: EventSource | None = None

    def run(self) -> None:
        last = 0.0
        pending = ""  # a line's start: chunks are the program's writes, not its lines
        try:
            self._source = EventSource(self._base, f"/task/{self.task_id}/events", self._headers)
            if self._source.status != 200:
                self.error = f"answered {self._source.status}"
                return
            connected = time.time()
            for event in self._source.events():
                arrived, at = time.time(), time.monotonic()
                if event.name != "stdout":
                    continue
                *lines, pending = (pending + event.data["data"]).split("\n")
                for line in lines:
                    printed = float(line)
                    self.lines += 1
                    if printed <= last:
                        self.out_of_order += 1  # a line repeated, or out of order
                    last = printed
                    # Lines printed before the client came are a replay, not live.
                    if printed >= connected:
                        self.delays.append((at, arrived - printed))
                self.following.set()
            self.ended = True
        except Exception as exc:  # a thread's failure is counted, not raised
            if not self.released:
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.following.set()

    def release(self) -> None:
        self.released = True
        if self._source is not None:
            self._source.close()


def start_tasks(client: Client, count: int, seconds: float, interval: float) -> list[str]:
    code = PROGRAM.format(seconds=seconds, interval=interval)
    task_ids = [client.submit(code, timeout=int(seconds) + 5) for _ in range(count)]
    deadline = time.monotonic() + 60
    while any(client.status(task)["status"] != "running" for task in task_ids):
        if time.monotonic() > deadline:
            raise RuntimeError("the tasks did not start within 60 s")
        time.sleep(0.2)
    return task_ids


def with_followers(base: str, token: str, tasks: list[str], count: int, measure_status):
    """One measurement while ``count`` clients follow the tasks; (wrk's run, the followers')."""
    followers = [Follower(base, token, tasks[n % len(tasks)]) for n in range(count)]
    began = time.monotonic()
    for follower in followers:
        follower.start()
    deadline = began + CONNECT_WITHIN_SECONDS
    for follower in followers:
        follower.following.wait(max(deadline - time.monotonic(), 0))
    following = sum(1 for f in followers if f.lines and f.error is None)
    took = time.monotonic() - began
    print(f"  {following} of {count} followers have output after {took:.1f} s")
    time.sleep(QUIET_SECONDS)
    quiet_until = time.monotonic()
    lines_before = sum(f.lines for f in followers)
    run = measure_status("with streams")
    still = sum(1 for f in followers if f.is_alive() and f.error is None)
    lines = sum(f.lines for f in followers) - lines_before
    for follower in followers:
        follower.release()
    for follower in followers:
        follower.join(10)
    quiet = [delay for f in followers for at, delay in f.delays if at <= quiet_until]
    loaded = [delay for f in followers for at, delay in f.delays if at > quiet_until]
    outcome = {
        "streams": count,
        "following_before": following,
        "following_after": still,
        "lines_during_measurement": lines,
        "lines_per_second": round(lines / (run["duration_us"] / 1e6 + WARMUP_SECONDS), 1),
        "delay_p50_ms": ms(percentile(quiet, 50)),
        "delay_p99_ms": ms(percentile(quiet, 99)),
        "delay_max_ms": ms(max(quiet, default=0.0)),
        "delay_under_wrk_p50_ms": ms(percentile(loaded, 50)),
        "delay_under_wrk_p99_ms": ms(percentile(loaded, 99)),
        "out_of_order": sum(f.out_of_order for f in followers),
        "errors": sum(1 for f in followers if f.error),
        "error_examples": sorted({f.error for f in followers if f.error})[:5],
    }
    print(
        f"  followers: {following} before and {still} after the measurement,"
        f" {outcome['lines_per_second']} lines/s; print -> client p50 / p99:"
        f" {outcome['delay_p50_ms']} / {outcome['delay_p99_ms']} ms before wrk,"
        f" {outcome['delay_under_wrk_p50_ms']} / {outcome['delay_under_wrk_p99_ms']} ms under it,"
        f" {outcome['out_of_order']} out of order, {outcome['errors']} errors"
    )
    return run, outcome


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench.events needs wrk: apt-get install wrk (make bench installs it)")
    count = knob("EVENTS", 200)
    rounds = knob("EVENTS_ROUNDS", 2)
    interval = knob("EVENTS_INTERVAL", 0.2, float)
    seconds = knob("API_SECONDS", 10)
    connections = knob("API_CONNECTIONS", 64)
    quiet = wait_for_quiet_machine()
    runs: dict[str, list] = {"without": [], "with": [], "followers": []}
    with private_config() as config:
        # Each task prints through both measurements and the followers' arrival.
        task_seconds = 2 * (WARMUP_SECONDS + seconds) + CONNECT_WITHIN_SECONDS + QUIET_SECONDS
        if task_seconds + 5 > config.task_timeout_max:
            raise SystemExit(f"TASK_TIMEOUT_MAX must be at least {task_seconds + 5} s")
        gunicorn = {"API_WORKERS": str(config.api_workers), "API_THREADS": str(config.api_threads)}
        print(
            f"events: GET /status under wrk ({connections} connections, {seconds} s) with"
            f" {count} clients following {config.worker_concurrency} tasks' output (a line every"
            f" {interval:g} s) and without; {config.api_workers} API processes x"
            f" {config.api_threads} threads"
        )
        with Service(config, worker=True, **gunicorn) as service:
            client = Client(service.base)
            token = client.token
            status_task = client.submit("print(1)")
            url = f"{service.base}/status/{status_task}"

            def measure_status(name: str) -> dict:
                probe = Probe(url, token)
                probe.start()
                load = {"seconds": seconds, "connections": connections}
                try:
                    run = measure(name, service.api.pid, url, "GET", "", token, **load)
                finally:
                    run_probe = probe.stop()
                run["probe"] = run_probe
                print(
                    f"  {'':<12} probes on new connections: {run['probe']['answered']} answered,"
                    f" {run['probe']['failed']} failed"
                )
                return run

            for _ in range(rounds):
                tasks = start_tasks(client, config.worker_concurrency, task_seconds, interval)
                client.close()
                runs["without"].append(measure_status("without"))
                run, outcome = with_followers(service.base, token, tasks, count, measure_status)
                runs["with"].append(run)
                runs["followers"].append(outcome)
                client = Client(service.base, token)
                for task in tasks:  # the next round's tasks must not queue behind these
                    client.wait_final(task, poll_seconds=1.0, within=task_seconds + 30)
            client.close()
            api_log = service.api.log()
    report(config, runs, api_log, quiet, count, interval, seconds, connections)


def report(config, runs, api_log, quiet, count, interval, seconds, connections) -> None:
    def mean(key: str, figure) -> float:
        return statistics.mean(figure(run) for run in runs[key])

    def errors(key: str) -> int:
        return sum(run["error_count"] + run["probe"]["failed"] for run in runs[key])

    followers = runs["followers"]
    follower_errors = sum(f["errors"] + f["out_of_order"] for f in followers)
    least = min(min(f["following_before"], f["following_after"]) for f in followers)
    in_log = log_problems(api_log)
    comparisons = [
        comparison(
            f"GET /status req/s, {count} event streams / none",
            mean("with", lambda run: run["rps"]),
            mean("without", lambda run: run["rps"]),
            ">=",
            TARGET_RATIO,
        ),
        comparison(
            f"GET /status p99 ms, {count} event streams / none",
            mean("with", lambda run: run["latency_us"]["p99"] / 1000),
            mean("without", lambda run: run["latency_us"]["p99"] / 1000),
        ),
        comparison("streams following through each measurement", least, count, ">=", 1.0),
        {
            "what": "live output before wrk, print -> client p50 ms",
            "service": max(f["delay_p50_ms"] for f in followers),
            "baseline": "-",
            "ratio": None,
            "target": "-",
            "met": None,
        },
        {
            "what": "live output before wrk, print -> client p99 ms",
            "service": max(f["delay_p99_ms"] for f in followers),
            "baseline": "-",
            "ratio": None,
            "target": "<= 100",
            "met": max(f["delay_p99_ms"] for f in followers) <= 100,
        },
        {
            "what": "errors (wrk, probes, streams), with / none",
            "service": errors("with") + follower_errors,
            "baseline": errors("without"),
            "ratio": None,
            "target": "0",
            "met": errors("with") + follower_errors + errors("without") == 0,
        },
    ]
    print(f"  API log: {in_log}")
    print_comparisons(comparisons)
    write_results(
        "events",
        {
            "settings": {
                "streams": count,
                "interval_seconds": interval,
                "seconds": seconds,
                "connections": connections,
                "api_workers": config.api_workers,
                "api_threads": config.api_threads,
                "worker_concurrency": config.worker_concurrency,
            },
            "quiet": quiet,
            "figures": runs,
            "api_log": in_log,
            "comparisons": comparisons,
        },
    )


if __name__ == "__main__":
    main()
