"""CORS: none without CORS_ORIGINS; with it, preflights and answers for the listed origins only."""

from __future__ import annotations

from dataclasses import replace

import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.config import ConfigError
from taskservice.config_loader import load_config
from taskservice.rate_limits import redis_storage

ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, x-evil",
}


@pytest.fixture
def cors_client(config, db, publisher, hasher, clock, redis_server):
    config = replace(
        config, cors_origins=f"{ORIGIN}, http://localhost:3000", rate_limit_read="3/minute"
    )
    collaborators = Collaborators(
        db, publisher, hasher, clock, rate_limit_storage=redis_storage(redis_server.url)
    )
    return testing.TestClient(create_app(config, collaborators))


def test_preflight_from_an_allowed_origin(cors_client):
    response = cors_client.simulate_options("/task", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    # Only the three request headers the API reads, not every header the page asked for.
    allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"Authorization", "Content-Type", "Idempotency-Key"}
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]
    # No token: the preflight counts per address against the read limit.
    assert response.headers["RateLimit-Policy"] == '"read";q=3;w=60'


def test_an_allowed_origin_may_read_the_service_headers(cors_client):
    response = cors_client.simulate_get("/", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == {"Retry-After", "Location", "RateLimit", "RateLimit-Policy", "X-Request-ID"}
    assert "Origin" in response.headers["Vary"]


def test_a_429_reaches_the_page_with_its_headers(cors_client):
    for _ in range(3):
        assert cors_client.simulate_get("/", headers={"Origin": ORIGIN}).status_code == 200
    refused = cors_client.simulate_get("/", headers={"Origin": ORIGIN})
    assert refused.status_code == 429
    # Without these the browser would hide the 429 and its Retry-After from the page.
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Retry-After" in refused.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.com.evil", "null"])
def test_another_origin_gets_no_cors_headers(cors_client, origin):
    preflight = cors_client.simulate_options("/task", headers={**PREFLIGHT, "Origin": origin})
    answer = cors_client.simulate_get("/", headers={"Origin": origin})
    for response in (preflight, answer):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def test_no_cors_without_origins(client):
    preflight = client.simulate_options("/task", headers=PREFLIGHT)
    answer = client.simulate_get("/", headers={"Origin": ORIGIN})
    for response in (preflight, answer):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


@pytest.mark.parametrize(
    "bad", ["*", "app.example.com", "https://app.example.com/", "ftp://app.example.com"]
)
def test_a_bad_origin_stops_start_up(bad):
    with pytest.raises(ConfigError, match=r"^CORS_ORIGINS: "):
        load_config({"CORS_ORIGINS": bad})
