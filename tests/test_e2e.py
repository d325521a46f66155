"""The whole service as a user meets it: gunicorn and a worker as processes, driven over HTTP."""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.conftest import TEST_JWT_SECRET
from tests.service import ApiUser, running_service


@pytest.fixture(scope="module")
def service(config, tmp_path_factory):
    """The API and a worker, started as `taskservice api` and `taskservice worker` would be."""
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path_factory.mktemp("service"),
        QUEUE_NAME=f"{config.queue_name}.e2e",
        MAX_OUTPUT_BYTES="65536",
    ) as (base, _api, _worker):
        yield base


@pytest.fixture(scope="module")
def ada(service) -> ApiUser:
    return ApiUser(service)


def test_health(service):
    response = requests.get(service + "/", timeout=5)
    assert response.text == "Task Service API is running"


def test_success(ada):
    result = ada.run("print(6*7)")
    assert result["status"] == "succeeded"
    assert result["exit_code"] == 0
    assert result["stdout"] == "42\n"
    assert result["stderr"] == ""
    assert result["error"] is None
    assert result["duration_ms"] > 0


def test_status_times(ada):
    task_id = ada.submit("print(1)")
    ada.wait(task_id)
    status = requests.get(f"{ada.base}/status/{task_id}", headers=ada.headers, timeout=5).json()
    assert status["status"] == "succeeded" and status["attempts"] == 1
    assert status["created_at"] <= status["started_at"] <= status["finished_at"]
    assert status["finished_at"].endswith("Z")


def test_non_zero_exit(ada):
    result = ada.run("import sys\nprint('partial')\nsys.exit(4)")
    assert (result["status"], result["exit_code"], result["stdout"]) == ("failed", 4, "partial\n")


def test_exception(ada):
    result = ada.run("raise ValueError('boom')")
    assert result["status"] == "failed"
    assert result["exit_code"] == 1
    assert "ValueError: boom" in result["stderr"]


def test_stdin(ada):
    result = ada.run(
        "import sys\nfor line in sys.stdin: print(line.strip()[::-1])", stdin="abc\nxyz\n"
    )
    assert result["stdout"] == "cba\nzyx\n"


def test_timeout(ada):
    result = ada.run("import time\ntime.sleep(30)", timeout=1)
    assert result["status"] == "timed_out"
    assert result["signal"] == "SIGKILL"
    assert result["timeout"] == 1


def test_unicode_output(ada):
    result = ada.run(
        "print('héllo, мир, 世界 ✓ 🐍')\nimport sys; sys.stdout.buffer.write(b'\\xff\\n')"
    )
    assert result["stdout"] == "héllo, мир, 世界 ✓ 🐍\n\ufffd\n"


def test_output_cap(ada):
    result = ada.run("while True: print('y' * 1000)")
    assert result["status"] == "failed"
    assert result["stdout_truncated"] is True
    assert len(result["stdout"]) == 65536


def test_bash(ada):
    result = ada.run('read name; echo "hello $name"', language="bash", stdin="ada\n")
    assert (result["status"], result["stdout"]) == ("succeeded", "hello ada\n")


def test_concurrent_tasks_all_finish(ada):
    task_ids = [ada.submit(f"print({n} * 2)") for n in range(8)]
    results = [ada.wait(task_id) for task_id in task_ids]
    assert [r["stdout"] for r in results] == [f"{n * 2}\n" for n in range(8)]


def test_another_users_task_is_404(service, ada):
    task_id = ada.submit("print('mine')")
    eve = ApiUser(service)
    for path in ("status", "result"):
        response = requests.get(f"{service}/{path}/{task_id}", headers=eve.headers, timeout=5)
        assert response.status_code == 404
        assert set(response.json()) == {"title", "description"}
    ada.wait(task_id)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer nonsense", "Bearer a.b.c", "Token abc", "Bearer "]
)
def test_bad_tokens(service, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.post(f"{service}/task", json={"code": "1"}, headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert set(response.json()) == {"title", "description"}


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("not json", "application/json", 400),
        ('{"code": 1}', "application/json", 400),
        ('{"code": "1", "timeout": 999}', "application/json", 400),
        ('{"code": "1", "language": "cobol"}', "application/json", 400),
        ("code=1", "application/x-www-form-urlencoded", 415),
        ('{"code": "' + "x" * 70_000 + '"}', "application/json", 413),
    ],
)
def test_bad_bodies(service, ada, body, content_type, status):
    headers = {**ada.headers, "Content-Type": content_type}
    response = requests.post(f"{service}/task", data=body.encode(), headers=headers, timeout=5)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"title", "description"}


def test_languages_report_the_versions_the_worker_found(service):
    deadline = time.monotonic() + 60
    while True:
        languages = requests.get(f"{service}/languages", timeout=5).json()["languages"]
        versions = {entry["name"]: entry["version"] for entry in languages}
        if all(versions.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(versions) == {"python", "bash", "python-data"}
    data = versions.pop("python-data") or ""
    assert all(re.fullmatch(r"\d+\.\d+(\.\d+)?", v or "") for v in versions.values()), versions
    # python-data: the interpreter's version, then its libraries'.
    assert re.fullmatch(
        r"\d+\.\d+\.\d+ \(numpy [\d.]+, pandas [\d.]+, matplotlib [\d.]+, scipy [\d.]+\)", data
    ), data


def test_chunked_body_is_refused_with_411(service, ada):
    def chunks():
        yield b'{"code": "print(1)"}'

    response = requests.post(
        f"{service}/task",
        data=chunks(),
        headers={**ada.headers, "Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 411
    assert set(response.json()) == {"title", "description"}
