"""`GET /task/{id}/events` on the real processes: the API under gunicorn, a worker running the
programs in Docker, Redis (the machine's, or a private one the test stops)."""

from __future__ import annotations

import json
import signal
import time

import pytest
import requests

from taskservice.output_streams import stream_key
from taskservice.redis_client import redis_client
from tests.service import TEST_JWT_SECRET, ApiUser, running_service
from tests.sse import Event, EventSource, output

# A cap that cuts a two-byte character in half.
CAP = 65537
FIRST_THEN_SECOND = "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')"


@pytest.fixture(scope="module")
def service(config, tmp_path_factory):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path_factory.mktemp("events"),
        QUEUE_NAME=f"{config.queue_name}.events",
        MAX_OUTPUT_BYTES=str(CAP),
    ) as (base, _api, _worker):
        yield base


@pytest.fixture(scope="module")
def user(service) -> ApiUser:
    return ApiUser(service)


def follow(user: ApiUser, task_id: str, last_event_id: str | None = None) -> EventSource:
    source = EventSource(user.base, f"/task/{task_id}/events", user.headers, last_event_id)
    assert source.status == 200, source.body()
    return source


def test_output_arrives_live_and_a_resumed_stream_loses_and_repeats_nothing(user):
    task_id = user.submit(FIRST_THEN_SECOND)
    source = follow(user, task_id)
    assert source.headers["Content-Type"] == "text/event-stream"
    assert source.headers["Cache-Control"] == "no-cache"
    assert source.headers["X-Accel-Buffering"] == "no"
    seen: list[Event] = []
    for event in source.events():
        seen.append(event)
        # The line may come in pieces (print writes the text and its newline apart).
        if output(seen) == "first\n":
            break
    # The first line is here while the program still sleeps before its second.
    status = requests.get(f"{user.base}/status/{task_id}", headers=user.headers, timeout=10)
    assert status.json()["status"] == "running"
    assert output(seen) == "first\n"
    assert seen[0].name == "status" and seen[0].data["status"] in ("queued", "running")
    source.close()  # the connection drops

    rest = list(follow(user, task_id, last_event_id=seen[-1].id).events())  # ends by itself
    events = seen + rest
    assert output(events) == "first\nsecond\n"
    assert [e.name for e in rest][-2:] == ["status", "result"]
    assert rest[-2].data == {"status": "succeeded", "attempt": 1}
    assert rest[-1].data == user.wait(task_id)  # the body of GET /result
    assert len({e.id for e in events}) == len(events)
    statuses = [e.data["status"] for e in events if e.name == "status"]
    assert statuses[-2:] == ["running", "succeeded"]
    # After the result there is nothing more: 204, which stops an EventSource reconnecting.
    done = EventSource(user.base, f"/task/{task_id}/events", user.headers, rest[-1].id)
    assert done.status == 204


def test_a_finished_task_replays_from_redis_and_then_from_postgresql_with_ids_alike(user, config):
    code = (
        "import sys, time\n"
        "for i in range(3):\n"
        "    print(f'out{i}', flush=True)\n"
        "    print(f'err{i}', file=sys.stderr, flush=True)\n"
        "    time.sleep(0.3)\n"
    )
    task_id = user.submit(code)
    result = user.wait(task_id)
    replay = list(follow(user, task_id).events())
    assert output(replay) == result["stdout"] == "out0\nout1\nout2\n"
    assert output(replay, "stderr") == result["stderr"] == "err0\nerr1\nerr2\n"
    chunks = [e for e in replay if e.name in ("stdout", "stderr")]
    assert len(chunks) >= 4  # as the program wrote them, not one block
    assert [e.name for e in replay][-2:] == ["status", "result"]
    assert replay[-1].data == result

    # The stream expired: the stored result, one chunk per stream, ids of the same shape.
    redis = redis_client(config.redis_url)
    assert redis.delete(stream_key(task_id, 1)) == 1
    from_db = list(follow(user, task_id).events())
    assert [(e.name, e.id) for e in from_db] == [
        ("stdout", "1:15:0:db"),
        ("stderr", "1:15:15:db"),
        ("status", "1:15:15:final"),
        ("result", "1:15:15:result"),
    ]
    assert from_db[-1].data == result
    # A client that had part of it from Redis gets exactly the rest from PostgreSQL.
    had = chunks[:3]
    rest = list(follow(user, task_id, last_event_id=had[-1].id).events())
    assert output(had + rest) == result["stdout"]
    assert output(had + rest, "stderr") == result["stderr"]
    redis.close()


def test_output_over_the_cap_is_cut_exactly_as_the_stored_result(user):
    # 400 000 bytes of two-byte characters; the cap (an odd number) cuts one in half.
    code = "import sys\nfor _ in range(200):\n    sys.stdout.write('\\u00e9' * 1000)\n"
    task_id = user.submit(code)
    events = list(follow(user, task_id).events())
    result = events[-1].data
    assert (events[-1].name, result["status"], result["stdout_truncated"]) == (
        "result",
        "failed",
        True,
    )
    streamed = output(events)
    assert streamed == result["stdout"] == "\u00e9" * (CAP // 2) + "\ufffd"


def test_another_users_task_is_404(user, service):
    task_id = user.submit("print(1)")
    stranger = ApiUser(service)
    source = EventSource(service, f"/task/{task_id}/events", stranger.headers)
    assert source.status == 404
    assert source.headers["Content-Type"].startswith("application/json")
    assert set(json.loads(source.body())) == {"title", "description"}


def test_with_redis_stopped_the_task_runs_and_the_stream_ends_from_postgresql(
    config, tmp_path, redis_server
):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path,
        QUEUE_NAME=f"{config.queue_name}.events-redis",
        REDIS_URL=redis_server.url,
    ) as (base, _api, _worker):
        user = ApiUser(base)
        task_id = user.submit(FIRST_THEN_SECOND)
        source = follow(user, task_id)
        seen: list[Event] = []
        for event in source.events():
            seen.append(event)
            # The line may come in pieces (print writes the text and its newline apart).
            if output(seen) == "first\n":
                break
        assert output(seen) == "first\n"  # live, through Redis
        redis_server.stop()  # while the program sleeps
        rest = list(source.events())  # the same connection goes on, and ends
        assert output(seen + rest) == "first\nsecond\n"
        assert [(e.name, e.id.rsplit(":", 1)[1]) for e in rest] == [
            ("stdout", "db"),  # the line Redis never had, from PostgreSQL
            ("status", "final"),
            ("result", "result"),
        ]
        assert rest[-1].data["status"] == "succeeded"
        assert rest[-1].data == user.wait(task_id)
        # A new client, Redis still down: the whole output from PostgreSQL.
        again = list(follow(user, task_id).events())
        assert [e.name for e in again] == ["stdout", "status", "result"]
        assert again[0].data == {"data": "first\nsecond\n"}


def test_a_client_that_leaves_frees_its_thread(config, tmp_path):
    # 4 threads: 2 for held requests (event streams and waits), 2 for the rest.
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path,
        QUEUE_NAME=f"{config.queue_name}.events-budget",
        API_THREADS="4",
    ) as (base, _api, _worker):
        user = ApiUser(base)
        # A dot every 0.2 s for 6 s: each stream writes often, so a gone client is noticed.
        dots = "import time\nfor _ in range(30):\n    print('.', flush=True)\n    time.sleep(0.2)"
        task_id = user.submit(dots, timeout=10)
        held = [follow(user, task_id), follow(user, task_id)]
        refused = EventSource(base, f"/task/{task_id}/events", user.headers)
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "5"
        # Short requests still have their threads.
        status = requests.get(f"{base}/status/{task_id}", headers=user.headers, timeout=10)
        assert status.status_code == 200
        held[0].close()
        # The next write to the gone client fails and ends its stream, giving the slot back.
        deadline = time.monotonic() + 30
        while True:
            again = EventSource(base, f"/task/{task_id}/events", user.headers)
            if again.status == 200:
                break
            assert again.status == 503
            assert time.monotonic() < deadline, "the slot of the client that left was not freed"
            time.sleep(0.3)
        again.close()
        held[1].close()


def test_a_stopping_api_ends_its_streams_so_clients_resume_elsewhere(config, tmp_path):
    with running_service(
        config, TEST_JWT_SECRET, tmp_path, QUEUE_NAME=f"{config.queue_name}.events-stop"
    ) as (base, api, worker):
        worker.stop()  # nothing runs the task: the stream would stay open for ever
        user = ApiUser(base)
        task_id = user.submit("print(1)")
        source = follow(user, task_id)
        first = next(source.events())
        assert (first.name, first.data) == ("status", {"status": "queued", "attempt": 0})
        api.signal(signal.SIGTERM)
        rest = list(source.events())  # the server ends the stream: no result in it
        assert rest == []
        assert api.popen.wait(timeout=30) == 0
