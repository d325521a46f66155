"""The HTTP contract, through falcon.testing, against the real PostgreSQL (rolled back per test)."""

from __future__ import annotations

import base64
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import bcrypt
import jwt
import pytest

from taskservice.app import Collaborators, create_app
from taskservice.model import RunOutcome, TaskStatus
from taskservice.queue import Publisher
from taskservice.store.delivery import DeliveryStore
from taskservice.store.languages import LanguageVersionStore
from taskservice.store.users import UserStore
from tests.conftest import TEST_JWT_SECRET

PASSWORD = "correct horse"


def post(client, path: str, body, headers: dict | None = None):
    # json.dumps escapes lone surrogates, which the test client's own encoder cannot send.
    headers = {"Content-Type": "application/json", **(headers or {})}
    return client.simulate_post(path, body=json.dumps(body), headers=headers)


def register(client, username="ada", password=PASSWORD):
    return post(client, "/register", {"username": username, "password": password})


def login(client, username="ada", password=PASSWORD):
    return post(client, "/login", {"username": username, "password": password})


def token_for(client, username="ada") -> str:
    assert register(client, username).status_code == 201
    response = login(client, username)
    assert response.status_code == 200
    return response.json["token"]


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["description"], str) and body["description"]
    return body


def test_health(client):
    response = client.simulate_get("/")
    assert response.status_code == 200
    assert response.text == "Task Service API is running"
    assert response.headers["content-type"].startswith("text/plain")


def test_register_then_login(client):
    response = register(client)
    assert response.status_code == 201
    assert response.json["username"] == "ada"
    assert response.headers["location"] == "/me"
    uuid.UUID(response.json["id"])

    response = login(client)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json["token_type"] == "Bearer"
    assert response.json["expires_in"] == 3600
    claims = _claims(response.json["token"])
    assert set(claims) == {"sub", "iat", "exp"}
    assert claims["exp"] - claims["iat"] == 3600


def test_username_taken_is_409_case_insensitively(client):
    assert register(client, "ada").status_code == 201
    assert_error(register(client, "ada"), 409)
    assert_error(register(client, "ADA"), 409)


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": PASSWORD},
        {"username": "a" * 65, "password": PASSWORD},
        {"username": "ada lovelace", "password": PASSWORD},
        {"username": "adä", "password": PASSWORD},
        {"username": "ada", "password": "short"},
        {"username": "ada", "password": "x" * 1025},
        {"username": "ada", "password": "\ud800" * 8},
        {"username": "ada", "password": 12345678},
        {"username": None, "password": PASSWORD},
        {"username": "ada"},
        {"username": "ada", "password": PASSWORD, "admin": True},
        [],
        "ada",
    ],
)
def test_register_rejects_bad_bodies(client, body):
    assert_error(post(client, "/register", body), 400)


@pytest.mark.parametrize("password", ["x" * 73, "é" * 37, "x" * 1024, "ü" * 1024])
def test_long_passphrases_count_in_full(client, password):
    """Past bcrypt's 72 bytes, too: a passphrase differing only at its end is another one."""
    assert register(client, "ada", password).status_code == 201
    assert login(client, "ada", password).status_code == 200
    assert_error(login(client, "ada", password[:-1] + "e"), 401)
    assert_error(login(client, "ada", password.encode()[:72].decode()), 401)


def test_a_hash_from_before_long_passphrases_verifies_and_is_upgraded(client, db, hasher):
    """An account stored with a plain bcrypt hash still logs in; its hash is upgraded then."""
    users = UserStore(db)
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    user = users.create(uuid.uuid4(), "ada", legacy, datetime.now(UTC))
    assert_error(login(client, "ada", PASSWORD + "x" * 70), 401)  # same first 72 bytes
    assert users.find_by_username("ada").password_hash == legacy
    assert login(client, "ada", PASSWORD).status_code == 200
    upgraded = users.find_by_username("ada").password_hash
    assert upgraded.startswith("$bcrypt-sha256$v=2,t=2b,r=4$") and user.id
    assert hasher.verify(PASSWORD, upgraded)
    assert login(client, "ada", PASSWORD).status_code == 200
    assert_error(login(client, "ada", "wrong password"), 401)


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ("{not json", {"Content-Type": "application/json"}, 400),
        ("", {"Content-Type": "application/json"}, 400),
        ("username=ada", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ],
)
def test_unreadable_bodies_get_4xx_json(client, body, headers, status):
    assert_error(client.simulate_post("/register", body=body, headers=headers), status)


def test_login_failures_look_the_same(client):
    register(client)
    wrong_password = assert_error(login(client, password="wrong password"), 401)
    unknown_user = assert_error(login(client, username="nobody"), 401)
    assert wrong_password == unknown_user


def test_unknown_route_and_wrong_method(client):
    assert_error(client.simulate_get("/nope"), 404)
    assert_error(client.simulate_delete("/task"), 405)
    assert_error(client.simulate_get("/register"), 405)


def test_task_lifecycle_as_seen_by_the_api(client, db, clock):
    token = token_for(client)
    response = post(client, "/task", {"code": "print(6*7)"}, headers=auth(token))
    assert response.status_code == 201
    task_id = response.json["task_id"]
    assert response.json == {"task_id": task_id, "status": "queued"}
    assert response.headers["location"] == f"/status/{task_id}"

    status = client.simulate_get(f"/status/{task_id}", headers=auth(token))
    assert status.status_code == 200
    assert status.json == {
        "task_id": task_id,
        "status": "queued",
        "language": "python",
        "created_at": "2030-01-02T03:04:05.000Z",
        "started_at": None,
        "finished_at": None,
        "attempts": 0,
    }
    pending = client.simulate_get(f"/result/{task_id}", headers=auth(token))
    assert pending.status_code == 202
    assert pending.json == {"task_id": task_id, "status": "queued"}
    assert pending.headers["retry-after"] == "1"

    # A worker's view of the same task, through the same store.
    store = DeliveryStore(db)
    clock.now += timedelta(seconds=1)
    _, claimed = store.claim(uuid.UUID(task_id), uuid.uuid4(), clock(), 3, 10)
    assert claimed is not None and claimed.code == b"print(6*7)"
    running = client.simulate_get(f"/status/{task_id}", headers=auth(token)).json
    assert running["status"] == "running"
    assert running["started_at"] == "2030-01-02T03:04:06.000Z"
    assert client.simulate_get(f"/result/{task_id}", headers=auth(token)).status_code == 202

    clock.now += timedelta(seconds=1)
    outcome = RunOutcome(
        status=TaskStatus.SUCCEEDED,
        exit_code=0,
        stdout=b"42\n\xff\x00",
        stderr=b"",
        duration_ms=180,
    )
    assert store.finish(claimed.id, claimed.attempt, outcome, clock())
    result = client.simulate_get(f"/result/{task_id}", headers=auth(token))
    assert result.status_code == 200
    assert result.json["status"] == "succeeded"
    assert result.json["exit_code"] == 0
    assert result.json["stdout"] == "42\n\ufffd\x00"
    assert result.json["stdout_truncated"] is False
    assert result.json["duration_ms"] == 180
    assert result.json["timeout"] == 10 and result.json["memory_mb"] == 256
    finished = client.simulate_get(f"/status/{task_id}", headers=auth(token)).json
    assert finished["finished_at"] == "2030-01-02T03:04:07.000Z"


def test_tasks_are_private(client):
    ada = token_for(client, "ada")
    bob = token_for(client, "bob")
    task_id = post(client, "/task", {"code": "1"}, headers=auth(ada)).json["task_id"]
    for path in (f"/status/{task_id}", f"/result/{task_id}"):
        assert client.simulate_get(path, headers=auth(ada)).status_code in (200, 202)
        foreign = assert_error(client.simulate_get(path, headers=auth(bob)), 404)
        unknown = assert_error(
            client.simulate_get(f"/status/{uuid.uuid4()}", headers=auth(bob)), 404
        )
        assert foreign == unknown
        assert_error(
            client.simulate_get(path.replace(task_id, "not-a-uuid"), headers=auth(ada)), 404
        )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"code": 42}, 400),
        ({"code": ""}, 400),
        ({"code": "1", "stdin": None}, 400),
        ({"code": "1", "language": "cobol"}, 400),
        ({"code": "1", "language": 7}, 400),
        ({"code": "1", "timeout": 0}, 400),
        ({"code": "1", "timeout": 61}, 400),
        ({"code": "1", "timeout": "5"}, 400),
        ({"code": "1", "timeout": 2.5}, 400),
        ({"code": "1", "timeout": True}, 400),
        ({"code": "1", "memory_mb": 8}, 400),
        ({"code": "1", "memory_mb": 4096}, 400),
        ({"code": "1", "stdin": ["a"]}, 400),
        ({"code": "\ud83d"}, 400),
        ({"code": "1", "priority": 1}, 400),
        ({"code": "x" * (64 * 1024 + 1)}, 413),
        ({"code": "1", "stdin": "x" * (1024 * 1024 + 1)}, 413),
        (["print(1)"], 400),
    ],
)
def test_bad_task_bodies(client, db, body, status):
    token = token_for(client)
    error = assert_error(post(client, "/task", body, headers=auth(token)), status)
    assert set(error) == {"title", "description"}  # no task id or status: nothing was made
    assert tasks_of(db, _claims(token)["sub"]) == []


class UnreadableBody(io.RawIOBase):
    """A request body that counts attempts to read it and fails them: it is never sent."""

    def __init__(self):
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.reads += 1
        raise OSError("the client never sent this body")


def test_oversized_body_is_refused_before_it_is_read(client):
    token = token_for(client)
    # Only the header claims a gigabyte; a server that read the body (Falcon's JSON parsing, or
    # draining it after an error) would touch the stream, which counts the attempt and fails.
    body = UnreadableBody()
    response = client.simulate_post(
        "/task",
        headers={**auth(token), "Content-Type": "application/json"},
        extras={"wsgi.input": body, "CONTENT_LENGTH": str(2**30)},
    )
    assert_error(response, 413)
    assert body.reads == 0


def test_task_options_are_kept(client, db, clock):
    token = token_for(client)
    # None of these is a default (python, no stdin, 10 s, 256 MiB).
    body = {
        "code": "echo hi",
        "language": "bash",
        "stdin": "x\x00y",
        "timeout": 60,
        "memory_mb": 64,
    }
    response = post(client, "/task", body, headers=auth(token))
    assert response.status_code == 201
    task_id = response.json["task_id"]
    status = client.simulate_get(f"/status/{task_id}", headers=auth(token))
    assert status.json["language"] == "bash"

    # The API never shows stdin: the stored row is what the worker will run.
    (row,) = tasks_of(db, _claims(token)["sub"])
    assert (
        str(row["id"]),
        row["language"],
        bytes(row["code"]),
        bytes(row["stdin"]),
        row["timeout_seconds"],
        row["memory_mb"],
    ) == (task_id, "bash", b"echo hi", b"x\x00y", 60, 64)

    # The limits show in the result once the task has run under them.
    store = DeliveryStore(db)
    _, claimed = store.claim(uuid.UUID(task_id), uuid.uuid4(), clock(), 3, 10)
    assert (claimed.stdin, claimed.timeout_seconds, claimed.memory_mb) == (b"x\x00y", 60, 64)
    done = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"hi\n")
    assert store.finish(claimed.id, claimed.attempt, done, clock())
    result = client.simulate_get(f"/result/{task_id}", headers=auth(token))
    assert result.status_code == 200
    assert (result.json["timeout"], result.json["memory_mb"]) == (60, 64)


def tasks_of(db, user_id: str) -> list[dict]:
    with db.transaction() as cursor:
        cursor.execute(
            "SELECT id, language, code, stdin, timeout_seconds, memory_mb FROM tasks"
            " WHERE user_id = %s",
            (user_id,),
        )
        return cursor.fetchall()


def _claims(token: str) -> dict:
    # The fixed test clock is in the future; check the signature, not the times.
    return jwt.decode(
        token,
        TEST_JWT_SECRET,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_iat": False},
    )


def _forged(claims: dict, key: str = TEST_JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _unsigned(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    "header_for",
    [
        lambda good, claims: None,
        lambda good, claims: "Bearer",
        lambda good, claims: f"Basic {good}",
        lambda good, claims: "Bearer not.a.token",
        lambda good, claims: f"Bearer {good[:-4]}AAAA",
        lambda good, claims: f"Bearer {_unsigned(claims)}",
        lambda good, claims: f"Bearer {_forged(claims, key='another-secret-of-enough-length-000')}",
        lambda good, claims: f"Bearer {_forged({**claims, 'exp': claims['iat'] - 1})}",
        lambda good, claims: f"Bearer {_forged({'sub': claims['sub'], 'iat': claims['iat']})}",
        lambda good, claims: f"Bearer {_forged({**claims, 'sub': 'nobody'})}",
    ],
    ids=[
        "missing",
        "empty",
        "wrong-scheme",
        "malformed",
        "bad-signature",
        "alg-none",
        "other-key",
        "expired",
        "no-exp",
        "bad-sub",
    ],
)
def test_bad_tokens_get_401_with_challenge(client, header_for):
    good = token_for(client)
    claims = _claims(good)
    header = header_for(good, claims)
    headers = {"Authorization": header} if header else {}
    for response in (
        post(client, "/task", {"code": "1"}, headers=headers),
        client.simulate_get(f"/status/{uuid.uuid4()}", headers=headers),
        client.simulate_get(f"/result/{uuid.uuid4()}", headers=headers),
    ):
        assert_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_token_expires_by_the_injected_clock(client, clock):
    token = token_for(client)
    assert post(client, "/task", {"code": "1"}, headers=auth(token)).status_code == 201
    clock.now += timedelta(seconds=3600)
    assert_error(post(client, "/task", {"code": "1"}, headers=auth(token)), 401)


def test_broker_down_gives_503_and_no_queued_task(config, db, hasher, clock):
    # A real publisher aimed at a port where no broker listens.
    dead_broker = Publisher("amqp://guest:guest@127.0.0.1:1/%2F", config.queue_name, 1.0)
    app = create_app(
        config, Collaborators(db=db, publisher=dead_broker, hasher=hasher, clock=clock)
    )
    from falcon import testing

    client = testing.TestClient(app)
    token = token_for(client)
    response = post(client, "/task", {"code": "print(1)"}, headers=auth(token))
    body = assert_error(response, 503)
    assert "127.0.0.1" not in body["description"]  # details go to the log, not the client
    with db.transaction() as cursor:
        cursor.execute(
            "SELECT status, error FROM tasks WHERE user_id = %s", (_claims(token)["sub"],)
        )
        rows = cursor.fetchall()
    assert len(rows) == 1
    assert rows[0]["status"] == "error"
    assert "never queued" in rows[0]["error"]


def test_languages_and_docs(client, db):
    with db.transaction() as cursor:  # workers of other tests may have reported; rolled back
        cursor.execute("DELETE FROM language_versions")
    languages = client.simulate_get("/languages").json["languages"]
    assert {entry["name"] for entry in languages} == {"python", "bash", "python-data"}
    # Each language's own default memory: python-data's is larger.
    assert {entry["name"]: entry["default_memory_mb"] for entry in languages} == {
        "python": 256,
        "bash": 256,
        "python-data": 512,
    }
    assert all(entry["version"] is None for entry in languages)  # no worker has reported yet
    LanguageVersionStore(db).report("python", "some-image", "3.99.1")
    languages = client.simulate_get("/languages").json["languages"]
    assert {entry["name"]: entry["version"] for entry in languages} == {
        "python": "3.99.1",
        "bash": None,
        "python-data": None,
    }
    assert client.simulate_get("/openapi.yaml").text.startswith("openapi:")
    assert client.simulate_get("/openapi.json").json["info"]["title"] == "Task Service"
    redirect = client.simulate_get("/swagger")
    assert redirect.status_code == 301 and redirect.headers["location"] == "/swagger/"
    page = client.simulate_get("/swagger/")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert client.simulate_get("/swagger/swagger-ui-bundle.js").status_code == 200
    assert_error(client.simulate_get("/swagger/..%2Fopenapi.yaml"), 404)


def test_idempotency_key(client):
    token = token_for(client)
    headers = {**auth(token), "Idempotency-Key": "order-42"}
    first = post(client, "/task", {"code": "print(1)"}, headers)
    assert first.status_code == 201
    again = post(client, "/task", {"code": "print(1)", "language": "python"}, headers)
    assert again.status_code == 200
    assert again.json["task_id"] == first.json["task_id"]
    assert again.headers["location"] == first.headers["location"]

    assert_error(post(client, "/task", {"code": "print(2)"}, headers), 422)
    other_key = {**auth(token), "Idempotency-Key": "order-43"}
    assert post(client, "/task", {"code": "print(2)"}, other_key).status_code == 201


@pytest.mark.parametrize("key", ["", "a" * 256, "with space", "tab\tkey", "ключ"])
def test_bad_idempotency_keys(client, key):
    token = token_for(client)
    headers = {**auth(token), "Idempotency-Key": key}
    assert_error(post(client, "/task", {"code": "print(1)"}, headers), 400)
