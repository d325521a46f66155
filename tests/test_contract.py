"""Contract test: schemathesis drives the running service from openapi.yaml.

The API (gunicorn) and a worker run as real processes on the test run's PostgreSQL database
and RabbitMQ queue. Every operation in the spec gets the spec's own examples, the coverage
phase's boundary and negative cases (including methods the spec does not list) and a budget of
generated cases, all sent with a real user's bearer token. Each response must come without a
5xx and conform to the spec: a documented status code, a documented content type, a body that
matches the schema and the documented headers.

`CONTRACT_EXAMPLES` sets the generated cases per operation: 100 by default (`make test`),
2000 in `make fuzz`. The cases are the same on every run with the same number.
"""

from __future__ import annotations

import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.conftest import TEST_JWT_SECRET
from tests.service import ROOT, ApiUser, running_service

EXAMPLES_PER_OPERATION = int(os.environ.get("CONTRACT_EXAMPLES", "100"))


@pytest.fixture(scope="module")
def service(config, tmp_path_factory):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path_factory.mktemp("contract"),
        QUEUE_NAME=f"{config.queue_name}.contract",
        # Generated callback URLs may name public hosts: no webhook is ever sent from here (and
        # from no other test process on this database: tests/service.py).
        WEBHOOK_CONCURRENCY="0",
    ) as (base, _api, _worker):
        yield base


@pytest.fixture(scope="module")
def user(service) -> ApiUser:
    return ApiUser(service)


CONFIG = schemathesis.Config.from_dict(
    {
        "operations": [
            {
                # A schema-valid task is accepted (201, or 200 for a repeat), except that an
                # Idempotency-Key this user already sent with another body is 422: generated
                # keys repeat, bodies differ. Nothing else may refuse valid data.
                "include-operation-id": "submitTask",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "422"]}},
            },
            {
                # A cursor is only valid as the service gave it out: a made-up one, however
                # well formed, is refused with 400 (as documented).
                "include-operation-id": "listTasks",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400"]}},
            },
            {
                # Judge0's rules that a schema cannot state: with base64_encoded=true the texts
                # must be base64, `fields` must name real fields, and options this service
                # does not have (a callback, compiler options) must be left out: 400 and 422.
                # Unknown tokens are 404.
                "include-operation-id-regex": "^judge0(CreateSubmission|CreateBatch|Get)",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "422"]}
                },
            },
        ]
    }
)
# The file, loaded when pytest collects this module so that each operation is a test item of
# its own; test_openapi.py checks that the service serves exactly this file.
contract = schemathesis.openapi.from_path(ROOT / "openapi.yaml", config=CONFIG)


def _has_callback_url(case) -> bool:
    return isinstance(case.body, dict) and "callback_url" in case.body


def _files_a_schema_cannot_judge(case) -> bool:
    """Files whose refusal no schema can state: two or more (their names must not clash), or a
    name within 255 characters but over 255 bytes in UTF-8."""
    files = case.body.get("files") if isinstance(case.body, dict) else None
    if not isinstance(files, list):
        return False
    names = [item.get("name") for item in files if isinstance(item, dict)]
    return len(files) > 1 or any(
        isinstance(name, str) and len(name.encode("utf-8", "surrogatepass")) > 255 for name in names
    )


def test_real_tasks_conform_while_pending_and_when_finished(service, user):
    """Generated task ids are unknown to the service (404); real ones show the other answers.

    One task per way a task ends, so every field of the result is seen with real values. This
    runs before the generated cases, whose tasks would queue up ahead of these.
    """
    status_operation = contract["/status/{task_id}"]["GET"]
    result_operation = contract["/result/{task_id}"]["GET"]

    def get(operation, task_id: str) -> requests.Response:
        case = operation.Case(path_parameters={"task_id": task_id})
        return case.call_and_validate(base_url=service, headers=user.headers)

    expected_ends = {
        user.submit("import time\ntime.sleep(2)\nprint('done')"): "succeeded",
        user.submit("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"): "failed",
        user.submit("exit 3", language="bash", stdin="ignored\n"): "failed",
        user.submit("import time\ntime.sleep(30)", timeout=1): "timed_out",
    }
    first = next(iter(expected_ends))
    assert get(result_operation, first).status_code == 202  # it sleeps for 2 s once started
    assert get(status_operation, first).json()["status"] in ("queued", "running")

    for task_id, expected_end in expected_ends.items():
        user.wait(task_id)
        result = get(result_operation, task_id)
        assert (result.status_code, result.json()["status"]) == (200, expected_end)
        status = get(status_operation, task_id)
        assert (status.status_code, status.json()["status"]) == (200, expected_end)


def test_idempotent_submissions_conform(service, user):
    submit = contract["/task"]["POST"]
    key = {"Idempotency-Key": f"contract-{user.name}"}

    def post(body: dict) -> requests.Response:
        case = submit.Case(body=body, headers=key, media_type="application/json")
        return case.call_and_validate(base_url=service, headers=user.headers)

    first = post({"code": "print(1)"})
    repeat = post({"code": "print(1)"})
    other_body = post({"code": "print(2)"})
    assert (first.status_code, repeat.status_code, other_body.status_code) == (201, 200, 422)
    assert repeat.json()["task_id"] == first.json()["task_id"]


@contract.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,  # the same cases on every run, so a failure is reproducible
    deadline=None,  # a real service over HTTP; response time is not the point here
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_operation_conforms(case, service, user):
    if isinstance(case.query, dict) and "wait" in case.query:
        # Any valid wait is a valid case; long ones would only make the run wait behind the
        # generated tasks. Whether a wait is honoured is tests/test_waits.py's business.
        # Only a valid one: shortening a negative case's wait past the maximum would make it
        # valid, and the check that it is refused would then fail.
        wait = case.query["wait"]
        if isinstance(wait, int | float) and not isinstance(wait, bool) and 0.2 < wait <= 30:
            case.query["wait"] = 0.2
    if isinstance(case.query, dict) and case.query.get("wait") == "true":
        case.query["wait"] = "false"  # Judge0's wait: as above, tests/test_judge0_sdk.py's
    excluded = []
    if _has_callback_url(case):
        # A schema-valid callback_url is refused with 400 when its host does not resolve, or
        # resolves to an address that is not public, which no schema can say.
        excluded.append(positive_data_acceptance)
    if _files_a_schema_cannot_judge(case):
        excluded.append(positive_data_acceptance)
    if case.operation.label == "POST /judge0/submissions/batch":
        # Judge0 answers a batch with 201 and each item's own problems in its place, so a batch
        # with an invalid item is rightly not refused as a whole (tests/test_judge0_api.py).
        excluded.append(negative_data_rejection)
    response = case.call_and_validate(
        base_url=service, headers=user.headers, excluded_checks=excluded
    )
    if _has_callback_url(case) or _files_a_schema_cannot_judge(case):
        assert response.status_code < 500, response.text


# Bodies the generators do not make: raw bytes that are JSON only just, or not quite.
HOSTILE_BODIES = {
    "nested 60000 deep": b"[" * 60_000,
    "nested object": b'{"code": ' + b"[" * 30_000 + b"}",
    "integer of 5000 digits": b'{"code": "1", "timeout": ' + b"9" * 5_000 + b"}",
    "infinity": b'{"code": "1", "timeout": 1e999}',
    "NaN": b'{"code": "1", "memory_mb": NaN}',
    "lone surrogate": b'{"code": "\\ud800"}',
    "not UTF-8": '{"code": "\xe9"}'.encode("latin-1"),
    "byte order mark": b'\xef\xbb\xbf{"code": "1"}',
    "empty": b"",
    "null": b"null",
}


@pytest.mark.parametrize("path", ["/register", "/login", "/task"])
@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_bodies_are_documented_400s(service, user, path, body):
    response = requests.post(
        service + path,
        data=body,
        headers={**user.headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    contract[path]["POST"].validate_response(response)
