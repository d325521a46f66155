"""The real processes' metrics: `taskservice api` (gunicorn, two processes, multiprocess mode)
and `taskservice worker` with its metrics port, after a task has run. Both pass promtool, carry
the names dashboards rely on, and the API's counts survive the death of the processes that
made them (they live in PROMETHEUS_MULTIPROC_DIR, not in a process)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.metrics_text import label_values, promtool_check, value
from tests.service import TEST_JWT_SECRET, ApiUser, free_port, running_service, wait_for_api

API_NAMES = (
    "taskservice_http_requests_total",
    "taskservice_http_request_duration_seconds_bucket",
    "taskservice_tasks_submitted_total",
    "taskservice_dependency_errors_total",
)
WORKER_NAMES = (
    "taskservice_tasks_finished_total",
    "taskservice_task_queue_wait_seconds_bucket",
    "taskservice_task_run_seconds_bucket",
    "taskservice_sandbox_start_seconds_bucket",
    "taskservice_tasks_running",
    "taskservice_queue_messages",
    "taskservice_task_redeliveries_total",
    "taskservice_dependency_errors_total",
)


@pytest.fixture(scope="module")
def service(config, tmp_path_factory):
    worker_port = free_port()
    logs = tmp_path_factory.mktemp("metrics")
    with running_service(
        config,
        TEST_JWT_SECRET,
        logs,
        QUEUE_NAME=f"{config.queue_name}.metrics.{uuid.uuid4().hex[:8]}",
        API_WORKERS="2",
        WORKER_METRICS_PORT=str(worker_port),
        # A directory of the configuration's (made at start), in the environment of the worker
        # too, as a shared environment file would have it: the worker must keep out of it.
        PROMETHEUS_MULTIPROC_DIR=str(logs / "api-metrics"),
    ) as (base, api, _worker):
        yield base, api, f"http://127.0.0.1:{worker_port}/metrics"


def names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers, of its master)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_both_endpoints_after_a_task(service):
    base, _api, worker_metrics = service
    user = ApiUser(base)
    assert user.run("print(6 * 7)")["stdout"] == "42\n"

    api_text = requests.get(f"{base}/metrics", timeout=10).text
    print("promtool check metrics (api):", promtool_check(api_text) or "no complaints")
    assert names(api_text) >= set(API_NAMES)
    requests_total = "taskservice_http_requests_total"
    assert value(api_text, requests_total, method="POST", route="/task", status="201") == 1
    assert value(api_text, requests_total, method="POST", route="/login", status="200") == 1
    results = label_values(api_text, requests_total, "route")
    assert "/result/{task_id}" in results
    assert not any(uuid_like in route for route in results for uuid_like in ("-", "%"))
    assert value(api_text, "taskservice_tasks_submitted_total", language="python") == 1
    assert not names(api_text) & set(WORKER_NAMES) - {"taskservice_dependency_errors_total"}

    worker_text = requests.get(worker_metrics, timeout=10).text
    print("promtool check metrics (worker):", promtool_check(worker_text) or "no complaints")
    assert names(worker_text) >= set(WORKER_NAMES)
    finished = "taskservice_tasks_finished_total"
    assert value(worker_text, finished, language="python", status="succeeded") >= 1
    assert value(worker_text, "taskservice_task_queue_wait_seconds_count") >= 1
    assert value(worker_text, "taskservice_task_run_seconds_count") >= 1
    assert value(worker_text, "taskservice_sandbox_start_seconds_count") >= 1
    assert value(worker_text, "taskservice_tasks_running") == 0
    assert value(worker_text, "taskservice_task_redeliveries_total") == 0
    for dependency in ("database", "broker", "redis", "docker"):
        errors = value(worker_text, "taskservice_dependency_errors_total", dependency=dependency)
        assert errors == 0, (dependency, errors)


def test_api_counts_outlive_the_processes_that_made_them(service):
    base, api, _worker_metrics = service
    for _ in range(10):
        # A connection each, so that either process may answer.
        assert requests.get(f"{base}/languages", timeout=10).status_code == 200
    workers = children(api.pid)
    assert len(workers) == 2, workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    # gunicorn starts new processes, which made none of the requests above: the counts come
    # from the dead processes' files alone.
    deadline = time.monotonic() + 60
    while set(children(api.pid)) & set(workers) or len(children(api.pid)) < 2:
        assert time.monotonic() < deadline, "gunicorn did not replace its workers"
        time.sleep(0.2)
    wait_for_api(base, api)
    text = requests.get(f"{base}/metrics", timeout=10).text
    languages = value(
        text, "taskservice_http_requests_total", method="GET", route="/languages", status="200"
    )
    assert languages == 10
    promtool_check(text)


def test_api_is_ready(service):
    base, _api, _worker_metrics = service
    response = requests.get(f"{base}/ready", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok", "redis": "ok"}
