"""The API's metrics in one process (falcon.testing): requests by route template, submissions,
dependency errors; the output passes promtool. The real, multi-process API: test_metrics_service.
"""

from __future__ import annotations

import uuid

from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.metrics.api import ApiMetrics
from taskservice.queue import Publisher
from tests.metrics_text import label_values, promtool_check, value
from tests.service import free_port

REQUESTS = "taskservice_http_requests_total"
DURATIONS = "taskservice_http_request_duration_seconds_count"
SUBMITTED = "taskservice_tasks_submitted_total"
DEPENDENCY_ERRORS = "taskservice_dependency_errors_total"


def logged_in(client) -> dict:
    body = {"username": f"m{uuid.uuid4().hex[:10]}", "password": "correct horse"}
    assert client.simulate_post("/register", json=body).status_code == 201
    token = client.simulate_post("/login", json=body).json["token"]
    return {"Authorization": f"Bearer {token}"}


def metrics_of(client) -> str:
    response = client.simulate_get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.text


def test_requests_are_counted_by_route_template(client):
    headers = logged_in(client)
    created = client.simulate_post("/task", json={"code": "print(1)"}, headers=headers)
    assert created.status_code == 201
    task_id = created.json["task_id"]
    assert client.simulate_get(f"/status/{task_id}", headers=headers).status_code == 200
    assert client.simulate_get(f"/status/{uuid.uuid4()}", headers=headers).status_code == 404
    assert client.simulate_get("/no/such/route").status_code == 404

    text = metrics_of(client)
    assert value(text, REQUESTS, method="POST", route="/task", status="201") == 1
    assert value(text, REQUESTS, method="GET", route="/status/{task_id}", status="200") == 1
    assert value(text, REQUESTS, method="GET", route="/status/{task_id}", status="404") == 1
    assert value(text, REQUESTS, method="GET", route="unmatched", status="404") == 1
    assert value(text, DURATIONS, method="POST", route="/task") == 1
    assert value(text, DURATIONS, method="GET", route="/status/{task_id}") == 2
    # Templates only: no raw path, so no series per task id.
    routes = label_values(text, REQUESTS, "route")
    assert routes == {"/register", "/login", "/task", "/status/{task_id}", "unmatched"}
    assert value(text, SUBMITTED, language="python") == 1


def test_refused_requests_keep_their_route(client):
    # Refused by middleware before any responder ran: still counted under the route.
    assert client.simulate_post("/task", json={"code": "1"}).status_code == 401
    too_large = client.simulate_post(
        "/register", body=b" " * (65 * 1024), headers={"Content-Type": "application/json"}
    )
    assert too_large.status_code == 413
    # A method no one sends is one label value, not one series per invented method.
    assert client.simulate_request("BREW", "/").status_code == 400
    text = metrics_of(client)
    assert value(text, REQUESTS, method="POST", route="/task", status="401") == 1
    assert value(text, REQUESTS, method="POST", route="/register", status="413") == 1
    assert value(text, REQUESTS, method="other", route="/", status="400") == 1
    assert value(text, SUBMITTED, language="python") is None


def test_an_idempotent_repeat_is_not_a_new_submission(client):
    headers = {**logged_in(client), "Idempotency-Key": uuid.uuid4().hex}
    body = {"code": "echo hi", "language": "bash"}
    assert client.simulate_post("/task", json=body, headers=headers).status_code == 201
    assert client.simulate_post("/task", json=body, headers=headers).status_code == 200
    text = metrics_of(client)
    assert value(text, SUBMITTED, language="bash") == 1
    assert value(text, REQUESTS, method="POST", route="/task", status="200") == 1


def test_each_app_counts_its_own_requests(config, db, publisher, hasher):
    # No module-level registry: two apps in one process (as in these tests) do not mix.
    first = testing.TestClient(create_app(config, Collaborators(db, publisher, hasher)))
    second = testing.TestClient(create_app(config, Collaborators(db, publisher, hasher)))
    assert first.simulate_get("/languages").status_code == 200
    assert value(metrics_of(first), REQUESTS, method="GET", route="/languages", status="200") == 1
    assert (
        value(metrics_of(second), REQUESTS, method="GET", route="/languages", status="200") is None
    )


def test_broker_away_counts_a_dependency_error(config, db, hasher, clock):
    metrics = ApiMetrics()
    # A real publisher aimed at a port where no broker listens, counting into the app's metrics.
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    dead_broker = Publisher(url, config.queue_name, 1.0, metrics=metrics)
    app = create_app(config, Collaborators(db, dead_broker, hasher, clock, metrics=metrics))
    client = testing.TestClient(app)
    before = value(metrics_of(client), DEPENDENCY_ERRORS, dependency="broker")
    assert before == 0
    response = client.simulate_post("/task", json={"code": "1"}, headers=logged_in(client))
    assert response.status_code == 503
    text = metrics_of(client)
    assert value(text, DEPENDENCY_ERRORS, dependency="broker") == 1  # one per failed publish
    assert value(text, DEPENDENCY_ERRORS, dependency="database") == 0
    assert value(text, REQUESTS, method="POST", route="/task", status="503") == 1
    assert value(text, SUBMITTED, language="python") is None


def test_promtool_accepts_the_output(client):
    headers = logged_in(client)
    client.simulate_post("/task", json={"code": "print(1)"}, headers=headers)
    client.simulate_get("/nowhere")
    promtool_check(metrics_of(client))
