"""Webhooks as the HTTP API shows them, through falcon.testing against the real PostgreSQL
(rolled back per test): callback_url at submission (refused with 400 for addresses that are not
public), the callback's state in `GET /status` and `GET /result`, and the secret in `GET /me`.

Names resolve through an injected table, except ``localhost``, which the system resolver
answers from the hosts file. Nothing here connects anywhere: no dispatcher runs.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.errors import CallbackUrlRefused
from taskservice.model import RunOutcome, TaskStatus
from taskservice.store.delivery import DeliveryStore
from taskservice.webhooks.destinations import system_resolver
from tests.test_api import assert_error, auth, post, token_for

NAMES = {"hooks.example.com": ["93.184.216.34"], "inside.example.com": ["10.1.2.3"]}


def table_resolver(host: str, port: int) -> list[str]:
    if host in NAMES:
        return NAMES[host]
    if host == "localhost":
        return system_resolver(host, port)
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        raise CallbackUrlRefused("its host could not be resolved") from None


@pytest.fixture
def client(config, db, publisher, hasher, clock):
    config = replace(config, webhook_allowed_hosts="127.0.0.1:9999")
    collaborators = Collaborators(
        db=db, publisher=publisher, hasher=hasher, clock=clock, resolver=table_resolver
    )
    return testing.TestClient(create_app(config, collaborators))


HOOK = "https://hooks.example.com/taskservice?job=7"


def submit(client, token, **fields):
    return post(client, "/task", {"code": "print(1)", **fields}, headers=auth(token))


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9999/hook",
        "http://127.0.0.1:8080/hook",  # loopback, and not the allowed port
        "http://localhost:9999/hook",  # a name for loopback; only 127.0.0.1:9999 is allowed
        "http://inside.example.com/hook",
    ],
)
def test_callbacks_to_addresses_that_are_not_public_are_refused(client, url):
    token = token_for(client)
    body = assert_error(submit(client, token, callback_url=url), 400)
    assert body["description"].startswith("'callback_url' is refused: its host resolves to")
    me = client.simulate_get("/me", headers=auth(token)).json
    assert me["usage"]["tasks_total"] == 0  # nothing was stored


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "must be a string"),
        (7, "must be a string"),
        ("", "http or https"),
        ("ftp://hooks.example.com/", "http or https"),
        ("https://hooks.example.com/" + "x" * 2100, "longer than 2048 bytes"),
        ("https://no-such-host.invalid/", "could not be resolved"),
    ],
)
def test_malformed_callback_urls_are_400(client, value, says):
    body = assert_error(submit(client, token_for(client), callback_url=value), 400)
    assert says in body["description"]


def test_the_callback_shows_in_status_and_result(client, db, clock):
    token = token_for(client)
    created = submit(client, token, callback_url=HOOK)
    assert created.status_code == 201, created.text
    task_id = created.json["task_id"]
    not_yet = {"state": "pending", "attempts": 0, "last_status_code": None}
    assert client.simulate_get(f"/status/{task_id}", headers=auth(token)).json["callback"] == (
        not_yet
    )

    store = DeliveryStore(db)
    _, claimed = store.claim(uuid.UUID(task_id), uuid.uuid4(), clock(), 3, 10)
    clock.now += timedelta(seconds=1)
    store.finish(
        claimed.id, claimed.attempt, RunOutcome(TaskStatus.SUCCEEDED, exit_code=0), clock()
    )
    result = client.simulate_get(f"/result/{task_id}", headers=auth(token)).json
    assert result["status"] == "succeeded" and result["callback"] == not_yet

    # The dispatcher's record, as it would make it: the reads show the row as it is now.
    with db.transaction() as cursor:
        cursor.execute(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = 2,"
            " last_status_code = 204 WHERE task_id = %s",
            (task_id,),
        )
    delivered = {"state": "delivered", "attempts": 2, "last_status_code": 204}
    assert client.simulate_get(f"/status/{task_id}", headers=auth(token)).json["callback"] == (
        delivered
    )
    assert client.simulate_get(f"/result/{task_id}", headers=auth(token)).json["callback"] == (
        delivered
    )


def test_a_task_without_a_callback_shows_none(client):
    token = token_for(client)
    task_id = submit(client, token).json["task_id"]
    assert "callback" not in client.simulate_get(f"/status/{task_id}", headers=auth(token)).json


def test_an_allowed_loopback_host_is_accepted(client):
    token = token_for(client)
    response = submit(client, token, callback_url="http://127.0.0.1:9999/hook")
    assert response.status_code == 201, response.text


def test_the_callback_is_part_of_an_idempotent_request(client):
    token = token_for(client)
    key = {"Idempotency-Key": "hook-1", **auth(token)}
    body = {"code": "print(1)", "callback_url": HOOK}
    first = post(client, "/task", body, headers=key)
    assert post(client, "/task", body, headers=key).json["task_id"] == first.json["task_id"]
    other = post(client, "/task", {**body, "callback_url": HOOK + "&x"}, headers=key)
    assert_error(other, 422)


def test_me_shows_a_webhook_secret_and_rotation_replaces_it(client):
    token = token_for(client)
    secret = client.simulate_get("/me", headers=auth(token)).json["webhook_secret"]
    assert secret.startswith("whsec_") and len(secret) == 38
    assert client.simulate_get("/me", headers=auth(token)).json["webhook_secret"] == secret
    rotated = client.simulate_post("/me/webhook-secret", headers=auth(token))
    assert rotated.status_code == 200
    new = rotated.json["webhook_secret"]
    assert new.startswith("whsec_") and new != secret
    assert client.simulate_get("/me", headers=auth(token)).json["webhook_secret"] == new
    other = client.simulate_get("/me", headers=auth(token_for(client, "bob"))).json
    assert other["webhook_secret"] not in (secret, new)
    assert_error(client.simulate_post("/me/webhook-secret"), 401)
