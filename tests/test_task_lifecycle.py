"""GET /tasks (pages, filters) and POST /task/{id}/cancel, over the production Database."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.model import RunOutcome, TaskStatus
from taskservice.sandbox import SandboxUnavailable
from taskservice.store.db import Database
from taskservice.store.delivery import ClaimResult, DeliveryStore
from taskservice.store.workers import WorkerRegistry
from taskservice.worker.runner import TaskRunner
from tests.test_api_real_db import committed, logged_in, post

LEASE = 10.0


@pytest.fixture
def database(config):
    database = Database(config.database_url, size=2)
    yield database
    database.close()


@pytest.fixture
def client(config, database, publisher, hasher) -> testing.TestClient:
    collaborators = Collaborators(db=database, publisher=publisher, hasher=hasher)
    # Room for a listing's worth of queued tasks: the quota has tests of its own.
    roomy = replace(config, user_max_active_tasks=100)
    return testing.TestClient(create_app(roomy, collaborators))


def submit(client, headers, code: str = "print(1)", language: str = "python") -> str:
    response = post(client, "/task", {"code": code, "language": language}, headers)
    assert response.status_code == 201, response.text
    return response.json["task_id"]


def pages(client, headers, query: str) -> list[list[str]]:
    """Every page of the listing, as lists of task ids, following next_cursor."""
    found, cursor = [], None
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        response = client.simulate_get("/tasks", query_string=query + suffix, headers=headers)
        assert response.status_code == 200, response.text
        found.append([item["task_id"] for item in response.json["tasks"]])
        cursor = response.json["next_cursor"]
        if cursor is None:
            return found


def test_the_listing_pages_through_a_users_tasks_newest_first(client):
    _, headers = logged_in(client)
    _, other = logged_in(client)
    submit(client, other)
    ids = [submit(client, headers, f"print({n})") for n in range(25)]

    got = pages(client, headers, "limit=10")
    assert [len(page) for page in got] == [10, 10, 5]
    assert [task_id for page in got for task_id in page] == ids[::-1]
    first = client.simulate_get("/tasks", headers=headers).json
    assert len(first["tasks"]) == 20  # the default page
    assert first["tasks"][0]["task_id"] == ids[-1]
    assert set(first["tasks"][0]) == {
        "task_id",
        "status",
        "language",
        "created_at",
        "started_at",
        "finished_at",
        "attempts",
    }


def test_the_listing_filters_by_status_and_language(client):
    _, headers = logged_in(client)
    python = [submit(client, headers) for _ in range(3)]
    bash = [submit(client, headers, "echo hi", "bash") for _ in range(2)]
    cancel = client.simulate_post(f"/task/{python[0]}/cancel", headers=headers)
    assert cancel.status_code == 200, cancel.text

    assert pages(client, headers, "language=bash") == [bash[::-1]]
    assert pages(client, headers, "status=cancelled") == [[python[0]]]
    assert pages(client, headers, "status=queued&language=python&limit=1") == [
        [python[2]],
        [python[1]],
    ]
    assert pages(client, headers, "status=running") == [[]]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=ten",
        "status=done",
        "language=cobol",
        "cursor=not-a-cursor",
        "cursor=eyJjIjogMX0",  # valid base64 JSON, but not a position
        "page=2",
        "limit=1&limit=2",
    ],
)
def test_a_bad_listing_query_is_a_400(client, query):
    _, headers = logged_in(client)
    response = client.simulate_get("/tasks", query_string=query, headers=headers)
    assert response.status_code == 400, response.text
    assert set(response.json) == {"title", "description"}


def test_cancelling_a_queued_task_ends_it_and_it_never_runs(client, config, database):
    _, headers = logged_in(client)
    task_id = submit(client, headers)
    response = client.simulate_post(f"/task/{task_id}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json["status"] == "cancelled"
    assert response.headers["location"] == f"/status/{task_id}"
    result = client.simulate_get(f"/result/{task_id}", headers=headers)
    assert (result.status_code, result.json["status"]) == (200, "cancelled")
    assert "before it ran" in result.json["error"]

    # Its message still arrives at a worker: the claim skips a final task.
    claim = DeliveryStore(database).claim(uuid.UUID(task_id), uuid.uuid4(), now(), 3, LEASE)
    assert claim[0] is ClaimResult.ALREADY_FINAL
    again = client.simulate_post(f"/task/{task_id}/cancel", headers=headers)
    assert again.status_code == 409
    assert "cancelled" in again.json["description"]
    (row,) = committed(config, "SELECT status, attempts FROM tasks WHERE id = %s", task_id)
    assert (row["status"], row["attempts"]) == ("cancelled", 0)


def now() -> datetime:
    return datetime.now(UTC)


def test_cancelling_a_running_task_asks_its_holder_and_the_outcome_is_cancelled(client, database):
    _, headers = logged_in(client)
    task_id = uuid.UUID(submit(client, headers))
    delivery = DeliveryStore(database)
    worker = uuid.uuid4()
    WorkerRegistry(database).heartbeat(worker, "host", 1, LEASE)
    _, claimed = delivery.claim(task_id, worker, now(), 3, LEASE)
    assert delivery.cancels_for(worker) == []

    response = client.simulate_post(f"/task/{task_id}/cancel", headers=headers)
    assert response.status_code == 202, response.text
    assert response.json["status"] == "running"
    assert delivery.cancels_for(worker) == [task_id]
    assert client.simulate_post(f"/task/{task_id}/cancel", headers=headers).status_code == 202

    # The holder killed the program; what it had written is kept.
    killed = RunOutcome(
        status=TaskStatus.FAILED, exit_code=137, stdout=b"partial\n", signal="SIGKILL"
    )
    assert delivery.finish(task_id, claimed.attempt, killed, now()) is TaskStatus.CANCELLED
    result = client.simulate_get(f"/result/{task_id}", headers=headers).json
    assert (result["status"], result["stdout"]) == ("cancelled", "partial\n")
    assert "while it ran" in result["error"]
    assert delivery.cancels_for(worker) == []
    assert client.simulate_post(f"/task/{task_id}/cancel", headers=headers).status_code == 409


def test_a_cancel_whose_holder_died_is_found_by_the_next_claim(client, database):
    _, headers = logged_in(client)
    task_id = uuid.UUID(submit(client, headers))
    delivery = DeliveryStore(database)
    gone = uuid.uuid4()  # never registered: a holder with no row is gone
    delivery.claim(task_id, gone, now(), 3, LEASE)
    assert client.simulate_post(f"/task/{task_id}/cancel", headers=headers).status_code == 202

    result, ended = delivery.claim(task_id, uuid.uuid4(), now(), 3, LEASE)
    assert result is ClaimResult.CANCELLED and ended.id == task_id
    status = client.simulate_get(f"/status/{task_id}", headers=headers).json
    assert (status["status"], status["attempts"]) == ("cancelled", 1)


def test_cancel_of_an_unknown_or_anothers_task_is_404(client):
    _, owner = logged_in(client)
    _, other = logged_in(client)
    task_id = submit(client, owner)
    for path in (f"/task/{task_id}/cancel", f"/task/{uuid.uuid4()}/cancel"):
        response = client.simulate_post(path, headers=other)
        assert response.status_code == 404, response.text
    assert client.simulate_get(f"/status/{task_id}", headers=owner).json["status"] == "queued"


class EngineAway:
    """A sandbox whose engine fails every start."""

    def __init__(self):
        self.runs = 0

    def run(self, job):
        self.runs += 1
        raise SandboxUnavailable("the engine is away")

    def remove_task_containers(self, task_id: str) -> int:
        return 0


def test_a_task_cancelled_while_the_engine_fails_is_never_started(client, config, database):
    _, headers = logged_in(client)
    task_id = uuid.UUID(submit(client, headers))
    worker = uuid.uuid4()
    WorkerRegistry(database).heartbeat(worker, "host", 1, LEASE)
    sandbox = EngineAway()

    def pause(_seconds: float) -> None:
        # Between the runner's tries: its owner cancels the task meanwhile.
        cancelled = client.simulate_post(f"/task/{task_id}/cancel", headers=headers)
        assert cancelled.status_code in (202, 409), cancelled.text

    runner = TaskRunner(
        replace(config, sandbox_retries=5), DeliveryStore(database), sandbox, worker, sleep=pause
    )
    assert runner.handle(task_id) == "cancelled"
    assert sandbox.runs == 1  # no try after the cancel
    result = client.simulate_get(f"/result/{task_id}", headers=headers).json
    assert result["status"] == "cancelled"
