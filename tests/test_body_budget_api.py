"""The body budget in the real API process (gunicorn): many large valid bodies at once cost it
no more than its budget; the ones that find no room get 503, or wait for it.

The API runs with smaller limits than the defaults, so that a small budget (64 MiB) still holds
the largest body they admit: files of 2 MiB at most, stdin and output of 64 KiB. Each body here
is about 12 MiB (2 MiB of file content, every byte a JSON escape) and reserves 4 bytes per byte,
48 MiB: one fits in the budget at a time. No worker runs; the tasks stay queued.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from taskservice.body_sizes import MIB, reserved_bytes
from tests.conftest import TEST_JWT_SECRET
from tests.metrics_text import value
from tests.service import ApiUser, Process, delete_queues, free_port, service_env, wait_for_api
from tests.test_body_bombs import PeakSampler, api_rss

BUDGET_MB = 64
SMALL_LIMITS = {
    "MAX_FILES_BYTES": str(2 * MIB),
    "MAX_STDIN_BYTES": str(64 * 1024),
    "MAX_OUTPUT_BYTES": str(64 * 1024),
    "BODY_MEMORY_BUDGET_MB": str(BUDGET_MB),
}
CONCURRENT = 12
# What the process may grow by beyond the budget itself: the allocator's slack and the
# requests' small objects. Without the budget the same load grew it by several hundred MiB.
GROWTH_SLACK_BYTES = 32 * MIB


@contextlib.contextmanager
def api_process(config, logs, **overrides: str) -> Iterator[tuple[str, Process]]:
    """`taskservice api` alone, one process, on a queue of its own."""
    port = free_port()
    queue = f"{config.queue_name}.budget.{port}"
    env = service_env(config, TEST_JWT_SECRET, PORT=str(port), QUEUE_NAME=queue, **overrides)
    api = Process("api", env, logs / f"api-{port}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_api(base, api)
        yield base, api
    finally:
        api.stop()
        delete_queues(config.amqp_url, queue)


@pytest.fixture(scope="module")
def refusing(config, tmp_path_factory):
    """No wait: a body that finds no room is refused at once."""
    with api_process(
        config, tmp_path_factory.mktemp("budget"), **SMALL_LIMITS, BODY_BUDGET_WAIT_SECONDS="0"
    ) as service:
        yield service


@pytest.fixture(scope="module")
def waiting(config, tmp_path_factory):
    with api_process(
        config, tmp_path_factory.mktemp("budget"), **SMALL_LIMITS, BODY_BUDGET_WAIT_SECONDS="10"
    ) as service:
        yield service


def large_body() -> bytes:
    files = [{"name": f"f{i}.txt", "content": "\x01" * 512 * 1024} for i in range(4)]
    body = json.dumps({"code": "print(1)", "timeout": 5, "files": files}).encode()
    assert reserved_bytes(len(body)) > BUDGET_MB * MIB // 2  # one at a time
    return body


def _post(url: str, body: bytes, headers: dict) -> requests.Response:
    return requests.post(
        url, data=body, headers={**headers, "Content-Type": "application/json"}, timeout=60
    )


def test_concurrent_large_bodies_beyond_the_budget_get_503_and_memory_stays_bounded(refusing):
    base, api = refusing
    user = ApiUser(base)
    body = large_body()
    # Warm up: every code path a large body takes, before measuring.
    for _ in range(2):
        assert _post(f"{base}/task", body, user.headers).status_code == 201
    baseline = api_rss(api.pid)

    with PeakSampler(lambda: api_rss(api.pid)) as sampler, ThreadPoolExecutor(CONCURRENT) as pool:
        responses = list(
            pool.map(lambda _: _post(f"{base}/task", body, user.headers), range(CONCURRENT))
        )

    statuses = sorted(response.status_code for response in responses)
    accepted = statuses.count(201)
    refused = [response for response in responses if response.status_code == 503]
    assert accepted >= 1 and refused, statuses
    assert accepted + len(refused) == CONCURRENT, statuses
    for response in refused:
        assert set(response.json()) == {"title", "description"}, response.text
        assert int(response.headers["Retry-After"]) >= 1
    growth = sampler.peak - baseline
    print(
        f"{accepted} accepted, {len(refused)} refused; API RSS {baseline / MIB:.1f} MiB,"
        f" peak {sampler.peak / MIB:.1f} MiB"
    )
    assert growth < BUDGET_MB * MIB + GROWTH_SLACK_BYTES, f"grew by {growth / MIB:.1f} MiB"

    # Each refusal was counted, and the process serves as before.
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert value(metrics, "taskservice_body_budget_refused_total", route="/task") == len(refused)
    assert _post(f"{base}/task", body, user.headers).status_code == 201
    user.submit("print(1)")
    assert api.alive(), api.log()[-3000:]


def test_a_waiting_submission_holds_no_share_while_it_waits(refusing):
    base, _api = refusing
    user = ApiUser(base)
    body = large_body()

    def listed() -> set[str]:
        answer = requests.get(f"{base}/tasks?limit=100", headers=user.headers, timeout=10)
        return {task["task_id"] for task in answer.json()["tasks"]}

    before = listed()
    # No worker runs: the task stays queued and the request waits the whole 10 s.
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(_post, f"{base}/task?wait=10", body, user.headers)
        deadline = time.monotonic() + 8
        while listed() == before:  # until it is stored
            assert time.monotonic() < deadline, "the waiting submission's task was not stored"
            time.sleep(0.1)
        # The budget fits one such body, and this service does not wait for room: in at once
        # only if the waiting request gave its share back when its task was stored.
        assert _post(f"{base}/task", body, user.headers).status_code == 201
        assert not held.done()  # still waiting: its share went back before the wait's end
        waited = held.result()
    assert waited.status_code == 201, waited.text
    assert waited.json()["status"] == "queued"


def _slow_post(base: str, path: str, body: bytes, headers: dict, pause: float) -> int:
    """POST with the body's second half sent ``pause`` seconds after its first; the status."""
    host, port = base.removeprefix("http://").split(":")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall("\r\n".join(head).encode() + body[: len(body) // 2])
        time.sleep(pause)
        sock.sendall(body[len(body) // 2 :])
        answer = sock.makefile("rb").readline()
    return int(answer.split()[1])


def test_a_body_with_no_room_waits_and_is_accepted_when_room_frees(waiting):
    base, api = waiting
    user = ApiUser(base)
    body = large_body()
    # The first request's share is taken before its body is read; the body comes slowly.
    first: dict = {}
    thread = threading.Thread(
        target=lambda: first.update(status=_slow_post(base, "/task", body, user.headers, pause=3))
    )
    thread.start()
    time.sleep(1)  # the first's share is taken once its headers arrive; its body pauses 3 s
    started = time.monotonic()
    second = _post(f"{base}/task", body, user.headers)
    waited = time.monotonic() - started
    thread.join(30)
    assert first["status"] == 201
    assert second.status_code == 201, second.text
    assert 1 <= waited < 10, f"{waited:.1f} s"  # it waited for the first, not for its own wait
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert not value(metrics, "taskservice_body_budget_refused_total", route="/task")
    assert api.alive()


def test_a_body_that_stops_arriving_ends_in_408_and_gives_its_share_back(refusing):
    base, api = refusing
    user = ApiUser(base)
    body = large_body()
    host, port = base.removeprefix("http://").split(":")
    head = ["POST /task HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in user.headers.items()]
    head += [f"Content-Length: {len(body)}", "", ""]
    with socket.create_connection((host, int(port)), timeout=60) as stalled:
        # The headers and a little of the body, then nothing: the share is taken at once.
        stalled.sendall("\r\n".join(head).encode() + body[:1000])
        time.sleep(1)
        # Not answered (a refusal would be), so it holds its share: another body finds no room.
        assert select.select([stalled], [], [], 0)[0] == []
        assert _post(f"{base}/task", body, user.headers).status_code == 503
        started = time.monotonic()
        answer = http.client.HTTPResponse(stalled)
        answer.begin()
        waited = time.monotonic() - started
        text = answer.read().decode(errors="replace")
    assert answer.status == 408, text
    assert json.loads(text)["title"] == "Request timeout"
    assert waited < 45, f"{waited:.1f} s"  # two idle deadlines at most (the read, the drain)
    # The share went back: a large body is in at once, in a service that does not wait.
    assert _post(f"{base}/task", body, user.headers).status_code == 201
    assert api.alive(), api.log()[-3000:]


def test_judge0_submissions_share_the_budget(refusing):
    base, api = refusing
    user = ApiUser(base)
    # 5 MiB of it whitespace, which JSON allows: 20 MiB reserved, more than a task's body
    # (48 MiB of the 64) leaves while it is read.
    submission = json.dumps({"source_code": "print(1)", "language_id": 71}).encode()
    padded = submission + b" " * 5 * MIB
    first: dict = {}
    thread = threading.Thread(
        target=lambda: first.update(
            status=_slow_post(base, "/task", large_body(), user.headers, pause=3)
        )
    )
    thread.start()
    time.sleep(1)
    refused = _post(f"{base}/judge0/submissions", padded, user.headers)
    thread.join(30)
    assert first["status"] == 201
    assert refused.status_code == 503, refused.text
    assert set(refused.json()) == {"title", "description"}
    assert int(refused.headers["Retry-After"]) >= 1
    # With room again, the same body is read, parsed and stored.
    accepted = _post(f"{base}/judge0/submissions", padded, user.headers)
    assert accepted.status_code == 201, accepted.text
    assert "token" in accepted.json()
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    refusals = value(metrics, "taskservice_body_budget_refused_total", route="/judge0/submissions")
    assert refusals == 1
    assert api.alive()
