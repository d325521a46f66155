"""The image's HEALTHCHECK: is this container's taskservice process able to do its job?

The same image runs the API, the worker and the migrations, so the role is read from the
command line of the container's ``taskservice`` process:

- ``api``: gunicorn answers ``GET /ready`` with 200 (PostgreSQL and RabbitMQ answer it);
- ``worker``: the Docker engine at DOCKER_HOST answers a ping, so sandboxes can be started;
- anything else (``migrate``, a shell): healthy.

Exit status 0 is healthy, 1 unhealthy; the line printed says why (``docker inspect`` shows it).
"""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

from taskservice.config_loader import load_config

ROLES = ("api", "worker", "migrate")


def container_role() -> str:
    for cmdline in sorted(Path("/proc").glob("[0-9]*/cmdline")):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # the process ended while we looked
        for index, arg in enumerate(args):
            if Path(arg).name == "taskservice":
                return next((a for a in args[index + 1 :] if a in ROLES), "other")
    return "none"


def check_api(config) -> str:
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    connection = http.client.HTTPConnection(host, config.port, timeout=5)
    try:
        connection.request("GET", "/ready")
        response = connection.getresponse()
        body = response.read(500).decode(errors="replace")
        if response.status != 200:
            raise RuntimeError(f"GET /ready answered {response.status}: {body}")
    finally:
        connection.close()
    return f"api on {host}:{config.port} is ready: {body}"


def check_worker(config) -> str:
    from taskservice.sandbox import docker_client

    client = docker_client(config.docker_host, timeout=5)
    try:
        client.ping()
    finally:
        client.close()
    return f"Docker engine answers at {config.docker_host}"


def main() -> int:
    role = container_role()
    try:
        config = load_config()
        if role == "api":
            message = check_api(config)
        elif role == "worker":
            message = check_worker(config)
        else:
            message = f"nothing to check for role {role!r}"
    except Exception as exc:
        print(f"unhealthy ({role}): {exc}")
        return 1
    print(f"healthy ({role}): {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
