"""The /judge0 API at the HTTP level, through falcon.testing against the real PostgreSQL
(rolled back per test); outcomes are stored through the worker's own store."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import pytest

from taskservice.judge0.views import FIELDS, same_output, verdict
from taskservice.model import RunOutcome, TaskStatus
from taskservice.store.delivery import DeliveryStore
from taskservice.store.languages import LanguageVersionStore
from tests.test_api import auth, post, token_for

SDK_CONFIG_FIELDS = {
    "allow_enable_network", "allow_enable_per_process_and_thread_memory_limit",
    "allow_enable_per_process_and_thread_time_limit", "allowed_languages_for_compile_options",
    "callbacks_max_tries", "callbacks_timeout", "cpu_extra_time", "cpu_time_limit",
    "enable_additional_files", "enable_batched_submissions", "enable_callbacks",
    "enable_command_line_arguments", "enable_compiler_options", "enable_network",
    "enable_per_process_and_thread_memory_limit", "enable_per_process_and_thread_time_limit",
    "enable_submission_delete", "enable_wait_result", "maintenance_mode", "max_cpu_extra_time",
    "max_cpu_time_limit", "max_extract_size", "max_file_size", "max_max_file_size",
    "max_max_processes_and_or_threads", "max_memory_limit", "max_number_of_runs",
    "max_processes_and_or_threads", "max_queue_size", "max_stack_limit",
    "max_submission_batch_size", "max_wall_time_limit", "memory_limit", "number_of_runs",
    "redirect_stderr_to_stdout", "stack_limit", "submission_cache_duration",
    "use_docs_as_homepage", "wall_time_limit",
}  # fmt: skip


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def submit(client, token: str, body, query: str = "", status: int = 201):
    response = client.simulate_post(
        "/judge0/submissions",
        query_string=query,
        body=json.dumps(body),
        headers={"Content-Type": "application/json", "X-Auth-Token": token},
    )
    assert response.status_code == status, response.text
    return response.json


def get(client, token: str, path: str, query: str = "", status: int = 200):
    response = client.simulate_get(path, query_string=query, headers={"X-Auth-Token": token})
    assert response.status_code == status, response.text
    return response.json


def run_to_end(db, clock, task_id: str, outcome: RunOutcome) -> None:
    """A worker's claim and finish of the task, through the worker's store."""
    store = DeliveryStore(db)
    clock.now += timedelta(seconds=1)
    _, claimed = store.claim(uuid.UUID(task_id), uuid.uuid4(), clock(), 3, 10)
    clock.now += timedelta(milliseconds=1500)
    assert store.finish(claimed.id, claimed.attempt, outcome, clock())


def test_about_statuses_and_config_info(client, config):
    assert client.simulate_get("/judge0/about").json["version"] == "1.13.1"
    statuses = client.simulate_get("/judge0/statuses").json
    assert [status["id"] for status in statuses] == list(range(1, 15))
    assert statuses[3] == {"id": 4, "description": "Wrong Answer"}
    assert statuses[10] == {"id": 11, "description": "Runtime Error (NZEC)"}
    info = client.simulate_get("/judge0/config_info").json
    assert set(info) >= SDK_CONFIG_FIELDS
    assert info["max_cpu_time_limit"] == config.task_timeout_max
    assert info["memory_limit"] == config.task_memory_mb * 1024
    assert info["max_memory_limit"] == config.task_memory_max_mb * 1024
    assert info["max_submission_batch_size"] == 20
    assert info["enable_network"] is False and info["allow_enable_network"] is False


def test_languages_name_the_reported_versions(config, db, publisher, hasher, clock):
    from falcon import testing

    from taskservice.app import Collaborators, create_app

    versions = LanguageVersionStore(db)
    versions.report("python", "img", "3.12.3")
    versions.report("bash", "img", "5.2.15")
    app = create_app(config, Collaborators(db=db, publisher=publisher, hasher=hasher, clock=clock))
    client = testing.TestClient(app)
    assert client.simulate_get("/judge0/languages").json == [
        {"id": 46, "name": "Bash (5.2.15)"},
        {"id": 71, "name": "Python (3.12.3)"},
        {"id": 100, "name": "Python (3.12.3)"},
    ]
    assert client.simulate_get("/judge0/languages/71").json == {
        "id": 71,
        "name": "Python (3.12.3)",
        "is_archived": False,
        "source_file": "main.py",
        "compile_cmd": None,
        "run_cmd": "python3 -u main.py",
    }
    for unknown in ("70", "0", "abc"):
        missing = client.simulate_get(f"/judge0/languages/{unknown}")
        assert missing.status_code == 404 and "error" in missing.json


def test_a_submission_is_an_ordinary_task_and_reads_back_as_judge0_has_it(client, db, clock):
    token = token_for(client)
    body = {
        "source_code": b64("print(input())"),
        "language_id": 100,
        "stdin": b64("hi"),
        "expected_output": b64("hi  \n\n"),
        "cpu_time_limit": 2.5,
        "wall_time_limit": 5,
        "memory_limit": 65536,
        "command_line_arguments": "a 'b c'",
        "callback_url": None,
        "enable_network": False,
        "number_of_runs": 1,
    }
    created = submit(client, token, body, "base64_encoded=true&wait=false")
    token_id = created["token"]
    assert set(created) == {"token"}
    with db.transaction() as cursor:
        cursor.execute("SELECT * FROM tasks WHERE id = %s", (token_id,))
        task = cursor.fetchone()
    assert (task["language"], bytes(task["code"]), bytes(task["stdin"])) == (
        "python",
        b"print(input())",
        b"hi",
    )
    # The smaller limit, rounded up to seconds; KB to MB.
    assert (task["timeout_seconds"], task["memory_mb"], task["arguments"]) == (3, 64, ["a", "b c"])
    listed = client.simulate_get("/tasks", headers=auth(token)).json["tasks"]
    assert [t["task_id"] for t in listed] == [token_id]

    queued = get(client, token, f"/judge0/submissions/{token_id}")
    assert queued == {
        "token": token_id,
        "stdout": None,
        "time": None,
        "memory": None,
        "stderr": None,
        "compile_output": None,
        "message": None,
        "status": {"id": 1, "description": "In Queue"},
    }
    run_to_end(
        db,
        clock,
        token_id,
        RunOutcome(
            status=TaskStatus.SUCCEEDED,
            exit_code=0,
            stdout=b"hi\n",
            duration_ms=1234,
            memory_peak_bytes=10 * 1024 * 1024,
        ),
    )
    everything = get(client, token, f"/judge0/submissions/{token_id}", "fields=*")
    assert set(everything) == set(FIELDS)
    assert everything["status"] == {"id": 3, "description": "Accepted"}
    assert everything["status_id"] == 3
    assert everything["stdout"] == "hi\n" and everything["stderr"] is None
    assert everything["source_code"] == "print(input())"
    assert everything["expected_output"] == "hi  \n\n"
    assert everything["language_id"] == 100
    # Named with the version a worker reported, if one has in this test run's database.
    assert everything["language"]["id"] == 100
    assert everything["language"]["name"].startswith("Python")
    assert (everything["time"], everything["wall_time"], everything["memory"]) == (
        "1.234",
        "1.234",
        10240,
    )
    assert (everything["exit_code"], everything["exit_signal"]) == (0, None)
    assert everything["created_at"] == "2030-01-02T03:04:05.000Z"
    assert everything["finished_at"] == "2030-01-02T03:04:07.500Z"
    assert (everything["cpu_time_limit"], everything["wall_time_limit"]) == (2.5, 5.0)
    assert everything["memory_limit"] == 65536
    assert everything["command_line_arguments"] == "a 'b c'"
    some = get(
        client,
        token,
        f"/judge0/submissions/{token_id}",
        "fields=stdout,status_id&base64_encoded=true",
    )
    assert some == {"stdout": b64("hi\n"), "status_id": 3}


def test_expected_output_decides_accepted_or_wrong_answer(client, db, clock):
    token = token_for(client)
    wrong = submit(
        client, token, {"source_code": "print(1)", "language_id": 71, "expected_output": "2"}
    )["token"]
    run_to_end(
        db, clock, wrong, RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"1\n")
    )
    assert get(client, token, f"/judge0/submissions/{wrong}")["status"]["id"] == 4


@pytest.mark.parametrize(
    ("status", "outcome", "expected"),
    [
        (TaskStatus.QUEUED, None, (1, None)),
        (TaskStatus.RUNNING, None, (2, None)),
        (TaskStatus.SUCCEEDED, RunOutcome(TaskStatus.SUCCEEDED, 0, stdout=b"x"), (3, None)),
        (
            TaskStatus.TIMED_OUT,
            RunOutcome(TaskStatus.TIMED_OUT, 137, error="ran past", signal="SIGKILL"),
            (5, "ran past"),
        ),
        (TaskStatus.FAILED, RunOutcome(TaskStatus.FAILED, 139, signal="SIGSEGV"), (7, None)),
        (TaskStatus.FAILED, RunOutcome(TaskStatus.FAILED, 153, signal="SIGXFSZ"), (8, None)),
        (TaskStatus.FAILED, RunOutcome(TaskStatus.FAILED, 136, signal="SIGFPE"), (9, None)),
        (TaskStatus.FAILED, RunOutcome(TaskStatus.FAILED, 134, signal="SIGABRT"), (10, None)),
        (
            TaskStatus.FAILED,
            RunOutcome(TaskStatus.FAILED, 3),
            (11, "Exited with error status 3"),
        ),
        (TaskStatus.FAILED, RunOutcome(TaskStatus.FAILED, 137, signal="SIGKILL"), (12, None)),
        (
            TaskStatus.FAILED,
            RunOutcome(
                TaskStatus.FAILED,
                137,
                oom_killed=True,
                signal="SIGKILL",
                error="A process ran out of memory (limit 64 MiB) and was killed.",
            ),
            (12, "A process ran out of memory (limit 64 MiB) and was killed."),
        ),
        (
            TaskStatus.FAILED,
            RunOutcome(TaskStatus.FAILED, 137, stdout_truncated=True, error="too much"),
            (8, "too much"),
        ),
        (TaskStatus.ERROR, RunOutcome(TaskStatus.ERROR, error="no broker"), (13, "no broker")),
        (
            TaskStatus.CANCELLED,
            RunOutcome(TaskStatus.CANCELLED, error="Cancelled."),
            (13, "Cancelled."),
        ),
    ],
)
def test_status_mapping(status, outcome, expected):
    found, message = verdict(status, outcome, None)
    assert int(found) == expected[0]
    if expected[1] is not None:
        assert message == expected[1]
    elif found >= 7:
        assert message and "signal" in message


def test_output_is_compared_as_judge0_compares_it():
    assert same_output(b"1\n2", b"1  \n2\t\n\n")
    assert same_output(b"\n a\n", b"a")  # blank space around the whole does not count
    assert not same_output(b"1\n2", b"1\n\n2")  # a blank line inside does
    assert not same_output(b"a b", b"a  b")
    assert not same_output(b"1", b" 1 2")


@pytest.mark.parametrize(
    ("body", "query", "field"),
    [
        ({"language_id": 71}, "", "source_code"),
        ({"source_code": "", "language_id": 71}, "", "source_code"),
        ({"source_code": "x"}, "", "language_id"),
        ({"source_code": "x", "language_id": 999}, "", "language_id"),
        ({"source_code": "x", "language_id": "71x"}, "", "language_id"),
        ({"source_code": "!!!", "language_id": 71}, "base64_encoded=true", "source_code"),
        (
            {"source_code": b64("x"), "stdin": "%%", "language_id": 71},
            "base64_encoded=true",
            "stdin",
        ),
        ({"source_code": "x", "language_id": 71, "cpu_time_limit": 61}, "", "cpu_time_limit"),
        ({"source_code": "x", "language_id": 71, "cpu_time_limit": -1}, "", "cpu_time_limit"),
        ({"source_code": "x", "language_id": 71, "wall_time_limit": "a"}, "", "wall_time_limit"),
        ({"source_code": "x", "language_id": 71, "memory_limit": 2048}, "", "memory_limit"),
        ({"source_code": "x", "language_id": 71, "memory_limit": 2**40}, "", "memory_limit"),
        ({"source_code": "x", "language_id": 71, "enable_network": True}, "", "enable_network"),
        (
            {"source_code": "x", "language_id": 71, "compiler_options": "-O2"},
            "",
            "compiler_options",
        ),
        (
            {"source_code": "x", "language_id": 71, "additional_files": "UEsF"},
            "",
            "additional_files",
        ),
        ({"source_code": "x", "language_id": 71, "number_of_runs": 3}, "", "number_of_runs"),
        (
            {"source_code": "x", "language_id": 71, "redirect_stderr_to_stdout": True},
            "",
            "redirect_stderr_to_stdout",
        ),
        (
            {"source_code": "x", "language_id": 71, "command_line_arguments": "'open"},
            "",
            "command_line_arguments",
        ),
        (
            {"source_code": "x", "language_id": 71, "command_line_arguments": "a" * 513},
            "",
            "command_line_arguments",
        ),
        (
            {"source_code": "x", "language_id": 71, "callback_url": "ftp://hooks.example/"},
            "",
            "callback_url",
        ),
        ({"source_code": "x" * 70000, "language_id": 71}, "", "source_code"),
    ],
)
def test_invalid_submissions_are_422_field_by_field(client, db, body, query, field):
    token = token_for(client)
    answer = submit(client, token, body, query, status=422)
    assert isinstance(answer[field], list) and answer[field]
    assert answer["title"] and field in answer["description"]
    listed = client.simulate_get("/tasks", headers=auth(token)).json["tasks"]
    assert listed == []  # nothing was stored


def test_bad_requests_are_400(client):
    token = token_for(client)
    ok = {"source_code": "x", "language_id": 71}
    for query in ("base64_encoded=yes", "wait=1", "fields=nope&wait=true"):
        assert submit(client, token, ok, query, status=400)["error"]
    assert submit(client, token, [ok], status=400)["error"]
    not_utf8 = submit(
        client,
        token,
        {"source_code": b64("print('\\xff')"), "language_id": 71, "stdin": b64(b"\xff")},
        "base64_encoded=true",
    )
    assert get(
        client, token, f"/judge0/submissions/{not_utf8['token']}", "fields=stdin", status=400
    )["error"].startswith("some attributes")
    assert get(
        client,
        token,
        f"/judge0/submissions/{not_utf8['token']}",
        "fields=stdin&base64_encoded=true",
    ) == {"stdin": b64(b"\xff")}


def test_unknown_and_others_tokens_are_404(client):
    ada = token_for(client, "ada")
    bob = token_for(client, "bob")
    adas = submit(client, ada, {"source_code": "x", "language_id": 46})["token"]
    for token in (str(uuid.uuid4()), "not-a-token", adas):
        assert get(client, bob, f"/judge0/submissions/{token}", status=404)["error"]
    assert client.simulate_get(f"/judge0/submissions/{adas}").status_code == 401


def test_batches(client):
    token = token_for(client)
    items = [
        {"source_code": b64("print(1)"), "language_id": 71},
        {"source_code": b64("x"), "language_id": 999},
        {"source_code": b64("echo 1"), "language_id": 46, "stdin": b64("in")},
    ]
    response = client.simulate_post(
        "/judge0/submissions/batch",
        query_string="base64_encoded=true",
        json={"submissions": items},
        headers={"X-Auth-Token": token},
    )
    assert response.status_code == 201, response.text
    first, second, third = response.json
    assert set(first) == {"token"} and set(third) == {"token"}
    assert second["language_id"]
    tokens = ",".join([first["token"], str(uuid.uuid4()), third["token"], "junk"])
    read = get(
        client,
        token,
        "/judge0/submissions/batch",
        f"tokens={tokens}&fields=token,stdin,language_id",
    )
    assert read == {
        "submissions": [
            {"token": first["token"], "stdin": None, "language_id": 71},
            None,
            {"token": third["token"], "stdin": "in", "language_id": 46},
            None,
        ]
    }
    too_many = {"submissions": [items[0]] * 21}
    over = client.simulate_post(
        "/judge0/submissions/batch", json=too_many, headers={"X-Auth-Token": token}
    )
    assert over.status_code == 422 and over.json["error"]
    empty = client.simulate_post(
        "/judge0/submissions/batch", json={"submissions": []}, headers={"X-Auth-Token": token}
    )
    assert empty.status_code == 422
    assert get(
        client, token, "/judge0/submissions/batch", "tokens=" + ",".join(["x"] * 21), status=422
    )["error"]
    assert get(client, token, "/judge0/submissions/batch", status=400)["error"]


def test_a_task_of_our_own_api_reads_as_a_submission(client, db, clock):
    token = token_for(client)
    task_id = post(
        client, "/task", {"code": "echo hi", "language": "bash", "timeout": 4}, headers=auth(token)
    ).json["task_id"]
    body = get(
        client,
        token,
        f"/judge0/submissions/{task_id}",
        "fields=language_id,cpu_time_limit,memory_limit,expected_output",
    )
    assert body == {
        "language_id": 46,
        "cpu_time_limit": 4.0,
        "memory_limit": 256 * 1024,
        "expected_output": None,
    }


def test_a_callback_url_becomes_the_tasks_webhook(config, db, publisher, hasher, clock):
    from dataclasses import replace

    from falcon import testing

    from taskservice.app import Collaborators, create_app

    allowed = replace(config, webhook_allowed_hosts="127.0.0.1:9")
    collaborators = Collaborators(db=db, publisher=publisher, hasher=hasher, clock=clock)
    client = testing.TestClient(create_app(allowed, collaborators))
    token = token_for(client)
    body = {"source_code": "print(1)", "language_id": 71, "callback_url": "http://127.0.0.1:9/"}
    created = submit(client, token, body)
    with db.statement() as cursor:
        cursor.execute("SELECT callback_url FROM tasks WHERE id = %s", (created["token"],))
        assert cursor.fetchone()["callback_url"] == "http://127.0.0.1:9/"
    # Where it leads is checked as for any task: a private address not allowed is refused.
    refused = {**body, "callback_url": "http://10.0.0.1/"}
    response = client.simulate_post(
        "/judge0/submissions",
        body=json.dumps(refused),
        headers={"Content-Type": "application/json", "X-Auth-Token": token},
    )
    assert response.status_code == 400, response.text
    assert "callback_url" in response.json["description"]
