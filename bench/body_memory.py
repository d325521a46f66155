"""What a large request body costs the API process in memory, per byte of the body.

POST /task and POST /judge0/submissions with bodies near their limits, through the real app
(create_app on the real PostgreSQL and RabbitMQ, a database and queue of this run's own), under
tracemalloc: the peak of Python's allocations while the request is answered, divided by the
body's length. The body itself is allocated before the measurement starts, as gunicorn reads it
from the socket in chunks rather than holding it whole. The largest ratio is the factor the
body budget reserves per byte of Content-Length (taskservice.body_budget.BYTES_PER_BODY_BYTE).

Run from the repository root: ``python -m bench.body_memory``.
"""

from __future__ import annotations

import base64
import gc
import json
import tracemalloc

from falcon import testing

from bench.common import private_config, write_results
from taskservice.app import Collaborators, create_app
from taskservice.auth import PasswordHasher
from taskservice.queue import Publisher
from taskservice.store.db import Database

MIB = 2**20


def _bodies() -> dict[str, tuple[str, bytes]]:
    """Bodies near the default limits, each filling its fields with another kind of text."""
    stdin = "x" * MIB
    files_b64 = [
        {
            "name": f"f{i}.bin",
            "content": base64.b64encode(bytes(512 * 1024)).decode(),
            "encoding": "base64",
        }
        for i in range(16)
    ]
    files_text = [{"name": f"f{i}.txt", "content": "y" * 512 * 1024} for i in range(16)]
    files_escaped = [{"name": f"f{i}.txt", "content": "\x01" * 512 * 1024} for i in range(16)]
    code = "print(1)\n" + "#" * (60 * 1024)

    def task(**fields) -> bytes:
        return json.dumps({"code": code, "timeout": 5, **fields}).encode()

    judge0 = {
        "source_code": base64.b64encode(code.encode()).decode(),
        "language_id": 71,
        "stdin": base64.b64encode(stdin.encode()).decode(),
        "expected_output": base64.b64encode(stdin.encode()).decode(),
    }
    return {
        "task, stdin and files in base64": ("/task", task(stdin=stdin, files=files_b64)),
        "task, stdin and files as text": ("/task", task(stdin=stdin, files=files_text)),
        "task, files all \\u0001 escapes": ("/task", task(files=files_escaped)),
        "judge0, base64 texts": (
            "/judge0/submissions?base64_encoded=true",
            json.dumps(judge0).encode(),
        ),
    }


def _peak(client: testing.TestClient, path: str, body: bytes, headers: dict) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    response = client.simulate_post(
        path, body=body, headers={**headers, "Content-Type": "application/json"}
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert response.status_code == 201, response.text
    return peak - before


def main() -> None:
    with private_config() as config:
        db = Database(config.database_url, size=2)
        publisher = Publisher(
            config.amqp_url,
            config.queue_name,
            config.broker_timeout_seconds,
            queue_type=config.queue_type,
        )
        app = create_app(
            config, Collaborators(db=db, publisher=publisher, hasher=PasswordHasher(4))
        )
        client = testing.TestClient(app)
        account = {"username": "bodymemory", "password": "correct horse"}
        assert client.simulate_post("/register", json=account).status_code == 201
        token = client.simulate_post("/login", json=account).json["token"]
        headers = {"Authorization": f"Bearer {token}"}
        results = {}
        for name, (path, body) in _bodies().items():
            _peak(client, path, body, headers)  # warm: imports, connections, caches
            peak = _peak(client, path, body, headers)
            results[name] = {
                "body_bytes": len(body),
                "peak_bytes": peak,
                "peak_per_body_byte": round(peak / len(body), 2),
            }
            print(
                f"{name}: body {len(body) / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB,"
                f" {peak / len(body):.2f} bytes per body byte"
            )
        publisher.close()
        db.close()
    write_results("body_memory", {"requests": results})


if __name__ == "__main__":
    main()
