"""Logs and traces of the real processes: `taskservice api` and `taskservice worker`, with
LOG_FORMAT=json and traces sent over OTLP/HTTP to a receiver the test runs on loopback.

One scenario (register, log in, a failed login, a task whose code, stdin, output and error
output carry markers), then the processes are stopped, which flushes what they buffered, and
each test reads what they left: every log line, every span.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import TEST_JWT_SECRET
from tests.service import running_service

# Each secret the service handles, as a marker no log line may contain.
MARK = uuid.uuid4().hex[:10]
PASSWORD = f"pw-{MARK}-secret"
WRONG_PASSWORD = f"wrong-{MARK}-secret"
CODE_MARK = f"code-{MARK}"
STDIN = f"stdin-{MARK}\n"
# Printed, but written in the code in two halves, so that only the output holds it whole.
OUTPUT_MARK = f"output-{MARK}"
STDERR_MARK = f"stderr-{MARK}"
CODE = (
    f"import sys  # {CODE_MARK}\n"
    "data = sys.stdin.read()\n"
    f"print({OUTPUT_MARK[:9]!r} + {OUTPUT_MARK[9:]!r}, len(data))\n"
    f"sys.stderr.write({STDERR_MARK[:9]!r} + {STDERR_MARK[9:]!r})\n"
)
REQUEST_ID = f"obs-{MARK}"


@dataclass
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict


class OtlpReceiver(http.server.ThreadingHTTPServer):
    """The traces endpoint of an OpenTelemetry collector, OTLP over HTTP/protobuf, keeping the
    spans it receives."""

    def __init__(self):
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _OtlpHandler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _OtlpHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        export = ExportTraceServiceRequest()
        export.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        spans = []
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        Span(
                            service=resource.get("service.name", ""),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self.server.lock:
            self.server.spans.extend(spans)
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # the test's output is not the place for the receiver's
        pass


def _value(value):
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@contextlib.contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()


@dataclass
class Run:
    api_lines: list[str]
    worker_lines: list[str]
    spans: list[Span]
    token: str
    user_id: str
    task_id: str
    result: dict
    replaced_request_id: str
    queue: str


@pytest.fixture(scope="module")
def run(config, tmp_path_factory) -> Run:
    logs_dir = tmp_path_factory.mktemp("observability")
    queue = f"{config.queue_name}.observability"
    with (
        otlp_receiver() as receiver,
        running_service(
            config,
            TEST_JWT_SECRET,
            logs_dir,
            QUEUE_NAME=queue,
            LOG_FORMAT="json",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        ) as (base, api, worker),
    ):
        username = f"u{uuid.uuid4().hex[:12]}"
        account = {"username": username, "password": PASSWORD}
        registered = requests.post(f"{base}/register", json=account, timeout=10)
        assert registered.status_code == 201
        wrong = {"username": username, "password": WRONG_PASSWORD}
        assert requests.post(f"{base}/login", json=wrong, timeout=10).status_code == 401
        token = requests.post(f"{base}/login", json=account, timeout=10).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        submitted = requests.post(
            f"{base}/task",
            json={"code": CODE, "stdin": STDIN},
            headers={**auth, "X-Request-ID": REQUEST_ID},
            timeout=10,
        )
        assert submitted.status_code == 201, submitted.text
        assert submitted.headers["X-Request-ID"] == REQUEST_ID
        task_id = submitted.json()["task_id"]
        result = requests.get(f"{base}/result/{task_id}?wait=30", headers=auth, timeout=40)
        replaced = requests.get(f"{base}/", headers={"X-Request-ID": "not sane!"}, timeout=10)
    # Stopped now: their last lines written and their spans exported on the way out.
    with receiver.lock:
        spans = list(receiver.spans)
    return Run(
        api_lines=api.log().splitlines(),
        worker_lines=worker.log().splitlines(),
        spans=spans,
        token=token,
        user_id=registered.json()["id"],
        task_id=task_id,
        result=result.json(),
        replaced_request_id=replaced.headers["X-Request-ID"],
        queue=queue,
    )


def test_the_task_ran_and_printed_its_markers(run):
    # Without this the checks below could pass on a run that never handled the secrets.
    assert run.result["status"] == "succeeded", run.result
    assert run.result["stdout"] == f"{OUTPUT_MARK} {len(STDIN)}\n"
    assert run.result["stderr"] == STDERR_MARK


def test_no_log_line_holds_a_secret(run):
    secrets = [PASSWORD, WRONG_PASSWORD, CODE_MARK, STDIN.strip(), OUTPUT_MARK, STDERR_MARK]
    secrets += [run.token, run.token.split(".")[2], TEST_JWT_SECRET]
    assert len(run.api_lines) > 5 and len(run.worker_lines) > 3
    for line in run.api_lines + run.worker_lines:
        for secret in secrets:
            assert secret not in line, f"{secret!r} logged: {line}"


def records(lines: list[str]) -> list[dict]:
    parsed = []
    for line in lines:
        record = json.loads(line)  # fails on any line that is not JSON
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_every_line_is_one_json_object_with_the_base_fields(run):
    for record in records(run.api_lines) + records(run.worker_lines):
        assert TS.fullmatch(record["ts"]), record
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), record
        assert record["logger"] and isinstance(record["msg"], str), record


def test_the_access_log_is_json_with_the_request_and_user_ids(run):
    access = [r for r in records(run.api_lines) if r["logger"] == "gunicorn.access"]
    [submit] = [r for r in access if (r["http_method"], r["http_path"]) == ("POST", "/task")]
    assert submit["http_status"] == 201
    assert submit["request_id"] == REQUEST_ID
    assert submit["user_id"] == run.user_id
    assert submit["duration_ms"] >= 0
    [replaced] = [r for r in access if r["request_id"] == run.replaced_request_id]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced["request_id"])
    assert replaced["http_path"] == "/"
    # Every answer was logged with the id it carried: one per request.
    assert len({r["request_id"] for r in access}) == len(access) >= 6


def test_the_workers_lines_about_the_task_carry_the_clients_request_id(run):
    worker = records(run.worker_lines)
    about = [r for r in worker if r.get("task_id") == run.task_id]
    assert about, "the worker logged nothing about the task"
    worker_ids = {r.get("worker_id") for r in worker}
    assert len(worker_ids) == 1 and None not in worker_ids
    for record in about:
        assert record["request_id"] == REQUEST_ID, record
    [outcome] = [r for r in about if r["msg"].endswith(": succeeded")]
    assert outcome["attempt"] == 1


def _only(spans: list[Span], name: str) -> Span:
    [span] = [s for s in spans if s.name == name]
    return span


def test_one_trace_links_the_request_the_publish_and_the_workers_spans(run):
    [request] = [
        s
        for s in run.spans
        if s.name == "POST /task" and s.service == "taskservice-api" and s.kind == 2  # SERVER
    ]
    trace = [s for s in run.spans if s.trace_id == request.trace_id]
    publish = _only(trace, f"publish {run.queue}")
    process = _only(trace, f"process {run.queue}")
    claim, finish = _only(trace, "task.claim"), _only(trace, "task.finish")
    sandbox = _only(trace, "sandbox.run")
    assert request.parent_id == ""  # the client sent no traceparent: the trace starts here
    assert request.attributes["taskservice.request_id"] == REQUEST_ID
    assert publish.parent_id == request.span_id and publish.service == "taskservice-api"
    assert process.parent_id == publish.span_id and process.service == "taskservice-worker"
    assert publish.attributes["messaging.message.id"] == run.task_id
    for child in (claim, sandbox, finish):
        assert child.parent_id == process.span_id and child.service == "taskservice-worker"
    # The worker's first task finds its language's pool still empty: it takes the cold path.
    # The container's removal is in the background, after the task's trace.
    for step in ("sandbox.take", "sandbox.create", "sandbox.start", "sandbox.wait"):
        assert _only(trace, step).parent_id == sandbox.span_id, step
    assert [s for s in trace if s.name == "sandbox.remove"] == []
    assert claim.attributes["taskservice.claim"] == "claimed"
    assert finish.attributes["taskservice.task.status"] == "succeeded"


def test_log_lines_carry_the_tasks_trace_id(run):
    [request] = [s for s in run.spans if s.name == "POST /task"]
    [submit] = [
        r
        for r in records(run.api_lines)
        if r["logger"] == "gunicorn.access" and r["http_path"] == "/task"
    ]
    assert submit["trace_id"] == request.trace_id
    about = [r for r in records(run.worker_lines) if r.get("task_id") == run.task_id]
    assert about and {r.get("trace_id") for r in about} == {request.trace_id}
