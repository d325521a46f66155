"""The official Judge0 Python SDK (``judge0`` on PyPI) against the real processes: the API
(two gunicorn processes) and a worker running tasks in Docker, authenticated with an API key
in ``X-Auth-Token``, as the SDK's README shows for a self-hosted Judge0."""

from __future__ import annotations

import base64
import time
import uuid

import judge0
import pytest
import requests
from judge0 import Status, Submission

from tests.conftest import TEST_JWT_SECRET
from tests.service import ApiUser, running_service


@pytest.fixture(scope="module")
def service(config, tmp_path_factory, docker_client):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path_factory.mktemp("judge0"),
        QUEUE_NAME=f"{config.queue_name}.judge0.{uuid.uuid4().hex[:8]}",
        API_WORKERS="2",
    ) as (base, _api, _worker):
        yield base


@pytest.fixture(scope="module")
def user(service) -> ApiUser:
    return ApiUser(service)


def new_key(user: ApiUser, name: str = "sdk") -> dict:
    response = requests.post(
        f"{user.base}/api-keys", json={"name": name}, headers=user.headers, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def key(user) -> str:
    return new_key(user)["key"]


@pytest.fixture(scope="module")
def client(service, key) -> judge0.Client:
    return judge0.Client(endpoint=f"{service}/judge0", headers={"X-Auth-Token": key})


def reported_versions(service: str, within: float = 60) -> dict:
    """The versions GET /languages shows, once the worker has reported every language's."""
    deadline = time.monotonic() + within
    while True:
        languages = requests.get(f"{service}/languages", timeout=5).json()["languages"]
        versions = {entry["name"]: entry["version"] for entry in languages}
        if all(versions.values()) or time.monotonic() > deadline:
            return versions
        time.sleep(0.5)


def test_the_client_reads_the_catalog(service, client, config):
    versions = reported_versions(service)
    assert client.version == "1.13.1"
    assert {language.id for language in client.languages} == {46, 71, 100}
    # The versions the worker found in the image, as GET /languages shows them.
    assert client.get_language(71).name == f"Python ({versions['python']})"
    assert client.get_language(100).name == f"Python ({versions['python']})"
    assert client.get_language(46).name == f"Bash ({versions['bash']})"
    assert client.config.max_cpu_time_limit == config.task_timeout_max
    assert client.config.max_submission_batch_size == 20
    assert client.is_language_supported(judge0.PYTHON) and client.is_language_supported(judge0.BASH)
    assert len(client.get_statuses()) == 14


def test_python_with_stdin(client):
    result = judge0.run(
        client=client,
        source_code="import sys\nprint(f'hello, {input()}')\nprint('e', file=sys.stderr)",
        stdin="judge0",
        language=judge0.PYTHON,
    )
    assert result.status == Status.ACCEPTED
    assert result.stdout == "hello, judge0\n"
    assert result.stderr == "e\n"
    assert result.exit_code == 0
    assert result.time is not None and result.time > 0
    assert result.wall_time == result.time
    # Sampled while the program runs: a program this short may end before the first sample.
    assert result.memory is None or result.memory > 0
    assert result.finished_at >= result.created_at


def test_bash_and_arguments(client):
    result = judge0.run(
        client=client,
        source_code='echo "$# $1|$2"; echo "$((6 * 7))"',
        command_line_arguments="one 'two words'",
        language=judge0.BASH,
    )
    assert result.status == Status.ACCEPTED
    assert result.stdout == "2 one|two words\n42\n"


def test_python_100_with_arguments(client):
    result = judge0.run(
        client=client,
        source_code="import sys; print(sys.argv[1:])",
        command_line_arguments="-x 'a b'",
        language=100,
    )
    assert (result.status, result.stdout) == (Status.ACCEPTED, "['-x', 'a b']\n")


def test_expected_output_accepted_and_wrong_answer(client):
    accepted, wrong = judge0.run(
        client=client,
        source_code="print(int(input()) * 2)",
        language=judge0.PYTHON,
        test_cases=[("21", "42  \n\n"), ("2", "5")],
    )
    assert accepted.status == Status.ACCEPTED
    assert wrong.status == Status.WRONG_ANSWER
    assert wrong.stdout == "4\n"


def test_timeout_is_status_5(client):
    result = judge0.run(
        client=client,
        source_code="while True:\n    pass",
        language=judge0.PYTHON,
        cpu_time_limit=1,
    )
    assert result.status == Status.TIME_LIMIT_EXCEEDED
    # The SDK asks for base64, and leaves `message` as it came, as Judge0 sends it.
    assert "1 s time limit" in base64.b64decode(result.message).decode()


def test_runtime_error_is_status_11(client):
    result = judge0.run(client=client, source_code="echo oops >&2; exit 3", language=judge0.BASH)
    assert result.status == Status.RUNTIME_ERROR_NZEC
    assert (result.exit_code, result.stderr) == (3, "oops\n")


def test_a_batch_of_submissions(client, user):
    submissions = [
        Submission(source_code=f"print({n} * {n})", language=judge0.PYTHON) for n in range(5)
    ]
    results = judge0.run(client=client, submissions=submissions)
    assert [(r.status, r.stdout) for r in results] == [
        (Status.ACCEPTED, f"{n * n}\n") for n in range(5)
    ]
    # Ordinary tasks of the key's owner.
    listed = requests.get(f"{user.base}/tasks", headers=user.headers, timeout=10).json()
    ids = {task["task_id"] for task in listed["tasks"]}
    assert {str(r.token) for r in results} <= ids


def test_wait_true(service, key):
    response = requests.post(
        f"{service}/judge0/submissions",
        params={"base64_encoded": "false", "wait": "true", "fields": "stdout,status,exit_code"},
        json={"source_code": "print('waited')", "language_id": 71},
        headers={"X-Auth-Token": key},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    assert response.json() == {
        "stdout": "waited\n",
        "status": {"id": 3, "description": "Accepted"},
        "exit_code": 0,
    }


def test_a_revoked_key_is_refused_by_every_api_process_within_a_second(service, user):
    created = new_key(user, "to revoke")
    headers = {"X-Auth-Token": created["key"]}
    url = f"{service}/judge0/submissions/{uuid.uuid4()}"
    # Both API processes learn the key (each answers some of these).
    assert all(requests.get(url, headers=headers, timeout=10).status_code == 404 for _ in range(20))
    deleted = requests.delete(
        f"{service}/api-keys/{created['id']}", headers=user.headers, timeout=10
    )
    assert deleted.status_code == 204
    revoked_at = time.monotonic()
    time.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
    # A second after the revocation, no process accepts it any more.
    answers = [requests.get(url, headers=headers, timeout=10).status_code for _ in range(20)]
    assert answers == [401] * 20
