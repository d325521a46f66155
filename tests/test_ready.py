"""GET /ready against the real services, and with a PostgreSQL, RabbitMQ or Redis of the test's
own stopped; the Compose healthcheck that asks it."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import threading
import wsgiref.simple_server
from collections.abc import Iterator
from dataclasses import replace

import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from tests.service import ROOT


def ready(config, db, publisher, hasher) -> testing.Result:
    app = create_app(config, Collaborators(db=db, publisher=publisher, hasher=hasher))
    return testing.TestClient(app).simulate_get("/ready")


def assert_not_ready(response: testing.Result, **parts: str) -> None:
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    body = response.json
    assert body["title"] == "Service unavailable"
    assert {key: body[key] for key in ("database", "broker", "redis")} == parts
    away = [name for name in ("database", "broker") if parts[name] == "unavailable"]
    words = {"database": "database", "broker": "message broker"}
    for name in away:
        assert words[name] in body["description"]


def test_ready_when_every_service_answers(client):
    response = client.simulate_get("/ready")
    assert response.status_code == 200
    assert response.json == {"database": "ok", "broker": "ok", "redis": "ok"}


def test_redis_away_is_reported_but_still_ready(config, db, publisher, hasher, redis_server):
    own = replace(config, redis_url=redis_server.url)
    assert ready(own, db, publisher, hasher).json["redis"] == "ok"
    redis_server.stop()
    response = ready(own, db, publisher, hasher)
    assert response.status_code == 200
    assert response.json == {"database": "ok", "broker": "ok", "redis": "unavailable"}


def test_database_away_is_not_ready(config, db, publisher, hasher, postgres):
    own = replace(config, database_url=postgres.url("taskservice"))
    assert ready(own, db, publisher, hasher).status_code == 200
    postgres.stop()
    response = ready(own, db, publisher, hasher)
    assert_not_ready(response, database="unavailable", broker="ok", redis="ok")
    postgres.start()  # and ready again once it is back, with nothing restarted
    assert ready(own, db, publisher, hasher).status_code == 200


def test_broker_away_is_not_ready(config, db, publisher, hasher, rabbit):
    own = replace(config, amqp_url=rabbit.url)
    assert ready(own, db, publisher, hasher).status_code == 200
    rabbit.stop()
    response = ready(own, db, publisher, hasher)
    assert_not_ready(response, database="ok", broker="unavailable", redis="ok")


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word: a hung server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def test_services_that_hang_are_not_ready(config, db, publisher, hasher):
    # Connections that open and then hear nothing: each check gives up after its second.
    with silent_server() as port:
        own = replace(
            config,
            database_url=f"postgresql://nobody@127.0.0.1:{port}/taskservice",
            amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F",
        )
        response = ready(own, db, publisher, hasher)
    assert_not_ready(response, database="unavailable", broker="unavailable", redis="ok")


def _healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def serving(app) -> Iterator[int]:
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def test_the_compose_healthcheck_asks_for_readiness(config, db, publisher, hasher, postgres):
    healthcheck = _healthcheck()
    own = replace(config, database_url=postgres.url("taskservice"), host="127.0.0.1")
    app = create_app(own, Collaborators(db=db, publisher=publisher, hasher=hasher))
    with serving(app) as port:
        assert "ready" in healthcheck.check_api(replace(own, port=port))
        postgres.stop()
        with pytest.raises(RuntimeError, match="503"):
            healthcheck.check_api(replace(own, port=port))
