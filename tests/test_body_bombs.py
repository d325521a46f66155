"""JSON bombs against the real API under gunicorn: refused before they cost memory.

Each body is 6 MiB, under POST /task's limit, of a shape Python's parser would turn into well
over 100 MiB of objects. Sixteen at once, several shapes, against two API processes: all are
answered 400 (or 413), and the API's processes together stay within 100 MiB of where they
started. A valid body near the largest a task can have is still accepted afterwards.
"""

from __future__ import annotations

import contextlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import TEST_JWT_SECRET
from tests.service import ApiUser, running_service
from tests.test_json_body import bombs

CONCURRENT = 16
GROWTH_BOUND_BYTES = 100 * 2**20


@pytest.fixture(scope="module")
def service(config, tmp_path_factory):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path_factory.mktemp("bombs"),
        API_WORKERS="2",
        QUEUE_NAME=f"{config.queue_name}.bombs",
    ) as (base, api, _worker):
        yield base, api


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    return pids


def api_rss(master: int) -> int:
    """The resident memory of gunicorn's master and its workers, added up."""
    total = _rss(master)
    for child in _children(master):
        with contextlib.suppress(FileNotFoundError):  # a worker that exited meanwhile
            total += _rss(child)
    return total


class PeakSampler:
    """Samples ``measure()`` every few milliseconds in a thread; keeps the largest value."""

    def __init__(self, measure):
        self._measure = measure
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._measure())
            self._stop.wait(0.005)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._measure())


def _post(url: str, body: bytes, headers: dict) -> requests.Response:
    return requests.post(
        url, data=body, headers={**headers, "Content-Type": "application/json"}, timeout=60
    )


def test_concurrent_bombs_are_refused_without_growing_the_api(service):
    base, api = service
    user = ApiUser(base)
    shapes = bombs()
    assert all(len(body) <= 6 * 2**20 for body in shapes.values())
    paths = ["/task", "/task", "/register", "/login"]  # /register and /login: 413 past 64 KiB
    # Warm up both processes: every code path the attack takes, once or more, before measuring.
    for body in [*shapes.values(), *shapes.values()]:
        assert _post(f"{base}/task", body, user.headers).status_code == 400
    user.submit("print(1)")
    baseline = api_rss(api.pid)

    requests_made = [
        (f"{base}{paths[i % len(paths)]}", list(shapes.values())[i % len(shapes)])
        for i in range(CONCURRENT * 3)
    ]
    with PeakSampler(lambda: api_rss(api.pid)) as sampler, ThreadPoolExecutor(CONCURRENT) as pool:
        responses = list(pool.map(lambda r: _post(*r, user.headers), requests_made))

    for (url, _), response in zip(requests_made, responses, strict=True):
        expected = 400 if url.endswith("/task") else 413
        assert response.status_code == expected, (url, response.text)
        body = response.json()
        assert set(body) == {"title", "description"}, body
    growth = sampler.peak - baseline
    print(f"API RSS: {baseline / 2**20:.1f} MiB, peak {sampler.peak / 2**20:.1f} MiB")
    assert growth < GROWTH_BOUND_BYTES, f"the API grew by {growth / 2**20:.1f} MiB"
    assert api.alive(), api.log()[-3000:]


def test_a_valid_task_near_the_largest_body_is_accepted(service):
    base, _api = service
    user = ApiUser(base)
    # 64 KiB of code and 1 MiB of stdin, every byte a \u escape: 6 bytes of JSON each.
    code = "#" + "\x01" * (64 * 1024 - 1)
    body = json.dumps({"code": code, "stdin": "\x01" * 2**20, "timeout": 5}).encode()
    assert len(body) > 6 * 2**20
    response = _post(f"{base}/task", body, user.headers)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "queued"
