"""200 waiters: `GET /status` under wrk while 200 other clients each hold a `GET
/result/{id}?wait=` on a task of their own, against the same wrk run with no one waiting.

No worker runs, so the waiters' tasks stay queued and every wait lasts its full length. A
waiting request holds one of the API's threads (gunicorn gthread): the figure says whether
`API_THREADS` leaves room for the short requests beside them. One service, measured side by
side: without waiters, with, without, with. In each round with waiters, the 200 waiters
connect and send their requests; the measurement starts once every one is held, i.e. accepted
by an API process that has read its request (`ss`: the connection has an owner and nothing
unread), and counts them again when it ends. Their waits are long enough to outlast it; each
must then end with a 202 (still queued) and no error. A waiter still queued unread after its
wait should have ended (too few threads) is released by closing its socket, and the rounds stop
there: the API still owes those requests their wait. Beside wrk, a probe opens a new connection
for a `GET /status` five times a second: wrk does not count a request never answered as an
error, and a probe lands on either API process.

wrk as in bench/api.py. Knobs: BENCH_WAITERS (200), BENCH_WAITERS_ROUNDS (2),
BENCH_API_SECONDS (10) per measurement, BENCH_API_CONNECTIONS (64), BENCH_WAITERS_HOLD_SECONDS
(the wait each waiter asks for; 20 s beyond a measurement by default). API_THREADS and
API_WORKERS are the service's own settings, from the environment.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import statistics
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

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
    server_connections,
    wait_for_quiet_machine,
    write_results,
)

TARGET_RATIO = 0.5
MAX_WAIT_SECONDS = 120
PROBE_EVERY_SECONDS = 0.2
PROBE_TIMEOUT_SECONDS = 5  # wrk's --timeout
# How long the waiters get to connect and be read before the measurement starts regardless.
HOLD_WITHIN_SECONDS = 15


class Waiter(threading.Thread):
    """One client holding `GET /result/{id}?wait=` on its own connection."""

    def __init__(self, address: tuple[str, int], token: str, task_id: str, hold: float):
        super().__init__(daemon=True)
        self._address = address
        self._token = token
        self.task_id = task_id
        self._hold = hold
        self.local_port: int | None = None
        self.sent = threading.Event()
        self.started_at = 0.0
        self.answered_at: float | None = None
        self.status: int | None = None
        self.body = None
        self.error: str | None = None
        self.released = False
        self._connection: http.client.HTTPConnection | None = None

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            connection = http.client.HTTPConnection(*self._address, timeout=self._hold + 60)
            self._connection = connection
            connection.connect()
            self.local_port = connection.sock.getsockname()[1]
            connection.request(
                "GET",
                f"/result/{self.task_id}?wait={self._hold:g}",
                headers={"Authorization": f"Bearer {self._token}"},
            )
            self.sent.set()
            response = connection.getresponse()
            data = response.read()
            self.status = response.status
            self.body = json.loads(data) if data else None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if not self.released:
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.answered_at = time.monotonic()
            self.sent.set()
            if self._connection is not None:
                self._connection.close()

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def release(self) -> None:
        """Close the connection under the blocked read (a shutdown wakes it; a close may not)."""
        self.released = True
        sock = self._connection.sock if self._connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def problem(self) -> str | None:
        """What went wrong, if anything: a wait ends in a 202 with the task still queued."""
        if self.released:
            return None
        if self.error is not None:
            return self.error
        if self.status != 202 or not isinstance(self.body, dict):
            return f"answered {self.status}: {self.body}"
        if self.body.get("status") != "queued" or self.body.get("task_id") != self.task_id:
            return f"answered 202 with {self.body}"
        return None


class Probe(threading.Thread):
    """Another client beside wrk: `GET /status` on a new connection every PROBE_EVERY seconds.

    wrk counts no error for a request that is never answered (its timeouts count only answers
    that came late), so connections stuck behind an API process whose threads are all held
    would go unseen; a new connection lands on either process, and a probe that gets no answer
    within its timeout is an error.
    """

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self._address = (parts.hostname, parts.port)
        self._path = parts.path
        self._token = token
        self._stopped = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self._stopped.is_set():
            began = time.perf_counter()
            connection = http.client.HTTPConnection(*self._address, timeout=PROBE_TIMEOUT_SECONDS)
            try:
                connection.request(
                    "GET", self._path, headers={"Authorization": f"Bearer {self._token}"}
                )
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.latencies.append(time.perf_counter() - began)
                else:
                    self.failures.append(f"answered {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                connection.close()
            self._stopped.wait(PROBE_EVERY_SECONDS)

    def stop(self) -> dict:
        self._stopped.set()
        self.join(PROBE_TIMEOUT_SECONDS + 5)
        return {
            "answered": len(self.latencies),
            "p50_ms": ms(percentile(self.latencies, 50)),
            "max_ms": ms(max(self.latencies, default=0.0)),
            "failed": len(self.failures),
            "failure_examples": sorted(set(self.failures))[:3],
        }


def held(waiters: list[Waiter], port: int) -> tuple[int, Counter, int]:
    """How many waiters the API holds (accepted, request read, not answered), how many by
    process, and how many more it accepted but has not read (queued for a thread).
    """
    connections = server_connections(port)
    by_process: Counter = Counter()
    unread = 0
    for waiter in waiters:
        seen = connections.get(waiter.local_port)
        if waiter.answered or seen is None or seen["pid"] is None:
            continue
        if seen["unread"] == 0:
            by_process[seen["pid"]] += 1
        else:
            unread += 1
    return sum(by_process.values()), by_process, unread


def with_waiters(service: Service, token: str, task_ids: list[str], hold: float, measure_status):
    """One measurement while len(task_ids) waiters are held; returns (wrk's run, what the
    waiters did, whether every waiter ended by itself).
    """
    parts = urlsplit(service.base)
    port = parts.port
    waiters = [Waiter((parts.hostname, port), token, task_id, hold) for task_id in task_ids]
    began = time.monotonic()
    for waiter in waiters:
        waiter.start()
    deadline = began + HOLD_WITHIN_SECONDS
    for waiter in waiters:
        waiter.sent.wait(max(deadline - time.monotonic(), 0))
    while (count := held(waiters, port))[0] < len(waiters) and time.monotonic() < deadline:
        time.sleep(0.2)
    held_before, by_process, unread = count
    seconds_to_hold = time.monotonic() - began
    print(
        f"  {held_before} of {len(waiters)} waiters held after {seconds_to_hold:.1f} s"
        f" (per API process: {sorted(by_process.values(), reverse=True)}),"
        f" {unread} more accepted but queued unread"
    )
    run = measure_status("with waiters", frozenset(waiter.local_port for waiter in waiters))
    measured_until = time.monotonic()
    held_after = held(waiters, port)[0]
    answered_early = sum(
        1 for waiter in waiters if waiter.answered and waiter.answered_at < measured_until
    )
    # Each wait ends `hold` seconds after its request; some slack for the answers to come.
    for waiter in waiters:
        waiter.join(max(waiter.started_at + hold + 10 - time.monotonic(), 0))
    unanswered = [waiter for waiter in waiters if waiter.is_alive()]
    for waiter in unanswered:
        waiter.release()
    for waiter in unanswered:
        waiter.join(10)
    problems = [problem for waiter in waiters if (problem := waiter.problem()) is not None]
    outcome = {
        "waiters": len(waiters),
        "held_before": held_before,
        "held_after": held_after,
        "seconds_to_hold": round(seconds_to_hold, 2),
        "held_per_api_process": sorted(by_process.values(), reverse=True),
        "accepted_unread": unread,
        "answered_during_measurement": answered_early,
        "answered_202_queued": sum(
            1 for waiter in waiters if not waiter.released and waiter.problem() is None
        ),
        "released_unanswered": len(unanswered),
        "errors": len(problems),
        "error_examples": sorted(set(problems))[:5],
    }
    print(
        f"  waiters: held {held_before} before and {held_after} after the measurement,"
        f" {outcome['answered_202_queued']} answered 202, {len(unanswered)} released"
        f" unanswered, {len(problems)} errors"
    )
    return run, outcome, not unanswered


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench.waiters needs wrk: apt-get install wrk (make bench installs it)")
    count = knob("WAITERS", 200)
    rounds = knob("WAITERS_ROUNDS", 2)
    seconds = knob("API_SECONDS", 10)
    connections = knob("API_CONNECTIONS", 64)
    hold = knob("WAITERS_HOLD_SECONDS", HOLD_WITHIN_SECONDS + WARMUP_SECONDS + seconds + 5)
    if hold > MAX_WAIT_SECONDS:
        raise SystemExit(f"BENCH_WAITERS_HOLD_SECONDS must be at most {MAX_WAIT_SECONDS}")
    quiet = wait_for_quiet_machine()
    runs: dict[str, list] = {"without": [], "with": [], "waiters": []}
    with private_config() as config:
        gunicorn = {"API_WORKERS": str(config.api_workers), "API_THREADS": str(config.api_threads)}
        print(
            f"waiters: GET /status under wrk ({connections} connections, {seconds} s) with"
            f" {count} clients holding GET /result?wait={hold:g} and without;"
            f" {config.api_workers} API processes x {config.api_threads} threads"
        )
        with Service(
            config, worker=False, MAX_WAIT_SECONDS=str(MAX_WAIT_SECONDS), **gunicorn
        ) as service:
            client = Client(service.base)
            token = client.token
            status_task = client.submit()
            task_ids = [client.submit() for _ in range(count)]
            client.close()
            url = f"{service.base}/status/{status_task}"

            def measure_status(name: str, waiter_ports: frozenset[int] = frozenset()) -> dict:
                load = {"seconds": seconds, "connections": connections}
                probe = Probe(url, token)
                probe.start()
                try:
                    run = measure(
                        name, service.api.pid, url, "GET", "", token, waiter_ports, **load
                    )
                finally:
                    run_probe = probe.stop()
                run["probe"] = run_probe
                print(
                    f"  {'':<12} probes on new connections: {run_probe['answered']} answered"
                    f" (p50 {run_probe['p50_ms']} ms, max {run_probe['max_ms']} ms),"
                    f" {run_probe['failed']} failed"
                )
                return run

            for _ in range(rounds):
                runs["without"].append(measure_status("without"))
                run, waited, drained = with_waiters(service, token, task_ids, hold, measure_status)
                runs["with"].append(run)
                runs["waiters"].append(waited)
                if not drained:
                    print("  the API still owes released waiters their wait: no further rounds")
                    break
            api_log = service.api.log()

    report(config, runs, api_log, quiet, count, hold, seconds, connections)


def log_problems(log: str) -> dict:
    """Server errors in the API's log: 5xx answers (gunicorn's access log) and tracebacks."""
    fifth = sum(1 for line in log.splitlines() if '" 5' in line and "HTTP/1." in line)
    return {"answers_5xx": fifth, "tracebacks": log.count("Traceback (most recent call last)")}


def report(config, runs, api_log, quiet, count, hold, seconds, connections) -> None:
    def mean(key: str, figure) -> float:
        return statistics.mean(figure(run) for run in runs[key])

    def rps(run: dict) -> float:
        return run["rps"]

    def p99_ms(run: dict) -> float:
        return run["latency_us"]["p99"] / 1000

    def errors(key: str) -> int:
        return sum(run["error_count"] + run["probe"]["failed"] for run in runs[key])

    waiter_errors = sum(waited["errors"] for waited in runs["waiters"])
    early = sum(waited["answered_during_measurement"] for waited in runs["waiters"])
    held_least = min(min(waited["held_before"], waited["held_after"]) for waited in runs["waiters"])
    in_log = log_problems(api_log)
    comparisons = [
        comparison(
            f"GET /status req/s, {count} waiters / none",
            mean("with", rps),
            mean("without", rps),
            ">=",
            TARGET_RATIO,
        ),
        comparison(
            f"GET /status p99 ms, {count} waiters / none",
            mean("with", p99_ms),
            mean("without", p99_ms),
        ),
        comparison("waiters held through each measurement", held_least - early, count, ">=", 1.0),
        {
            "what": "errors (wrk, probes, waiters), with / none",
            "service": errors("with") + waiter_errors,
            "baseline": errors("without"),
            "ratio": None,
            "target": "0",
            "met": errors("with") + waiter_errors + errors("without") == 0,
        },
    ]
    print(f"  API log: {in_log}")
    print_comparisons(comparisons)
    write_results(
        "waiters",
        {
            "settings": {
                "waiters": count,
                "hold_seconds": hold,
                "seconds": seconds,
                "connections": connections,
                "api_workers": config.api_workers,
                "api_threads": config.api_threads,
                "max_wait_seconds": MAX_WAIT_SECONDS,
            },
            "quiet": quiet,
            "figures": runs,
            "api_log": in_log,
            "comparisons": comparisons,
        },
    )


if __name__ == "__main__":
    main()
