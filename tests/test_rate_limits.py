"""Rate limits, counted in a real Redis of the test's own: each limit, the 429 and its headers,
what a refused request leaves behind (nothing), client addresses behind a trusted proxy, bad
settings, and the limits failing open when Redis is stopped or hung.

Small limits (3 a minute) make every limit reachable in a few requests; nothing waits for a
window to pass.
"""

from __future__ import annotations

import logging
import re
import socket
import time
import uuid
from dataclasses import replace

import pika
import pytest
import requests
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.auth import PasswordHasher
from taskservice.config import ConfigError
from taskservice.config_loader import load_config
from taskservice.metrics.api import ApiMetrics
from taskservice.queue import Publisher
from taskservice.rate_limits import redis_storage
from tests.metrics_text import promtool_check, value
from tests.service import TEST_JWT_SECRET, Process, free_port, service_env, wait_for_api

LIMITED = "taskservice_rate_limited_total"
DEPENDENCY_ERRORS = "taskservice_dependency_errors_total"
PASSWORD = "correct horse"
# Limits no test here reaches, for the limits a test does not look at.
HIGH = "10000/minute"


class CountingHasher(PasswordHasher):
    """The real bcrypt hasher, counting its calls: a refused login must not reach it."""

    def __init__(self):
        self.calls = 0
        super().__init__(rounds=4)

    def hash(self, password: str) -> str:
        self.calls += 1
        return super().hash(password)

    def verify(self, password: str, password_hash: str | None) -> bool:
        self.calls += 1
        return super().verify(password, password_hash)


class Limited:
    """An app whose limits count in the test's Redis, with its metrics and hasher at hand."""

    def __init__(self, config, db, publisher, clock, storage, **settings: str):
        limits = {"rate_limit_auth": HIGH, "rate_limit_submit": HIGH, "rate_limit_read": HIGH}
        self.config = replace(config, **{**limits, **settings})
        self.metrics = ApiMetrics()
        self.hasher = CountingHasher()
        collaborators = Collaborators(
            db, publisher, self.hasher, clock, metrics=self.metrics, rate_limit_storage=storage
        )
        self.client = testing.TestClient(create_app(self.config, collaborators))

    def register(self, name: str | None = None, **kwargs) -> testing.Result:
        body = {"username": name or f"r{uuid.uuid4().hex[:12]}", "password": PASSWORD}
        return self.client.simulate_post("/register", json=body, **kwargs)

    def login(self, name: str, **kwargs) -> testing.Result:
        body = {"username": name, "password": PASSWORD}
        return self.client.simulate_post("/login", json=body, **kwargs)

    def user(self, remote_addr: str = "127.0.0.1") -> dict:
        """A new user's Authorization header."""
        name = f"r{uuid.uuid4().hex[:12]}"
        assert self.register(name, remote_addr=remote_addr).status_code == 201
        token = self.login(name, remote_addr=remote_addr).json["token"]
        return {"Authorization": f"Bearer {token}"}

    def metric(self, name: str, **labels: str) -> float | None:
        return value(self.metrics.exposition().decode(), name, **labels)


@pytest.fixture
def limited(config, db, publisher, clock, redis_server):
    def make(publisher=publisher, **settings: str) -> Limited:
        return Limited(config, db, publisher, clock, redis_storage(redis_server.url), **settings)

    return make


def assert_refused(response: testing.Result, policy: str, quota: int) -> int:
    """A 429 in the JSON error shape with every header; returns its Retry-After."""
    assert response.status_code == 429, response.text
    assert response.json["title"] == "Too many requests"
    assert response.json["description"]
    assert response.headers["Content-Type"].startswith("application/json")
    retry_after = response.headers["Retry-After"]
    assert re.fullmatch(r"[0-9]+", retry_after), retry_after
    assert 1 <= int(retry_after) <= 60
    assert response.headers["RateLimit-Policy"] == f'"{policy}";q={quota};w=60'
    assert re.fullmatch(rf'"{policy}";r=0;t=[0-9]+', response.headers["RateLimit"])
    return int(retry_after)


def remaining(response: testing.Result) -> int:
    return int(re.fullmatch(r'"\w+";r=([0-9]+);t=[0-9]+', response.headers["RateLimit"])[1])


# --- auth: per client address, before bcrypt --------------------------------------------------


def test_register_and_login_share_a_limit_per_address(limited, db):
    app = limited(rate_limit_auth="3/minute")
    name = f"r{uuid.uuid4().hex[:12]}"
    assert app.register(name).status_code == 201
    assert app.login(name).status_code == 200
    assert app.login(name).status_code == 200
    bcrypt_runs = app.hasher.calls

    refused_login = app.login(name)
    assert_refused(refused_login, "auth", 3)
    assert "registration and login attempts" in refused_login.json["description"]
    refused_name = f"r{uuid.uuid4().hex[:12]}"
    assert_refused(app.register(refused_name), "auth", 3)
    # Refused before the responder: no bcrypt ran, and no user was stored.
    assert app.hasher.calls == bcrypt_runs
    with db.transaction() as cursor:
        cursor.execute("SELECT count(*) AS n FROM users WHERE username = %s", (refused_name,))
        assert cursor.fetchone()["n"] == 0

    # Another address has its own allowance.
    assert app.login(name, remote_addr="127.0.0.2").status_code == 200
    assert app.metric(LIMITED, limit="auth") == 2
    assert app.metric(LIMITED, limit="read") == 0


def test_allowed_responses_carry_the_headers(limited):
    app = limited(rate_limit_auth="5/minute")
    first = app.register()
    assert first.status_code == 201
    assert first.headers["RateLimit-Policy"] == '"auth";q=5;w=60'
    assert remaining(first) == 4
    second = app.register()
    assert second.status_code == 201
    assert remaining(second) == 3
    # An error answer still counts, and still says so.
    invalid = app.client.simulate_post("/register", json={"username": ""})
    assert invalid.status_code == 400
    assert remaining(invalid) == 2


# --- submit and read: per user --------------------------------------------------------------


@pytest.fixture
def own_queue(config):
    """A publisher on a queue of the test's own, and a way to count that queue's messages."""
    queue = f"{config.queue_name}.limits.{uuid.uuid4().hex[:8]}"
    publisher = Publisher(config.amqp_url, queue, config.broker_timeout_seconds)
    connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    channel = connection.channel()

    def count() -> int:
        return channel.queue_declare(queue=queue, passive=True).method.message_count

    yield publisher, count
    publisher.close()
    channel.queue_delete(queue)
    channel.queue_delete(f"{queue}.dead")
    channel.exchange_delete(f"{queue}.dead")
    connection.close()


def test_submissions_are_limited_per_user_and_a_refused_one_leaves_nothing(limited, db, own_queue):
    publisher, queued = own_queue
    app = limited(publisher=publisher, rate_limit_submit="3/minute")
    alice, bob = app.user(), app.user()
    for _ in range(3):
        created = app.client.simulate_post("/task", json={"code": "print(1)"}, headers=alice)
        assert created.status_code == 201
        assert created.headers["RateLimit-Policy"] == '"submit";q=3;w=60'
    assert queued() == 3

    key = uuid.uuid4().hex
    refused = app.client.simulate_post(
        "/task", json={"code": "print('refused')"}, headers={**alice, "Idempotency-Key": key}
    )
    assert_refused(refused, "submit", 3)
    assert "Location" not in refused.headers
    with db.transaction() as cursor:
        cursor.execute("SELECT count(*) AS n FROM tasks WHERE code = %s", ("print('refused')",))
        assert cursor.fetchone()["n"] == 0
        cursor.execute("SELECT count(*) AS n FROM idempotency_keys WHERE key = %s", (key,))
        assert cursor.fetchone()["n"] == 0
    assert queued() == 3

    # Bob submits as before; Alice's reads are another limit.
    assert app.client.simulate_post("/task", json={"code": "1"}, headers=bob).status_code == 201
    status = app.client.simulate_get(f"/status/{created.json['task_id']}", headers=alice)
    assert status.status_code == 200
    assert status.headers["RateLimit-Policy"] == '"read";q=10000;w=60'
    assert app.metric(LIMITED, limit="submit") == 1


def test_reads_are_limited_per_user(limited):
    app = limited(rate_limit_read="3/minute")
    alice, bob = app.user(), app.user()
    task_id = uuid.uuid4()
    for expected in (2, 1, 0):
        answer = app.client.simulate_get(f"/status/{task_id}", headers=alice)
        assert answer.status_code == 404
        assert remaining(answer) == expected
    refused = app.client.simulate_get(f"/result/{task_id}", headers=alice)
    assert_refused(refused, "read", 3)
    assert "from this user" in refused.json["description"]
    # Bob, from the same address, is not held back by Alice.
    assert app.client.simulate_get(f"/status/{task_id}", headers=bob).status_code == 404
    assert app.metric(LIMITED, limit="read") == 1


def test_anonymous_requests_count_per_address_and_monitoring_never(limited):
    app = limited(rate_limit_read="3/minute")
    for path in ("/", "/languages", "/swagger/"):
        assert app.client.simulate_get(path).headers["RateLimit-Policy"] == '"read";q=3;w=60'
    # An unknown route is answered by the router alone, before any middleware's limit.
    unknown = app.client.simulate_get("/no/such/route")
    assert unknown.status_code == 404 and "RateLimit" not in unknown.headers
    refused = app.client.simulate_get("/openapi.json")
    assert_refused(refused, "read", 3)
    assert "from this address" in refused.json["description"]
    assert app.client.simulate_get("/", remote_addr="127.0.0.2").status_code == 200
    # Probes and Prometheus are never refused, and carry no limit.
    for _ in range(5):
        metrics = app.client.simulate_get("/metrics")
        assert metrics.status_code == 200
        assert "RateLimit" not in metrics.headers
    ready = app.client.simulate_get("/ready")
    assert ready.status_code in (200, 503)
    assert "RateLimit" not in ready.headers


def test_the_refusals_are_counted_in_valid_metrics(limited):
    app = limited(rate_limit_read="1/minute")
    assert app.client.simulate_get("/").status_code == 200
    assert app.client.simulate_get("/").status_code == 429
    text = app.metrics.exposition().decode()
    assert value(text, LIMITED, limit="read") == 1
    assert value(text, LIMITED, limit="submit") == 0  # present before the first refusal
    assert value(text, "taskservice_http_requests_total", method="GET", route="/", status="429")
    promtool_check(text)
    # Another limit (a quota, say) counts under its own label.
    app.metrics.rate_limited("active_tasks")
    assert value(app.metrics.exposition().decode(), LIMITED, limit="active_tasks") == 1


# --- client addresses behind a trusted proxy ------------------------------------------------


def test_forwarded_for_counts_only_from_a_trusted_proxy(limited):
    # 127.0.0.1 plays nginx; 127.0.0.5 is a client that reaches the API directly.
    app = limited(rate_limit_auth="2/minute", trusted_proxies="127.0.0.1")
    proxy = {"remote_addr": "127.0.0.1"}
    first = {**proxy, "headers": {"X-Forwarded-For": "127.0.0.9"}}
    assert app.register(**first).status_code == 201
    assert app.register(**first).status_code == 201
    assert_refused(app.register(**first), "auth", 2)
    # Another client behind the same proxy has its own allowance...
    assert app.register(**proxy, headers={"X-Forwarded-For": "127.0.0.10"}).status_code == 201
    # ...but a client cannot become another by writing the header itself: the proxy appends
    # the address it saw, and that is the one counted.
    spoofed = {**proxy, "headers": {"X-Forwarded-For": "127.0.0.77, 127.0.0.9"}}
    assert_refused(app.register(**spoofed), "auth", 2)

    # From a peer that is no trusted proxy the header is ignored, whatever it says.
    direct = "127.0.0.5"
    for forwarded in ("127.0.0.20", "127.0.0.21"):
        headers = {"X-Forwarded-For": forwarded}
        assert app.register(remote_addr=direct, headers=headers).status_code == 201
    headers = {"X-Forwarded-For": "127.0.0.22"}
    assert_refused(app.register(remote_addr=direct, headers=headers), "auth", 2)


def test_without_trusted_proxies_the_peer_is_the_client(limited):
    app = limited(rate_limit_auth="1/minute")
    assert app.register(headers={"X-Forwarded-For": "127.0.0.30"}).status_code == 201
    assert_refused(app.register(headers={"X-Forwarded-For": "127.0.0.31"}), "auth", 1)


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["RATE_LIMIT_AUTH", "RATE_LIMIT_SUBMIT", "RATE_LIMIT_READ"])
@pytest.mark.parametrize("bad", ["ten a minute", "10/fortnight", "0/minute", "10/minute;5/second"])
def test_a_bad_limit_stops_start_up_naming_the_variable(name, bad):
    with pytest.raises(ConfigError, match=rf"^{name}="):
        load_config({name: bad})


def test_limit_settings_and_their_defaults():
    defaults = load_config({})
    assert (defaults.rate_limit_auth, defaults.rate_limit_submit, defaults.rate_limit_read) == (
        "10/minute",
        "120/minute",
        "1200/minute",
    )
    assert defaults.trusted_proxy_networks == () and defaults.cors_origin_list == ()
    assert load_config({"RATE_LIMIT_SUBMIT": "100 per 5 minutes"}).rate_limit_submit == (
        "100 per 5 minutes"
    )


@pytest.mark.parametrize("bad", ["nginx", "10.0.0.0/33", "127.0.0.1, 300.1.1.1"])
def test_a_bad_trusted_proxy_stops_start_up(bad):
    with pytest.raises(ConfigError, match=r"^TRUSTED_PROXIES: "):
        load_config({"TRUSTED_PROXIES": bad})


# --- Redis away: the limits fail open -------------------------------------------------------


def test_limits_fail_open_when_redis_is_stopped(limited, redis_server, caplog):
    app = limited(rate_limit_read="1/minute")
    assert app.client.simulate_get("/").status_code == 200
    assert app.client.simulate_get("/").status_code == 429
    redis_server.stop()
    caplog.set_level(logging.WARNING, logger="taskservice.rate_limits")

    for _ in range(5):
        served = app.client.simulate_get("/")
        assert served.status_code == 200
        assert "RateLimit" not in served.headers
    warnings = [r for r in caplog.records if r.name == "taskservice.rate_limits"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "rate limits are off" in warnings[0].getMessage()
    # Counted once per failed call; within the pause after it Redis is not asked again.
    assert app.metric(DEPENDENCY_ERRORS, dependency="redis") == 1

    # Back with Redis (empty: the counts start anew) once the pause after the failure is over.
    redis_server.start()
    deadline = time.monotonic() + 10
    while "RateLimit" not in app.client.simulate_get("/").headers:
        assert time.monotonic() < deadline, "the limits did not come back with Redis"
        time.sleep(0.1)
    assert app.client.simulate_get("/").status_code == 429


def test_limits_fail_open_when_redis_hangs(config, db, publisher, clock, caplog):
    # A port that accepts connections (the kernel's backlog) but never answers: reads time out.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        app = Limited(config, db, publisher, clock, redis_storage(url), rate_limit_auth="1/minute")
        caplog.set_level(logging.WARNING, logger="taskservice.rate_limits")
        assert app.register().status_code == 201
        assert app.metric(DEPENDENCY_ERRORS, dependency="redis") == 1
        assert any("Timeout" in r.getMessage() for r in caplog.records), caplog.text


# --- the real API (gunicorn, two processes) -------------------------------------------------


def test_the_real_api_limits_across_its_processes(config, redis_server, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(
        config,
        TEST_JWT_SECRET,
        PORT=str(port),
        API_WORKERS="2",
        REDIS_URL=redis_server.url,
        RATE_LIMIT_AUTH="3/minute",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    api = Process("api", env, tmp_path / "api.log")
    try:
        wait_for_api(base, api)
        answers = []
        for _ in range(5):
            body = {"username": f"r{uuid.uuid4().hex[:12]}", "password": PASSWORD}
            answers.append(requests.post(f"{base}/register", json=body, timeout=10))
        # One count in Redis for both processes, whichever answered.
        assert [a.status_code for a in answers] == [201, 201, 201, 429, 429]
        refused = answers[3]
        assert refused.json()["title"] == "Too many requests"
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["RateLimit-Policy"] == '"auth";q=3;w=60'
        assert answers[0].headers["RateLimit"].startswith('"auth";r=2;t=')
        text = requests.get(f"{base}/metrics", timeout=10).text
        assert value(text, LIMITED, limit="auth") == 2
        promtool_check(text)
    finally:
        api.stop()
