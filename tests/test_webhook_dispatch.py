"""Deliveries against the real database and a loopback receiver: made with the task's end,
claimed one holder at a time, retried with back-off, given up, and kept across a crash.

The module has a database of its own, where each test starts with no deliveries, so "the next
due delivery" is always the test's own.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import pytest
from prometheus_client import generate_latest
from standardwebhooks.webhooks import Webhook

from taskservice.metrics.webhooks import DispatcherMetrics
from taskservice.model import RunOutcome, TaskRequest, TaskStatus
from taskservice.services import WebhookSecrets
from taskservice.store.db import Database
from taskservice.store.delivery import ClaimResult, DeliveryStore
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.store.webhooks import WebhookStore
from taskservice.webhooks.dispatcher import Dispatcher
from tests.conftest import RUN_ID
from tests.metrics_text import promtool_check
from tests.service import own_database_and_queues


@pytest.fixture(scope="module")
def own_database(base_config):
    base = replace(base_config, queue_name=f"{base_config.queue_name}.webhook-dispatch")
    with own_database_and_queues(base, f"taskservice_test_{RUN_ID}_webhooks") as config:
        yield config


@pytest.fixture
def db(own_database):
    database = Database(own_database.database_url, size=4)
    with database.transaction() as cursor:
        cursor.execute("DELETE FROM webhook_deliveries")
    yield database
    database.close()


class Receiver:
    """A loopback server answering each POST with the next of ``statuses`` (the last repeats)."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status = (
                    receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.allowed = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request):
    server = Receiver(getattr(request, "param", [204]))
    yield server
    server.close()


def ended_task(db, clock, callback_url: str | None, end: str = "finish"):
    """A task of a new user, with ``callback_url``, ended the way ``end`` says."""
    user = UserStore(db).create(uuid.uuid4(), f"u{uuid.uuid4().hex[:10]}", "x", clock())
    tasks, delivery = TaskStore(db), DeliveryStore(db)
    request = TaskRequest("python", b"print(1)", b"", 5, 128, callback_url=callback_url)
    task, _ = tasks.create(uuid.uuid4(), user.id, request, clock())
    if end == "unqueued":
        assert tasks.fail_unqueued(task.id, "never queued", clock())
        return task
    result, _ = delivery.claim(task.id, uuid.uuid4(), clock(), 1, 10.0)
    assert result is ClaimResult.CLAIMED
    if end == "gave_up":  # the only attempt was used up: the next claim ends the task
        assert delivery.claim(task.id, uuid.uuid4(), clock(), 1, 10.0)[0] is ClaimResult.GAVE_UP
    else:
        done = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"1\n")
        assert delivery.finish(task.id, 1, done, clock())
    return task


def dispatcher(db, config, receiver, metrics=None, **settings) -> Dispatcher:
    config = replace(
        config,
        webhook_allowed_hosts=receiver.allowed,
        webhook_retry_seconds=settings.pop("retry", 0.3),
        **settings,
    )
    secrets = WebhookSecrets(UserStore(db))
    return Dispatcher(config, WebhookStore(db), secrets, metrics=metrics or DispatcherMetrics())


def attempts(metrics: DispatcherMetrics) -> dict[tuple[str, str], float]:
    """(outcome, status class) -> attempts counted, those above 0."""
    counted = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "taskservice_webhook_attempts_total" and sample.value:
                counted[sample.labels["outcome"], sample.labels["status_class"]] = sample.value
    return counted


def timed(metrics: DispatcherMetrics) -> float:
    return metrics.registry.get_sample_value("taskservice_webhook_attempt_seconds_count")


@pytest.mark.parametrize("end", ["finish", "unqueued", "gave_up"])
def test_every_way_a_task_ends_makes_its_delivery(db, clock, end):
    with_callback = ended_task(db, clock, "http://127.0.0.1:9/hook", end)
    without = ended_task(db, clock, None, end)
    store = WebhookStore(db)
    assert store.state(with_callback.id) == {
        "state": "pending",
        "attempts": 0,
        "last_status_code": None,
    }
    assert store.state(without.id) is None


def test_a_task_that_has_not_ended_has_no_delivery(db, clock):
    user = UserStore(db).create(uuid.uuid4(), f"u{uuid.uuid4().hex[:10]}", "x", clock())
    request = TaskRequest("python", b"1", b"", 5, 128, callback_url="http://127.0.0.1:9/")
    task, _ = TaskStore(db).create(uuid.uuid4(), user.id, request, clock())
    DeliveryStore(db).claim(task.id, uuid.uuid4(), clock(), 3, 10.0)  # queued -> running
    assert WebhookStore(db).state(task.id) is None


def test_a_delivery_is_signed_with_the_owners_secret(db, own_database, clock, receiver):
    task = ended_task(db, clock, receiver.url + "?from=test")
    assert dispatcher(db, own_database, receiver).deliver_one()
    [(headers, body)] = receiver.requests
    secret = WebhookSecrets(UserStore(db)).current(task.user_id)  # made by the delivery
    payload = Webhook(secret).verify(body, headers)
    assert payload["task_id"] == str(task.id) and payload["stdout"] == "1\n"
    assert payload["status"] == "succeeded" and "callback" not in payload
    assert headers["webhook-id"] == f"msg_{task.id.hex}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert WebhookStore(db).state(task.id) == {
        "state": "delivered",
        "attempts": 1,
        "last_status_code": 204,
    }
    assert not dispatcher(db, own_database, receiver).deliver_one()  # nothing due any more


@pytest.mark.parametrize("receiver", [[500, 200]], indirect=True)
def test_a_failed_attempt_is_retried_after_its_pause(db, own_database, clock, receiver):
    task = ended_task(db, clock, receiver.url)
    metrics = DispatcherMetrics()
    dispatch = dispatcher(db, own_database, receiver, metrics, retry=1.0)
    assert dispatch.deliver_one()
    assert attempts(metrics) == {("will_retry", "5xx"): 1}
    assert WebhookStore(db).state(task.id) == {
        "state": "pending",
        "attempts": 1,
        "last_status_code": 500,
    }
    assert not dispatch.deliver_one()  # not due during its pause (0.9 to 1.1 s)
    time.sleep(1.2)
    assert dispatch.deliver_one()
    assert WebhookStore(db).state(task.id) == {
        "state": "delivered",
        "attempts": 2,
        "last_status_code": 200,
    }
    first, second = receiver.requests
    assert first[0]["webhook-id"] == second[0]["webhook-id"] and first[1] == second[1]
    assert attempts(metrics) == {("will_retry", "5xx"): 1, ("delivered", "2xx"): 1}
    assert timed(metrics) == 2
    promtool_check(generate_latest(metrics.registry).decode())


@pytest.mark.parametrize("receiver", [[503]], indirect=True)
def test_a_delivery_fails_for_good_after_its_last_attempt(db, own_database, clock, receiver):
    task = ended_task(db, clock, receiver.url)
    metrics = DispatcherMetrics()
    dispatch = dispatcher(db, own_database, receiver, metrics, retry=0.05, webhook_max_attempts=3)
    deadline = time.monotonic() + 20
    while WebhookStore(db).state(task.id)["state"] == "pending":
        assert time.monotonic() < deadline
        dispatch.deliver_one() or time.sleep(0.05)
    assert WebhookStore(db).state(task.id) == {
        "state": "failed",
        "attempts": 3,
        "last_status_code": 503,
    }
    assert len(receiver.requests) == 3
    assert attempts(metrics) == {("will_retry", "5xx"): 2, ("gave_up", "5xx"): 1}


def test_a_url_refused_at_delivery_is_never_called(db, own_database, clock, receiver):
    # Stored while its host was allowed (or resolved elsewhere): the check at each attempt wins.
    task = ended_task(db, clock, receiver.url.replace("127.0.0.1", "localhost"))
    metrics = DispatcherMetrics()
    assert dispatcher(db, own_database, receiver, metrics).deliver_one()
    assert receiver.requests == []
    assert attempts(metrics) == {("will_retry", "none"): 1}
    with db.statement() as cursor:
        cursor.execute("SELECT last_error FROM webhook_deliveries WHERE task_id = %s", (task.id,))
        assert "not a public address" in cursor.fetchone()["last_error"]


def test_a_held_delivery_is_skipped_and_a_crashed_holder_loses_it(db, own_database, clock):
    first = ended_task(db, clock, "http://127.0.0.1:9/a")
    second = ended_task(db, clock, "http://127.0.0.1:9/b")
    # Another dispatcher holds the first, mid-attempt, on a connection of its own.
    holder = psycopg2.connect(own_database.database_url)
    cursor = holder.cursor()
    cursor.execute(
        "SELECT task_id FROM webhook_deliveries WHERE task_id = %s FOR UPDATE SKIP LOCKED",
        (first.id,),
    )
    assert cursor.fetchone() == (first.id,)
    store = WebhookStore(db)
    with store.claim() as due:
        assert due.result.task.id == second.id  # skipped the held one, without waiting
        assert due.callback_url == "http://127.0.0.1:9/b"
        due.delivered(204)  # done with: only the first is left to claim
    # The holder dies before it records anything: its lock goes with its connection (once the
    # server has seen the connection go, which the client's close does not wait for).
    holder.close()
    deadline = time.monotonic() + 30
    while True:
        with store.claim() as due:
            if due is not None:
                assert due.result.task.id == first.id and due.attempts == 0
                break
        assert time.monotonic() < deadline, "the dead holder's lock was never released"
        time.sleep(0.05)


def test_secret_is_made_once_and_rotated(db, clock):
    users = UserStore(db)
    user = users.create(uuid.uuid4(), f"u{uuid.uuid4().hex[:10]}", "x", clock())
    secrets = WebhookSecrets(users)
    assert users.profile(user.id)["webhook_secret"] is None
    made = secrets.current(user.id)
    assert made.startswith("whsec_") and secrets.current(user.id) == made
    rotated = secrets.rotate(user.id)
    assert rotated != made and users.profile(user.id)["webhook_secret"] == rotated
    assert secrets.rotate(uuid.uuid4()) is None and secrets.current(uuid.uuid4()) is None


def test_the_payload_is_json_of_the_result(db, own_database, clock, receiver):
    ended_task(db, clock, receiver.url)
    dispatcher(db, own_database, receiver).deliver_one()
    [(headers, body)] = receiver.requests
    assert headers["Content-Type"] == "application/json"
    assert set(json.loads(body)) >= {"task_id", "status", "exit_code", "stdout", "stderr"}
