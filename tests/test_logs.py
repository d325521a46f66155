"""Log lines and request ids inside one process: the formats, the context each line carries,
X-Request-ID on every answer, and the message headers that carry it to the worker. The whole
service, as processes, is in test_observability.py."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import uuid

import jwt
import pika
import pytest
from falcon import testing

from taskservice import logs, request_ids, tracing
from taskservice.app import Collaborators, create_app
from taskservice.config import ConfigError
from taskservice.config_loader import load_config
from taskservice.queue import Publisher
from taskservice.queue_topology import declare_topology
from tests.service import ROOT

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def captured():
    """A logger whose records go through the service's filter into a buffer; (logger, lines)."""
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(logs.ContextFilter())
    logger.addHandler(handler)

    def lines() -> list[str]:
        return buffer.getvalue().splitlines()

    yield logger, handler, lines
    logger.removeHandler(handler)


def test_a_json_line_has_the_base_fields_and_only_the_context_that_applies(captured):
    logger, handler, lines = captured
    handler.setFormatter(logs.JsonFormatter())
    logger.info("outside")
    with logs.bind(task_id="t-1", request_id="r-1"):
        logs.annotate(attempt=2)
        logger.warning("inside %s", "a scope", extra={"http_status": 201})
    logger.info("after")
    outside, inside, after = (json.loads(line) for line in lines())
    assert TS.fullmatch(inside["ts"]), inside["ts"]
    assert (inside["level"], inside["logger"], inside["msg"]) == (
        "WARNING",
        logger.name,
        "inside a scope",
    )
    assert (inside["task_id"], inside["request_id"], inside["attempt"]) == ("t-1", "r-1", 2)
    assert inside["http_status"] == 201
    for line in (outside, after):
        assert not {"task_id", "request_id", "attempt", "trace_id"} & set(line), line


def test_an_exception_stays_on_its_one_json_line(captured):
    logger, handler, lines = captured
    handler.setFormatter(logs.JsonFormatter())
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    [line] = lines()
    record = json.loads(line)
    assert record["msg"] == "it failed"
    assert "ValueError: boom" in record["exc"]


def test_annotate_outside_a_scope_leaves_nothing_behind(captured):
    logger, handler, lines = captured
    handler.setFormatter(logs.JsonFormatter())
    logs.annotate(attempt=7)
    logger.info("no scope")
    assert "attempt" not in json.loads(lines()[0])


def test_the_text_format_appends_the_context(captured):
    logger, handler, lines = captured
    handler.setFormatter(logs.TextFormatter())
    with logs.bind(task_id="t-2"):
        logger.info("hello")
    [line] = lines()
    assert re.search(r" INFO test\.logs\.\w+ \[\d+\] hello task_id=t-2$", line), line


def test_config_refuses_an_unknown_log_format_and_trace_exporter():
    with pytest.raises(ConfigError, match=r"^LOG_FORMAT"):
        load_config({"LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match=r"^OTEL_TRACES_EXPORTER"):
        load_config({"OTEL_TRACES_EXPORTER": "otlp,zipkin"})
    assert load_config({"OTEL_TRACES_EXPORTER": "otlp, console"}).otel_traces_exporters == (
        "otlp",
        "console",
    )
    assert load_config({}).otel_traces_exporters == ()


def test_tracing_is_off_and_free_by_default():
    # In a process of its own: whether the SDK was imported is per process.
    program = (
        "import sys, uuid\n"
        "from taskservice import tracing\n"
        "from taskservice.config_loader import load_config\n"
        "assert tracing.configure(load_config(), 'x') is False\n"
        "with tracing.publish_span('q', uuid.uuid4()) as span:\n"
        "    assert not span.is_recording()\n"
        "    headers = {}\n"
        "    tracing.inject(headers)\n"
        "    assert headers == {}, headers\n"
        "assert 'opentelemetry.sdk.trace' not in sys.modules\n"
        "print('off')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OTEL_TRACES_EXPORTER"}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.stdout == "off\n", done.stderr


@pytest.fixture
def own_queue(config):
    """A queue of the test's own on the real broker, and a channel to read it; deleted after."""
    name = f"{config.queue_name}.logs.{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    channel = connection.channel()
    declare_topology(channel, name)
    yield name, channel
    channel.queue_delete(name)
    channel.queue_delete(f"{name}.dead")
    channel.exchange_delete(f"{name}.dead")
    connection.close()


def _one_message(channel, queue: str):
    """The message's properties, with the headers we sent alone (a quorum queue adds its
    delivery count), and its body."""
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None, "no message on the queue"
    if properties.headers:
        properties.headers.pop("x-delivery-count", None)
    return properties, json.loads(body)


@pytest.fixture
def app_client(config, db, hasher, own_queue):
    publisher = Publisher(config.amqp_url, own_queue[0], config.broker_timeout_seconds)
    yield testing.TestClient(
        create_app(config, Collaborators(db=db, publisher=publisher, hasher=hasher))
    )
    publisher.close()


def _token(client) -> str:
    body = {"username": f"u{uuid.uuid4().hex[:12]}", "password": "correct horse"}
    assert client.simulate_post("/register", json=body).status_code == 201
    return client.simulate_post("/login", json=body).json["token"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/nowhere", 404),
        ("GET", "/status/6f1c2d3e-0000-4000-8000-00000000abcd", 401),
        ("DELETE", "/login", 405),
        ("POST", "/login", 400),  # no body
    ],
)
def test_a_sane_request_id_is_echoed_on_every_answer(app_client, method, path, status):
    sent = "client-Id_1.2"
    result = app_client.simulate_request(method, path, headers={"X-Request-ID": sent})
    assert result.status_code == status
    assert result.headers["X-Request-ID"] == sent


def test_a_body_too_large_is_answered_with_the_request_id(app_client):
    result = app_client.simulate_post(
        "/login", body=b"x" * (1 << 20), headers={"X-Request-ID": "big-one"}
    )
    assert result.status_code == 413
    assert result.headers["X-Request-ID"] == "big-one"


@pytest.mark.parametrize(
    "sent", ["", "a" * 129, "two words", 'quote"d', "caf\u00e9", "x\ny", '{"json":1}', "a/b"]
)
def test_an_insane_request_id_is_replaced_by_a_new_one(app_client, sent):
    result = app_client.simulate_get("/", headers={"X-Request-ID": sent})
    assert re.fullmatch(r"[0-9a-f]{32}", result.headers["X-Request-ID"])


def test_each_request_without_an_id_gets_its_own(app_client):
    first = app_client.simulate_get("/").headers["X-Request-ID"]
    second = app_client.simulate_get("/").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


def test_the_task_message_carries_the_submissions_request_id(app_client, own_queue):
    token = _token(app_client)
    result = app_client.simulate_post(
        "/task",
        json={"code": "print(1)"},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "submit-42"},
    )
    assert result.status_code == 201, result.text
    assert result.headers["X-Request-ID"] == "submit-42"
    properties, body = _one_message(own_queue[1], own_queue[0])
    assert body == {"task_id": result.json["task_id"]}
    assert properties.headers == {"x-request-id": "submit-42"}  # tracing off: no traceparent


def test_lines_logged_while_handling_a_request_carry_its_request_and_user_ids(config, db, hasher):
    # A real publisher aimed at a port where no broker listens: the submission logs its
    # failed publishes and the 503, after authentication.
    dead_broker = Publisher("amqp://guest:guest@127.0.0.1:1/%2F", config.queue_name, 1.0)
    client = testing.TestClient(
        create_app(config, Collaborators(db=db, publisher=dead_broker, hasher=hasher))
    )
    token = _token(client)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        result = client.simulate_post(
            "/task",
            json={"code": "print(1)"},
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "down-1"},
        )
    finally:
        root.removeHandler(handler)
    assert result.status_code == 503
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    ours = [r for r in records if r["logger"].startswith("taskservice.")]
    assert {r["logger"] for r in ours} >= {"taskservice.queue", "taskservice.http_errors"}
    user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    for record in ours:
        assert (record["request_id"], record.get("user_id")) == ("down-1", user_id), record


def test_a_publish_outside_a_request_has_no_request_id(config, own_queue):
    # The sweeper's resends: publish(task_id) as it always was.
    publisher = Publisher(config.amqp_url, own_queue[0], config.broker_timeout_seconds)
    try:
        task_id = uuid.uuid4()
        publisher.publish(task_id)
        properties, body = _one_message(own_queue[1], own_queue[0])
        assert body == {"task_id": str(task_id)}
        assert not properties.headers
        assert properties.message_id == str(task_id)
    finally:
        publisher.close()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-request-id": "abc-1"}, "abc-1"),
        ({"x-request-id": b"abc-2"}, "abc-2"),
        ({"x-request-id": "bad id"}, None),
        ({"x-request-id": 12}, None),
        ({}, None),
        (None, None),
    ],
)
def test_the_worker_takes_only_a_sane_request_id_from_a_message(headers, expected):
    assert request_ids.from_message(headers) == expected


def test_a_message_without_trace_headers_starts_no_trace():
    parent = tracing.extract({"x-request-id": "r"})
    with tracing.process_span("q", uuid.uuid4(), parent) as span:
        assert not span.get_span_context().is_valid


def test_a_setting_refused_at_start_is_reported_as_a_json_line():
    short_secret = "too-short-secret"
    env = {**os.environ, "LOG_FORMAT": "json", "JWT_SECRET": short_secret}
    done = subprocess.run(
        [sys.executable, "-m", "taskservice.cli", "api"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    record = json.loads(line)
    assert (record["level"], record["logger"]) == ("CRITICAL", "taskservice")
    assert record["msg"].startswith("configuration error: JWT_SECRET must be at least 32 bytes")
    assert short_secret not in line
