"""Files in and artifacts out, through the HTTP API and the production Database (as
test_api_real_db.py does): the checks of `files`, their storage and claim, artifacts stored
with the outcome (and not with a refused one), listed by GET /result, cached without their
bytes, served by the artifact route, and deleted with the task's data.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.model import RunOutcome, TaskFile, TaskStatus
from taskservice.redis_client import redis_client
from taskservice.status_cache import StatusCache, entry_key
from taskservice.store.delivery import DeliveryStore
from taskservice.store.retention import RetentionStore
from tests.test_api_real_db import committed, logged_in, post

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.fixture
def files_config(config):
    return replace(config, max_files=4, max_files_bytes=1000)


@pytest.fixture
def database(config):
    from taskservice.store.db import Database

    database = Database(config.database_url, size=2)
    yield database
    database.close()


@pytest.fixture
def redis(config):
    client = redis_client(config.redis_url)
    assert client.ping()
    yield client
    client.close()


@pytest.fixture
def cache(redis):
    return StatusCache(redis, ttl_seconds=3600)


@pytest.fixture
def client(files_config, database, publisher, hasher, cache) -> testing.TestClient:
    collaborators = Collaborators(db=database, publisher=publisher, hasher=hasher, cache=cache)
    return testing.TestClient(create_app(files_config, collaborators))


def submit(client, headers, files, **fields):
    return post(client, "/task", {"code": "print(1)", "files": files, **fields}, headers)


BAD_NAMES = {
    "absolute": "/etc/passwd",
    "parent": "../escape",
    "parent in a folder": "a/../b",
    "dot": "./a",
    "two folders": "a/b/c",
    "empty part": "a//b",
    "trailing slash": "a/",
    "empty": "",
    "NUL": "nul\x00here",
    "line break": "two\nlines",
    "256 bytes": "n" * 256,
    "256 bytes in UTF-8": "n" * 254 + "é",
    "the code file": "main.py",
    "a folder named as the code file": "main.py/x",
    "out": "out",
    "in out": "out/forged.png",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_every_bad_name_is_a_400_naming_the_file(client, config, name):
    user_id, headers = logged_in(client)
    response = submit(client, headers, [{"name": name, "content": "x"}])
    assert response.status_code == 400, response.text
    assert set(response.json) == {"title", "description"}
    shown = repr(name[:80])[1:-1][:30]
    assert shown in response.json["description"], response.json
    assert committed(config, "SELECT id FROM tasks WHERE user_id = %s", user_id) == []


CLASHES = {
    "twice": ["a.csv", "a.csv"],
    "file and folder": ["data", "data/a.csv"],
    "folder and file": ["data/a.csv", "data"],
}


@pytest.mark.parametrize("names", CLASHES.values(), ids=CLASHES.keys())
def test_clashing_names_are_400(client, names):
    _, headers = logged_in(client)
    response = submit(client, headers, [{"name": n, "content": ""} for n in names])
    assert response.status_code == 400, response.text
    assert "'data'" in response.json["description"] or "'a.csv'" in response.json["description"]


BAD_FILES = {
    "not an array": {"name": "a", "content": "x"},
    "an item that is a string": ["a.csv"],
    "unknown encoding": [{"name": "a", "content": "x", "encoding": "latin1"}],
    "bad base64": [{"name": "a", "content": "not base64!", "encoding": "base64"}],
    "unknown field": [{"name": "a", "content": "x", "mode": "0755"}],
    "content a number": [{"name": "a", "content": 7}],
}


@pytest.mark.parametrize("files", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_malformed_files_are_400(client, files):
    _, headers = logged_in(client)
    response = submit(client, headers, files)
    assert response.status_code == 400, response.text
    assert response.json["title"] == "Invalid request"


def test_too_many_files_are_400_too_many_bytes_413(client, config):
    user_id, headers = logged_in(client)
    five = [{"name": f"f{i}.txt", "content": "x"} for i in range(5)]
    assert submit(client, headers, five).status_code == 400
    big = [{"name": "a", "content": "x" * 600}, {"name": "b", "content": "y" * 401}]
    refused = submit(client, headers, big)
    assert refused.status_code == 413 and "1000 bytes" in refused.json["description"]
    # base64 counts decoded: 999 bytes are 1332 characters of base64, and fit.
    fits = [
        {"name": "b.bin", "content": base64.b64encode(b"z" * 999).decode(), "encoding": "base64"}
    ]
    assert submit(client, headers, fits).status_code == 201
    assert len(committed(config, "SELECT id FROM tasks WHERE user_id = %s", user_id)) == 1


def test_files_are_stored_in_order_and_claimed_with_the_task(client, config, database):
    _, headers = logged_in(client)
    files = [
        {"name": "z.csv", "content": "x,y\n1,2\n"},
        {
            "name": "data/blob.bin",
            "content": base64.b64encode(b"\x00\xff\x10").decode(),
            "encoding": "base64",
        },
        {"name": "é.txt", "content": "ünï", "encoding": "utf8"},
    ]
    response = submit(client, headers, files)
    assert response.status_code == 201, response.text
    task_id = uuid.UUID(response.json["task_id"])
    rows = committed(
        config, "SELECT name, content FROM task_files WHERE task_id = %s ORDER BY position", task_id
    )
    expected = (
        TaskFile("z.csv", b"x,y\n1,2\n"),
        TaskFile("data/blob.bin", b"\x00\xff\x10"),
        TaskFile("é.txt", "ünï".encode()),
    )
    assert tuple(TaskFile(r["name"], bytes(r["content"])) for r in rows) == expected
    _, claimed = DeliveryStore(database).claim(task_id, uuid.uuid4(), datetime.now(UTC), 3, 10)
    assert claimed is not None and claimed.files == expected


def test_idempotent_repeats_compare_the_files(client):
    _, headers = logged_in(client)
    headers = {**headers, "Idempotency-Key": f"files-{uuid.uuid4()}"}
    files = [{"name": "a.csv", "content": "1"}]
    first = submit(client, headers, files)
    assert first.status_code == 201, first.text
    same = submit(client, headers, [{"name": "a.csv", "content": "MQ==", "encoding": "base64"}])
    assert (same.status_code, same.json["task_id"]) == (200, first.json["task_id"])
    assert submit(client, headers, [{"name": "a.csv", "content": "2"}]).status_code == 422
    assert submit(client, headers, [{"name": "b.csv", "content": "1"}]).status_code == 422
    assert post(client, "/task", {"code": "print(1)"}, headers).status_code == 422


def run_to_the_end(database, cache, task_id, outcome):
    store = DeliveryStore(database, changes=cache)
    _, claimed = store.claim(task_id, uuid.uuid4(), datetime.now(UTC), 3, 10)
    assert claimed is not None
    return store, claimed, store.finish(claimed.id, claimed.attempt, outcome, datetime.now(UTC))


def finished_with_artifacts(client, database, cache, headers, artifacts, truncated=False):
    task_id = uuid.UUID(post(client, "/task", {"code": "print(1)"}, headers).json["task_id"])
    outcome = RunOutcome(
        status=TaskStatus.SUCCEEDED,
        exit_code=0,
        stdout=b"done\n",
        duration_ms=5,
        artifacts=tuple(artifacts),
        artifacts_truncated=truncated,
    )
    _, _, stored = run_to_the_end(database, cache, task_id, outcome)
    assert stored is TaskStatus.SUCCEEDED
    return task_id


def test_result_lists_artifacts_and_the_cache_keeps_no_bytes(client, database, cache, redis):
    _, headers = logged_in(client)
    artifacts = [TaskFile("plot.png", PNG), TaskFile("tables/a.csv", b"x\n1\n")]
    task_id = finished_with_artifacts(client, database, cache, headers, artifacts, truncated=True)
    result = client.simulate_get(f"/result/{task_id}", headers=headers)
    assert result.status_code == 200, result.text
    assert result.json["artifacts_truncated"] is True
    assert result.json["artifacts"] == [
        {
            "name": "plot.png",
            "size": len(PNG),
            "content_type": "image/png",
            "sha256": hashlib.sha256(PNG).hexdigest(),
            "url": f"/result/{task_id}/artifacts/plot.png",
        },
        {
            "name": "tables/a.csv",
            "size": 4,
            "content_type": "text/csv; charset=utf-8",
            "sha256": hashlib.sha256(b"x\n1\n").hexdigest(),
            "url": f"/result/{task_id}/artifacts/tables/a.csv",
        },
    ]
    # The finish wrote the body through to Redis: the list is there, the bytes are not.
    cached = redis.hget(entry_key(task_id), "r")
    assert json.loads(cached)["artifacts"] == result.json["artifacts"]
    assert PNG[8:40] not in cached and base64.b64encode(PNG)[:40] not in cached
    # Read back from PostgreSQL (the cache emptied), the same body.
    redis.delete(entry_key(task_id))
    assert client.simulate_get(f"/result/{task_id}", headers=headers).json == result.json


def test_a_result_without_artifacts_is_unchanged(client, database, cache):
    _, headers = logged_in(client)
    task_id = finished_with_artifacts(client, database, cache, headers, [])
    body = client.simulate_get(f"/result/{task_id}", headers=headers).json
    assert "artifacts" not in body and "artifacts_truncated" not in body


def test_a_refused_finish_stores_no_artifacts(client, config, database, cache):
    _, headers = logged_in(client)
    task_id = uuid.UUID(post(client, "/task", {"code": "print(1)"}, headers).json["task_id"])
    store = DeliveryStore(database, changes=cache)
    _, first = store.claim(task_id, uuid.uuid4(), datetime.now(UTC), 3, 10)
    # Another worker takes the task over (this one is gone: no row in workers).
    _, second = store.claim(task_id, uuid.uuid4(), datetime.now(UTC), 3, 10)
    assert first is not None and second is not None and second.attempt == first.attempt + 1
    late = RunOutcome(
        status=TaskStatus.SUCCEEDED, exit_code=0, artifacts=(TaskFile("late.png", PNG),)
    )
    assert store.finish(task_id, first.attempt, late, datetime.now(UTC)) is None
    assert committed(config, "SELECT name FROM task_artifacts WHERE task_id = %s", task_id) == []
    own = RunOutcome(
        status=TaskStatus.SUCCEEDED, exit_code=0, artifacts=(TaskFile("own.png", PNG),)
    )
    finished_at = datetime.now(UTC)
    assert store.finish(task_id, second.attempt, own, finished_at) is TaskStatus.SUCCEEDED
    # A retry of the same finish (its answer lost) recognises its write and lists the same.
    assert store.finish(task_id, second.attempt, own, finished_at) is TaskStatus.SUCCEEDED
    rows = committed(config, "SELECT name FROM task_artifacts WHERE task_id = %s", task_id)
    assert [row["name"] for row in rows] == ["own.png"]


def test_the_artifact_route(client, database, cache):
    _, headers = logged_in(client)
    _, other = logged_in(client)
    artifacts = [
        TaskFile("plot.png", PNG),
        TaskFile("evil.svg", SVG),
        TaskFile("page.html", b"<script>alert(1)</script>"),
        TaskFile("sub/naïve data.csv", b"a,b\n"),
    ]
    task_id = finished_with_artifacts(client, database, cache, headers, artifacts)
    listed = {
        a["name"]: a["url"]
        for a in client.simulate_get(f"/result/{task_id}", headers=headers).json["artifacts"]
    }
    assert listed["sub/naïve data.csv"] == f"/result/{task_id}/artifacts/sub/na%C3%AFve%20data.csv"

    png = client.simulate_get(listed["plot.png"], headers=headers)
    assert png.status_code == 200
    assert png.content == PNG
    assert png.headers["content-type"] == "image/png"
    assert png.headers["x-content-type-options"] == "nosniff"
    assert png.headers["content-disposition"].startswith("inline;")
    assert "sandbox" in png.headers["content-security-policy"]
    etag = png.headers["etag"]
    assert etag == f'"{hashlib.sha256(PNG).hexdigest()}"'
    again = client.simulate_get(listed["plot.png"], headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""

    for name in ("evil.svg", "page.html"):
        active = client.simulate_get(listed[name], headers=headers)
        assert active.status_code == 200
        assert active.headers["content-disposition"].startswith("attachment;"), name
        assert active.headers["x-content-type-options"] == "nosniff"
    svg = client.simulate_get(listed["evil.svg"], headers=headers)
    assert svg.headers["content-type"] == "image/svg+xml" and svg.content == SVG

    csv = client.simulate_get(listed["sub/naïve data.csv"], headers=headers)
    assert (csv.status_code, csv.content) == (200, b"a,b\n")
    assert "filename*=UTF-8''na%C3%AFve%20data.csv" in csv.headers["content-disposition"]

    # Another user's task, an unknown task, an unknown name, a name no artifact may have: 404.
    foreign = client.simulate_get(listed["plot.png"], headers=other)
    unknown = client.simulate_get(f"/result/{uuid.uuid4()}/artifacts/plot.png", headers=headers)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json == unknown.json
    for path in ("nope.png", "a/b/c", "..", "sub/"):
        missing = client.simulate_get(f"/result/{task_id}/artifacts/{path}", headers=headers)
        assert missing.status_code == 404, path
    nul = client.simulate_get(f"/result/{task_id}/artifacts/a%00b", headers=headers)
    assert nul.status_code == 404
    assert client.simulate_get(listed["plot.png"]).status_code == 401

    # Deleted with the task's data: 410, and the rows are gone.
    assert client.simulate_delete(f"/task/{task_id}", headers=headers).status_code == 204
    gone = client.simulate_get(listed["plot.png"], headers=headers)
    assert gone.status_code == 410 and gone.json["title"] == "Result deleted"


def test_deletion_and_retention_remove_files_and_artifacts(client, config, database, cache):
    _, headers = logged_in(client)
    owned = []
    for _ in range(2):
        response = submit(client, headers, [{"name": "in.csv", "content": "1,2\n"}])
        task_id = uuid.UUID(response.json["task_id"])
        outcome = RunOutcome(
            status=TaskStatus.SUCCEEDED, exit_code=0, artifacts=(TaskFile("o.png", PNG),)
        )
        run_to_the_end(database, cache, task_id, outcome)
        owned.append(task_id)

    def kept(task_id):
        files = committed(config, "SELECT 1 FROM task_files WHERE task_id = %s", task_id)
        made = committed(config, "SELECT 1 FROM task_artifacts WHERE task_id = %s", task_id)
        return len(files), len(made)

    assert [kept(t) for t in owned] == [(1, 1), (1, 1)]
    by_owner, by_retention = owned
    assert client.simulate_delete(f"/task/{by_owner}", headers=headers).status_code == 204
    assert kept(by_owner) == (0, 0) and kept(by_retention) == (1, 1)

    # Finished long ago: the pruning pass takes it (and nothing of the other tests').
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    with database.statement() as cursor:
        cursor.execute("UPDATE tasks SET finished_at = %s WHERE id = %s", (long_ago, by_retention))
    retention = RetentionStore(database, changes=cache)
    cutoff = long_ago + timedelta(days=1)
    while retention.purge_finished_before(cutoff, datetime.now(UTC), 500):
        pass
    assert kept(by_retention) == (0, 0)
    assert client.simulate_get(f"/result/{by_retention}", headers=headers).status_code == 410
    gone = client.simulate_get(f"/result/{by_retention}/artifacts/o.png", headers=headers)
    assert gone.status_code == 410


def test_me_shows_the_file_limits(client, files_config):
    _, headers = logged_in(client)
    limits = client.simulate_get("/me", headers=headers).json["limits"]
    assert (limits["max_files"], limits["max_files_bytes"]) == (4, 1000)
    assert (limits["max_artifacts"], limits["max_artifact_bytes"]) == (
        files_config.max_artifacts,
        files_config.max_artifact_bytes,
    )


def test_the_cached_list_is_in_the_order_postgresql_reads_back(client, database, cache, redis):
    _, headers = logged_in(client)
    names = ["b.txt", "B.txt", "_c.txt", "é.txt", "a b.txt", "a.txt", "Z/z.txt"]
    artifacts = [TaskFile(name, name.encode()) for name in names]
    task_id = finished_with_artifacts(client, database, cache, headers, artifacts)
    cached = client.simulate_get(f"/result/{task_id}", headers=headers).json
    assert [a["name"] for a in cached["artifacts"]] == sorted(names)
    redis.delete(entry_key(task_id))
    assert client.simulate_get(f"/result/{task_id}", headers=headers).json == cached


def test_artifacts_the_service_cannot_serve_are_left_out(client, config, database, cache):
    # What a program that forged the sandbox's output channel might make it send.
    _, headers = logged_in(client)
    artifacts = [
        TaskFile("ok.txt", b"fine"),
        TaskFile("nul\x00.txt", b"x"),
        TaskFile("../up.txt", b"x"),
        TaskFile("a/b/c.txt", b"x"),
        TaskFile("ok.txt", b"again"),
    ]
    task_id = finished_with_artifacts(client, database, cache, headers, artifacts)
    body = client.simulate_get(f"/result/{task_id}", headers=headers).json
    assert [a["name"] for a in body["artifacts"]] == ["ok.txt"]
    assert body["artifacts_truncated"] is True
    served = client.simulate_get(body["artifacts"][0]["url"], headers=headers)
    assert served.content == b"fine"
