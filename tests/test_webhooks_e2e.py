"""Webhooks end to end: `taskservice api` and `taskservice worker` as processes, a receiver of
the test's own on loopback (allowed by WEBHOOK_ALLOWED_HOSTS), signatures checked with the
Standard Webhooks library, a retry after a 500, and a delivery that outlives a killed worker;
the attempts in the metrics of the worker, and of `taskservice webhooks` sending alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from tests.conftest import RUN_ID
from tests.fault_stack import status_of
from tests.metrics_text import promtool_check, value
from tests.service import ROOT, ApiUser, free_port, own_database_and_queues


@pytest.fixture(scope="module")
def webhook_config(base_config):
    """A database and queue of the module's own: its workers deliver webhooks, and dispatchers
    deliver every due one in their database, so they must see only these tests' tasks."""
    base = replace(base_config, queue_name=f"{base_config.queue_name}.webhooks-e2e")
    with own_database_and_queues(base, f"taskservice_test_{RUN_ID}_webhooks_e2e") as config:
        yield config


class Receiver:
    """Answers each POST with the next status of ``statuses`` (the last one repeats); while
    ``hold`` is clear, a request waits for it first (the sender sees no answer)."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.requests: list[tuple[dict, bytes]] = []
        self.arrived = threading.Event()
        self.hold = threading.Event()
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                receiver.arrived.set()
                receiver.hold.wait(60)
                statuses = receiver.statuses
                status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}/hooks/tasks"
        self.allowed = f"127.0.0.1:{port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request):
    server = Receiver(request.param)
    yield server
    server.close()


def callback_of(user: ApiUser, task_id: str, state: str, within: float = 60) -> dict:
    deadline = time.monotonic() + within
    while True:
        callback = status_of(user, task_id)["callback"]
        if callback["state"] == state:
            return callback
        assert time.monotonic() < deadline, f"callback still {callback}"
        time.sleep(0.2)


def secret_of(user: ApiUser) -> str:
    return requests.get(f"{user.base}/me", headers=user.headers, timeout=10).json()[
        "webhook_secret"
    ]


def attempts(metrics_url: str) -> dict[tuple[str, str], float]:
    """(outcome, status class) -> attempts counted, as the process serves them; promtool checks
    the whole text."""
    text = requests.get(metrics_url, timeout=10).text
    promtool_check(text)
    outcomes = [
        ("delivered", "2xx"),
        ("will_retry", "4xx"),
        ("will_retry", "5xx"),
        ("gave_up", "5xx"),
        ("will_retry", "none"),
    ]
    counted = {
        (outcome, status_class): value(
            text, "taskservice_webhook_attempts_total", outcome=outcome, status_class=status_class
        )
        for outcome, status_class in outcomes
    }
    counted["timed"] = value(text, "taskservice_webhook_attempt_seconds_count")
    return counted


@pytest.mark.parametrize("receiver", [[500, 200]], indirect=True)
def test_a_result_is_delivered_signed_after_a_retry(stack_factory, webhook_config, receiver):
    stack = stack_factory(
        webhook_config,
        WEBHOOK_CONCURRENCY="2",
        WEBHOOK_ALLOWED_HOSTS=receiver.allowed,
        WEBHOOK_RETRY_SECONDS="0.5",
    )
    stack.api()
    metrics_port = free_port()
    stack.worker(WORKER_METRICS_HOST="127.0.0.1", WORKER_METRICS_PORT=str(metrics_port))
    user = ApiUser(stack.base)

    refused = requests.post(
        f"{stack.base}/task",
        json={"code": "print(1)", "callback_url": "http://169.254.169.254/latest/"},
        headers=user.headers,
        timeout=10,
    )
    assert refused.status_code == 400, refused.text

    task_id = user.submit("print(6*7)", callback_url=receiver.url)
    assert user.wait(task_id)["status"] == "succeeded"
    assert callback_of(user, task_id, "delivered") == {
        "state": "delivered",
        "attempts": 2,
        "last_status_code": 200,
    }
    (first_headers, first_body), (headers, body) = receiver.requests
    payload = Webhook(secret_of(user)).verify(body, headers)
    assert payload["task_id"] == task_id and payload["stdout"] == "42\n"
    assert headers["webhook-id"] == first_headers["webhook-id"] and body == first_body
    result = requests.get(f"{stack.base}/result/{task_id}", headers=user.headers, timeout=10)
    assert result.json()["callback"]["state"] == "delivered"
    assert attempts(f"http://127.0.0.1:{metrics_port}/metrics") == {
        ("delivered", "2xx"): 1,
        ("will_retry", "4xx"): 0,
        ("will_retry", "5xx"): 1,
        ("gave_up", "5xx"): 0,
        ("will_retry", "none"): 0,
        "timed": 2,
    }


@pytest.mark.parametrize("receiver", [[404, 503]], indirect=True)
def test_the_webhooks_command_counts_its_attempts_on_its_metrics_port(
    stack_factory, webhook_config, receiver
):
    """`taskservice webhooks` sends alone (the worker none) and serves its metrics as a worker
    does: a 404, then 503s until it gives up."""
    stack = stack_factory(
        webhook_config,
        WEBHOOK_ALLOWED_HOSTS=receiver.allowed,
        WEBHOOK_RETRY_SECONDS="0.2",
        WEBHOOK_MAX_ATTEMPTS="3",
    )
    stack.api()
    # WEBHOOK_CONCURRENCY=0: the tests' setting. PROMETHEUS_MULTIPROC_DIR empty, as Compose's
    # `${PROMETHEUS_MULTIPROC_DIR:-}` gives it: prometheus_client would take it for a directory.
    worker = stack.worker(PROMETHEUS_MULTIPROC_DIR="")
    metrics_port = free_port()
    webhooks = stack.webhooks(
        PROMETHEUS_MULTIPROC_DIR="",
        WEBHOOK_CONCURRENCY="1",
        WORKER_METRICS_HOST="127.0.0.1",
        WORKER_METRICS_PORT=str(metrics_port),
    )
    user = ApiUser(stack.base)
    task_id = user.submit("print(1)", callback_url=receiver.url)
    assert user.wait(task_id)["status"] == "succeeded"
    assert callback_of(user, task_id, "failed")["attempts"] == 3
    assert webhooks.alive(), webhooks.log()
    assert attempts(f"http://127.0.0.1:{metrics_port}/metrics") == {
        ("delivered", "2xx"): 0,
        ("will_retry", "4xx"): 1,
        ("will_retry", "5xx"): 1,
        ("gave_up", "5xx"): 1,
        ("will_retry", "none"): 0,
        "timed": 3,
    }
    # Each serves its own registry and keeps no files, in its working directory or elsewhere.
    for process in (worker, webhooks):
        assert list(ROOT.glob(f"*_{process.pid}.db")) == [], process.command


@pytest.mark.parametrize("receiver", [[200]], indirect=True)
def test_a_delivery_in_flight_when_the_worker_dies_is_made_after_a_restart(
    stack_factory, webhook_config, receiver
):
    stack = stack_factory(
        webhook_config,
        WEBHOOK_CONCURRENCY="2",
        WEBHOOK_ALLOWED_HOSTS=receiver.allowed,
        WEBHOOK_TIMEOUT_SECONDS="30",
    )
    stack.api()
    worker = stack.worker()
    user = ApiUser(stack.base)
    receiver.hold.clear()  # the first attempt gets no answer while the worker lives

    task_id = user.submit("print('hi')", callback_url=receiver.url)
    assert user.wait(task_id)["status"] == "succeeded"
    assert receiver.arrived.wait(30), "no delivery attempt arrived"
    worker.kill()  # SIGKILL, mid-attempt: nothing of it was recorded
    assert status_of(user, task_id)["callback"] == {
        "state": "pending",
        "attempts": 0,
        "last_status_code": None,
    }
    receiver.hold.set()

    stack.worker()
    assert callback_of(user, task_id, "delivered") == {
        "state": "delivered",
        "attempts": 1,
        "last_status_code": 200,
    }
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        assert Webhook(secret_of(user)).verify(body, headers)["task_id"] == task_id
