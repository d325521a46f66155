"""API: CPU per request of `GET /status/{id}` (a task Redis knows) and `POST /task`, in one
thread, in this process, against the bare Falcon app (bench/bare_app.py).

The app is the real one (``get_app``: PostgreSQL, RabbitMQ and Redis, a database and queue of
the run's own) called as a WSGI application in a loop, without gunicorn, so what is measured is
the app's own work and its clients' (the publisher's I/O thread included: the CPU is the
process's), with none of the noise of wrk, gunicorn's threads and a shared machine's
scheduling. `bench/api.py` measures the same endpoints under load.

Knobs: BENCH_API_CPU_REQUESTS (3000) per measurement, BENCH_API_CPU_ROUNDS (3).
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import replace

from falcon import testing

import bench.bare_app as bare
from bench.api import TASK_BODY
from bench.common import knob, private_config, write_results

PASSWORD = "correct horse battery"


def cpu_ms_per_request(app, environ: dict, body: bytes, count: int) -> float:
    """The process's CPU per call of ``app`` on a copy of ``environ``, in ms."""
    answers: list[str] = []

    def start_response(status, headers, exc_info=None):
        answers.append(status)

    def once() -> None:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)  # read by each call
        for _ in app(env, start_response):
            pass

    once()
    answers.clear()
    started = time.process_time()
    for _ in range(count):
        once()
    spent = time.process_time() - started
    failed = [status for status in answers if not status.startswith("2")]
    if failed:
        raise RuntimeError(f"{len(failed)} answers were not 2xx, e.g. {failed[0]}")
    return round(spent * 1000 / count, 4)


def main() -> None:
    from taskservice.app import get_app  # after the environment is settled (prometheus)

    count = knob("API_CPU_REQUESTS", 3000)
    rounds = knob("API_CPU_ROUNDS", 3)
    with private_config() as config:
        # The benchmarks' users submit far more than the default quota and limits allow.
        config = replace(
            config,
            user_max_active_tasks=1_000_000,
            rate_limit_auth="1000000/minute",
            rate_limit_submit="1000000/minute",
            rate_limit_read="1000000/minute",
            prometheus_multiproc_dir="",
            bcrypt_rounds=4,
        )
        app = get_app(config)
        client = testing.TestClient(app)
        account = {"username": f"cpu{uuid.uuid4().hex[:10]}", "password": PASSWORD}
        assert client.simulate_post("/register", json=account).status_code == 201
        token = client.simulate_post("/login", json=account).json["token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        task_id = client.simulate_post("/task", json={"code": "print(1)"}, headers=headers).json[
            "task_id"
        ]
        status = testing.create_environ(path=f"/status/{task_id}", headers=headers)
        submit = testing.create_environ(
            method="POST", path="/task", headers=headers, body=TASK_BODY
        )
        figures: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, target, environ, body in (
                ("status", app, status, b""),
                ("bare_get", bare.app, status, b""),
                ("submit", app, submit, TASK_BODY.encode()),
                ("bare_post", bare.app, submit, TASK_BODY.encode()),
            ):
                figures.setdefault(name, []).append(
                    cpu_ms_per_request(target, environ, body, count)
                )
    for name, values in figures.items():
        print(f"  {name:<10} CPU per request, ms: {', '.join(f'{v:.3f}' for v in values)}")
    write_results(
        "api_cpu",
        {"settings": {"requests": count, "rounds": rounds}, **figures},
    )


if __name__ == "__main__":
    main()
