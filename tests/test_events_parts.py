"""Live output's parts in one process, on the real PostgreSQL and Redis: the worker's feed, the
event ids, a task run twice, keep-alive comments, the thread budget, and the route's answers.
The real processes (gunicorn, a worker, Docker) are tests/test_events.py's."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.model import RunOutcome, TaskStatus
from taskservice.output_streams import STDERR, STDOUT, OutputFeed, OutputReader, stream_key
from taskservice.redis_client import redis_client
from taskservice.sandbox import framing
from taskservice.status_cache import StatusCache
from taskservice.store.db import Database
from taskservice.store.delivery import DeliveryStore
from taskservice.store.tasks import TaskStore
from taskservice.task_events import Position, TaskEvents
from taskservice.task_queries import TaskQueries
from taskservice.waits import TaskWaits
from tests.service import free_port
from tests.sse import Event


def _now() -> datetime:
    return datetime.now(UTC)


def parse(chunk: bytes) -> Event | str:
    """One chunk of the body: an Event, or the text of a comment / retry line."""
    fields: dict[str, str] = {}
    for line in chunk.decode().splitlines():
        if line.startswith(":") or line.startswith("retry:"):
            return line
        name, _, value = line.partition(": ")
        fields[name] = value
    return Event(fields["id"], fields["event"], json.loads(fields["data"]), time.monotonic())


@pytest.fixture
def redis(config):
    client = redis_client(config.redis_url)
    yield client
    client.close()


@pytest.fixture
def database(config):
    db = Database(config.database_url, size=4)
    yield db
    db.close()


@pytest.fixture
def service(config, database, publisher, hasher, redis):
    """The app in this process with real PostgreSQL and Redis, and a registered user."""
    cache = StatusCache(redis, config.status_cache_ttl_seconds)
    waits = TaskWaits(redis, max_waiting=2)
    outputs = OutputReader(redis_client(config.redis_url))
    app = create_app(
        config,
        Collaborators(
            db=database,
            publisher=publisher,
            hasher=hasher,
            cache=cache,
            waits=waits,
            outputs=outputs,
        ),
    )
    client = testing.TestClient(app)
    headers = login(client)
    queries = TaskQueries(TaskStore(database, changes=cache), cache, waits)
    events = TaskEvents(queries, outputs, waits, keepalive_seconds=0.5)
    yield client, headers, DeliveryStore(database, changes=cache), events, waits
    waits.close()


def login(client) -> dict:
    body = {"username": f"e{uuid.uuid4().hex[:10]}", "password": "correct horse"}
    assert client.simulate_post("/register", json=body).status_code == 201
    token = client.simulate_post("/login", json=body).json["token"]
    return {"Authorization": f"Bearer {token}"}


def submit(client, headers) -> uuid.UUID:
    response = client.simulate_post("/task", json={"code": "print(1)"}, headers=headers)
    assert response.status_code == 201
    return uuid.UUID(response.json["task_id"])


def next_event(stream) -> Event:
    """The next event, skipping retry lines and comments."""
    while True:
        item = parse(next(stream))
        if isinstance(item, Event):
            return item


# --- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["0:0:0:0-0", "2:15:3:1712345678901-7", "1:6:0:db", "1:6:0:final", "3:0:0:result"]
)
def test_event_ids_round_trip(text):
    assert str(Position.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["", "1:2:3", "a:0:0:0-0", "1:0:0:later", "1:0:0:0-0:0", "-1:0:0:0-0", "1:0:0:0-x"]
)
def test_other_ids_are_refused(text):
    with pytest.raises(ValueError):
        Position.parse(text)


# --- the worker's feed ------------------------------------------------------------------------


def test_the_feed_joins_batches_keeps_characters_whole_and_marks_the_end(redis):
    task_id = uuid.uuid4()
    feed = OutputFeed(redis, task_id, 1, timeout_seconds=10)
    feed.write(STDOUT, b"caf\xc3")  # the character is cut between two writes...
    time.sleep(0.3)  # ...and the first write is flushed alone
    feed.write(STDOUT, b"\xa9\n")
    feed.write(STDOUT, b"more\n")
    feed.write(STDERR, b"oops\n")
    feed.close(ended=True)
    feed.join(5)
    entries = OutputReader(redis).read(task_id, 1, "0-0")
    assert [(e.kind, e.at, e.text) for e in entries] == [
        ("s", 0, ""),
        ("o", 0, "caf"),
        ("o", 3, "\xe9\nmore\n"),
        ("e", 0, "oops\n"),
        ("x", 0, ""),
    ]
    assert 100 < redis.ttl(stream_key(task_id, 1)) <= 120  # ended: kept for reconnections
    redis.delete(stream_key(task_id, 1))


def test_a_cut_character_at_the_end_is_a_replacement_character_as_in_the_result(redis):
    task_id = uuid.uuid4()
    feed = OutputFeed(redis, task_id, 2, timeout_seconds=10)
    feed.write(STDOUT, b"x\xe2\x82")
    feed.close(ended=False)  # not stored (the worker stopped): no end marker
    feed.join(5)
    entries = OutputReader(redis).read(task_id, 2, "0-0")
    # Not ended: kept for the attempt's time limit and then some.
    assert 600 < redis.ttl(stream_key(task_id, 2)) <= 610
    text = "".join(e.text for e in entries if e.kind == "o")
    assert text == b"x\xe2\x82".decode("utf-8", errors="replace")
    assert [e.kind for e in entries][-1] == "o"
    redis.delete(stream_key(task_id, 2))


def test_without_redis_writing_output_costs_nothing():
    nowhere = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    feed = OutputFeed(nowhere, uuid.uuid4(), 1, timeout_seconds=10)
    started = time.monotonic()
    for _ in range(2000):
        feed.write(STDOUT, b"x" * 512)
    feed.close(ended=True)
    writing = time.monotonic() - started
    feed.join(10)
    assert writing < 1.0, "writes waited for Redis"
    assert not feed._thread.is_alive()


# --- the event stream ------------------------------------------------------------------------


def test_a_task_run_twice_starts_its_output_over_with_a_status_event(service, redis):
    client, headers, delivery, events, _waits = service
    task_id = submit(client, headers)
    stream = iter(events.open(task_id, None))
    assert next_event(stream).data == {"status": "queued", "attempt": 0}

    _, first = delivery.claim(task_id, uuid.uuid4(), _now(), 3, 10)
    feed = OutputFeed(redis, task_id, first.attempt, timeout_seconds=10)
    feed.write(STDOUT, b"one\n")
    assert next_event(stream).data == {"status": "running", "attempt": 1}
    out = next_event(stream)
    assert (out.name, out.data, out.id.split(":")[:3]) == (
        "stdout",
        {"data": "one\n"},
        ["1", "4", "0"],
    )

    # Its worker is gone (it never registered): another worker takes the task over.
    _, second = delivery.claim(task_id, uuid.uuid4(), _now(), 3, 10)
    assert second.attempt == 2
    feed2 = OutputFeed(redis, task_id, 2, timeout_seconds=10)
    feed2.write(STDOUT, b"two\n")
    rerun = next_event(stream)
    assert (rerun.name, rerun.data, rerun.id) == (
        "status",
        {"status": "running", "attempt": 2},
        "2:0:0:0-0",
    )
    assert next_event(stream).data == {"data": "two\n"}
    done = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"two\n")
    assert delivery.finish(task_id, 2, done, _now())
    feed2.close(ended=True)
    final, result = next_event(stream), next_event(stream)
    assert (final.name, final.data, final.id) == (
        "status",
        {"status": "succeeded", "attempt": 2},
        "2:4:0:final",
    )
    assert (result.name, result.data["stdout"], result.id) == ("result", "two\n", "2:4:0:result")
    with pytest.raises(StopIteration):
        next(stream)
    # A client that last had attempt 1's line resumes into attempt 2.
    resumed = [parse(chunk) for chunk in events.open(task_id, Position.parse(out.id))][1:]
    assert [e.name for e in resumed] == ["status", "stdout", "status", "result"]
    assert [e.id.rsplit(":", 1)[0] for e in resumed] == ["2:0:0", "2:4:0", "2:4:0", "2:4:0"]
    assert resumed[1].data == {"data": "two\n"}
    feed.close(ended=False)
    redis.delete(stream_key(task_id, 1), stream_key(task_id, 2))


def test_a_quiet_stream_sends_keep_alive_comments(service):
    client, headers, _delivery, events, _waits = service
    task_id = submit(client, headers)
    stream = iter(events.open(task_id, None))
    assert parse(next(stream)) == "retry: 1000"
    assert parse(next(stream)).data == {"status": "queued", "attempt": 0}
    assert parse(next(stream)) == ": keep-alive"  # nothing happens: a comment instead
    stream.close()


def test_streams_take_slots_of_the_held_requests_budget(service):
    client, headers, _delivery, events, waits = service
    task_id = submit(client, headers)
    held = [events.open(task_id, None), events.open(task_id, None)]  # the budget is 2
    refused = client.simulate_get(f"/task/{task_id}/events", headers=headers)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert set(refused.json) == {"title", "description"}
    # A `?wait=` request finds no slot either: it answers at once.
    started = time.monotonic()
    waited = client.simulate_get(f"/result/{task_id}", params={"wait": "5"}, headers=headers)
    assert waited.status_code == 202 and time.monotonic() - started < 4
    for stream in held:
        stream.close()  # what the server does when a client leaves
    assert waits.hold()
    waits.release()


# --- the route ---------------------------------------------------------------------------------


def test_the_route_answers_404_for_others_tasks_and_400_for_foreign_ids(service):
    client, headers, _delivery, _events, _waits = service
    task_id = submit(client, headers)
    other = login(client)
    for path in (f"/task/{task_id}/events", f"/task/{uuid.uuid4()}/events", "/task/x/events"):
        response = client.simulate_get(path, headers=other)
        assert response.status_code == 404, path
        assert set(response.json) == {"title", "description"}
    for bad in ("nonsense", "1:0:0:0-0", "0:0:0:0-0:1"):  # attempt 1 does not exist yet
        response = client.simulate_get(
            f"/task/{task_id}/events", headers={**headers, "Last-Event-ID": bad}
        )
        assert response.status_code == 400, bad
        assert "Last-Event-ID" in response.json["description"]
    response = client.simulate_get(f"/task/{task_id}/events", params={"x": "1"}, headers=headers)
    assert response.status_code == 400


def test_without_redis_a_finished_task_replays_from_postgresql(config, database, publisher, hasher):
    app = create_app(config, Collaborators(db=database, publisher=publisher, hasher=hasher))
    client = testing.TestClient(app)
    headers = login(client)
    task_id = submit(client, headers)
    delivery = DeliveryStore(database)
    _, claimed = delivery.claim(task_id, uuid.uuid4(), _now(), 3, 10)
    outcome = RunOutcome(
        status=TaskStatus.FAILED, exit_code=1, stdout=b"a\nb\n", stderr=b"\xff boom\n"
    )
    assert delivery.finish(task_id, claimed.attempt, outcome, _now())
    response = client.simulate_get(f"/task/{task_id}/events", headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    chunks = [parse(part.encode() + b"\n\n") for part in response.text.split("\n\n") if part]
    events = [chunk for chunk in chunks if isinstance(chunk, Event)]
    assert [(e.name, e.id) for e in events] == [
        ("stdout", "1:4:0:db"),
        ("stderr", "1:4:7:db"),
        ("status", "1:4:7:final"),
        ("result", "1:4:7:result"),
    ]
    result = client.simulate_get(f"/result/{task_id}", headers=headers).json
    assert events[0].data["data"] + events[1].data["data"] == result["stdout"] + result["stderr"]
    assert events[3].data == result
    # Resuming in the middle of stdout: the rest of it, then what follows.
    rest = client.simulate_get(
        f"/task/{task_id}/events", headers={**headers, "Last-Event-ID": "1:2:0:db"}
    )
    rest_events = [parse(p.encode()) for p in rest.text.split("\n\n") if p.startswith("id")]
    assert [(e.name, e.data.get("data")) for e in rest_events][:2] == [
        ("stdout", "b\n"),
        ("stderr", "\ufffd boom\n"),
    ]
    done = client.simulate_get(
        f"/task/{task_id}/events", headers={**headers, "Last-Event-ID": "1:4:7:result"}
    )
    assert (done.status_code, done.text) == (204, "")


def test_the_capture_hands_on_exactly_what_it_keeps():
    seen = []
    capture = framing.OutputCapture(10, on_output=lambda stream, data: seen.append((stream, data)))
    capture.feed(framing.frame(STDOUT, b"hello ") + framing.frame(STDERR, b"err"))
    capture.feed(framing.frame(STDOUT, b"world!") + framing.frame(STDOUT, b"more"))
    assert seen == [(STDOUT, b"hello "), (STDERR, b"err"), (STDOUT, b"worl")]
    assert bytes(capture.buffers[STDOUT]) == b"hello worl" and capture.truncated[STDOUT]
