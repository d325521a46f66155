"""Waiting for a task over the API: woken by Redis's signal, or checking PostgreSQL once a second
when Redis is away; and `?wait=` on the real processes, with a real worker."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
import requests
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.model import RunOutcome, TaskStatus
from taskservice.redis_client import redis_client
from taskservice.status_cache import StatusCache
from taskservice.store.db import Database
from taskservice.store.delivery import DeliveryStore
from taskservice.waits import TaskWaits
from tests.database_doubles import CountingDatabase
from tests.service import TEST_JWT_SECRET, ApiUser, free_port, running_service


@pytest.fixture
def database(config):
    db = Database(config.database_url, size=4)
    yield CountingDatabase(db)
    db.close()


def api(config, database, publisher, hasher, redis):
    cache = StatusCache(redis, config.status_cache_ttl_seconds)
    waits = TaskWaits(redis)
    app = create_app(
        config,
        Collaborators(db=database, publisher=publisher, hasher=hasher, cache=cache, waits=waits),
    )
    client = testing.TestClient(app)
    body = {"username": f"w{uuid.uuid4().hex[:10]}", "password": "correct horse"}
    assert client.simulate_post("/register", json=body).status_code == 201
    token = client.simulate_post("/login", json=body).json["token"]
    return client, {"Authorization": f"Bearer {token}"}, cache, waits


def submit(client, headers) -> uuid.UUID:
    response = client.simulate_post("/task", json={"code": "print(1)"}, headers=headers)
    assert response.status_code == 201
    return uuid.UUID(response.json["task_id"])


def finish_later(database, cache, task_id: uuid.UUID, after: float) -> threading.Thread:
    """Plays the worker: claims and finishes the task, writing through to the cache."""

    def work():
        time.sleep(after)
        delivery = DeliveryStore(database, changes=cache)
        _, claimed = delivery.claim(task_id, uuid.uuid4(), _now(), 3, 10)
        done = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"1\n")
        assert delivery.finish(task_id, claimed.attempt, done, _now())

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_waiting_request_is_woken_by_the_change_without_polling(
    config, database, publisher, hasher
):
    redis = redis_client(config.redis_url)
    client, headers, cache, waits = api(config, database, publisher, hasher, redis)
    task_id = submit(client, headers)
    # A first short wait starts the process's listener.
    client.simulate_get(f"/result/{task_id}", params={"wait": "0.2"}, headers=headers)
    deadline = time.monotonic() + 10
    while not waits.listening:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker = finish_later(database, cache, task_id, after=0.5)
    units_before = database.units
    started = time.monotonic()
    response = client.simulate_get(f"/result/{task_id}", params={"wait": "30"}, headers=headers)
    waited = time.monotonic() - started
    worker.join()
    assert response.status_code == 200, response.text
    assert response.json["stdout"] == "1\n"
    assert waited < 15, "the change did not wake the request: it waited out its 30 s"
    # The request itself read nothing from PostgreSQL: the claim and the finish (2 units each
    # at most) are the worker's.
    assert database.units - units_before <= 4
    waits.close()


def test_without_redis_a_wait_checks_postgresql_about_once_a_second(
    config, database, publisher, hasher
):
    nowhere = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    client, headers, _cache, waits = api(config, database, publisher, hasher, nowhere)
    task_id = submit(client, headers)
    units_before = database.units
    response = client.simulate_get(f"/result/{task_id}", params={"wait": "3"}, headers=headers)
    assert response.status_code == 202
    assert response.headers["Retry-After"] == "1"
    assert 2 <= database.units - units_before <= 6  # about one read a second for 3 s
    assert not waits.listening
    waits.close()


@pytest.mark.parametrize("wait", ["-1", "abc", "nan", "31", "inf", ""])
def test_a_bad_wait_is_a_400(client, wait):
    body = {"username": "waiter", "password": "correct horse"}
    client.simulate_post("/register", json=body)
    token = client.simulate_post("/login", json=body).json["token"]
    headers = {"Authorization": f"Bearer {token}"}
    for path in (f"/result/{uuid.uuid4()}", "/task"):
        method = client.simulate_get if path.startswith("/result") else client.simulate_post
        response = method(path, params={"wait": wait}, json={"code": "1"}, headers=headers)
        assert response.status_code == 400, (path, wait, response.text)
        assert set(response.json) == {"title", "description"}
        assert "wait" in response.json["description"]


def test_post_task_with_wait_answers_the_result_on_the_real_service(config, tmp_path):
    with running_service(config, TEST_JWT_SECRET, tmp_path) as (base, _api, _worker):
        user = ApiUser(base)
        response = requests.post(
            f"{base}/task",
            params={"wait": "30"},
            json={"code": "print(6 * 7)"},
            headers=user.headers,
            timeout=60,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["status"], body["stdout"], body["exit_code"]) == ("succeeded", "42\n", 0)
        assert response.headers["Location"] == f"/status/{body['task_id']}"
        # Not final within the wait: the usual 201 body.
        slow = requests.post(
            f"{base}/task",
            params={"wait": "0.5"},
            json={"code": "import time; time.sleep(5)"},
            headers=user.headers,
            timeout=60,
        )
        assert slow.status_code == 201
        assert set(slow.json()) == {"task_id", "status"}
        waited = requests.get(
            f"{base}/result/{slow.json()['task_id']}",
            params={"wait": "30"},
            headers=user.headers,
            timeout=60,
        )
        assert waited.status_code == 200 and waited.json()["status"] == "succeeded"


def test_waits_over_the_cap_answer_at_once_and_leave_threads_free(config):
    waits = TaskWaits(redis_client(config.redis_url), max_waiting=1)
    held = threading.Event()
    checks = []

    def never_done(fresh: bool) -> bool:
        checks.append(fresh)
        held.set()
        return False

    first = threading.Thread(target=waits.wait, args=(uuid.uuid4(), 30, never_done))
    first.start()
    assert held.wait(10)
    checks.clear()
    assert waits.wait(uuid.uuid4(), 30, never_done) is False
    assert checks == []  # over the cap: not even checked, the caller answers what it has
    waits.close()  # ends the first wait too
    first.join(10)
    assert not first.is_alive()


def test_a_stopping_api_answers_held_requests_before_it_goes(config, tmp_path, redis_server):
    # A Redis of its own: the count of pattern subscriptions below is this API's alone.
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path,
        MAX_WAIT_SECONDS="120",
        REDIS_URL=redis_server.url,
    ) as (
        base,
        api,
        worker,
    ):
        worker.stop()  # nothing will run the task: the wait could only end by its deadline
        user = ApiUser(base)
        task_id = user.submit("print(1)")
        answers = []

        def held_request():
            answers.append(
                requests.get(
                    f"{base}/result/{task_id}",
                    params={"wait": "120"},
                    headers=user.headers,
                    timeout=60,
                )
            )

        redis = redis_client(redis_server.url)
        subscriptions_before = redis.execute_command("PUBSUB", "NUMPAT")
        client = threading.Thread(target=held_request)
        client.start()
        # The API's first wait starts its listener, which subscribes: once Redis counts one more
        # pattern subscription, the request is in its wait.
        deadline = time.monotonic() + 30
        while redis.execute_command("PUBSUB", "NUMPAT") <= subscriptions_before:
            assert time.monotonic() < deadline, "the request never started waiting"
            time.sleep(0.05)
        redis.close()
        api.signal(signal.SIGTERM)
        client.join(60)
        assert answers and answers[0].status_code == 202, answers
        assert answers[0].json()["status"] == "queued"
        assert api.popen.wait(timeout=30) == 0
