"""The deployment files for several hosts (deploy/compose.worker.yml, deploy/compose.api.yml),
as Compose itself reads them (`config`, which starts nothing): what each host runs, what it is
told, and what it refuses to start without."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_config import variables_read

ROOT = Path(__file__).resolve().parents[1]
WORKER_FILE = ROOT / "deploy" / "compose.worker.yml"
API_FILE = ROOT / "deploy" / "compose.api.yml"
# The shared services as a host's environment names them: the RabbitMQ cluster's three nodes.
SHARED = {
    "DATABASE_URL": "postgresql://taskservice:pw@db.internal:5432/taskservice",
    "AMQP_URL": "amqp://taskservice:pw@rabbit-1:5672/%2F,amqp://taskservice:pw@rabbit-2:5672/%2F,"
    "amqp://taskservice:pw@rabbit-3:5672/%2F",
    "REDIS_URL": "redis://redis.internal:6379/0",
}
JWT = {"JWT_SECRET": "0123456789abcdef0123456789abcdef"}


def compose_command() -> list[str]:
    """`docker compose` (v2), else docker-compose (scripts/ensure-compose.sh installs it)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    assert found, "no Compose command: run scripts/ensure-compose.sh (make test does)"
    return [found]


def compose_config(file: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Only the variables given: none of the machine's settings may leak into the files.
    clean = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    return subprocess.run(
        [*compose_command(), "-f", str(file), "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


_parsed: dict[Path, dict] = {}


def services(file: Path) -> dict:
    """The file's services as Compose reads them with the shared services and the secret set;
    read once (a Compose command takes a few seconds on a busy machine)."""
    if file not in _parsed:
        done = compose_config(file, {**SHARED, **JWT})
        assert done.returncode == 0, done.stderr
        _parsed[file] = yaml.safe_load(done.stdout)["services"]
    return _parsed[file]


def volume_sources(service: dict) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        sources.append(volume["source"] if isinstance(volume, dict) else volume.split(":")[0])
    return sources


def published(service: dict) -> list[str]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(f"{port.get('host_ip', '')}:{port['published']}:{port['target']}")
        else:
            ports.append(port.removesuffix("/tcp"))
    return ports


def test_a_worker_host_runs_the_worker_and_its_socket_proxy_on_the_shared_services():
    found = services(WORKER_FILE)
    assert set(found) == {"worker", "docker-socket-proxy"}
    worker, proxy = found["worker"], found["docker-socket-proxy"]
    assert worker["command"] == ["worker"]
    environment = worker["environment"]
    assert {name: environment[name] for name in SHARED} == SHARED  # every node, as given
    assert environment["DOCKER_HOST"] == "tcp://docker-socket-proxy:2375"
    assert environment["WEBHOOK_CONCURRENCY"] == "0"
    # The engine's socket reaches the proxy alone, with the proxy's rules from the repository.
    assert not any("docker.sock" in source for source in volume_sources(worker))
    assert "/var/run/docker.sock" in volume_sources(proxy)
    assert str(ROOT / "deploy" / "docker-socket-proxy.cfg") in volume_sources(proxy)
    assert set(proxy["networks"]) == {"docker-api"}
    # Nothing published but the metrics, and those on loopback unless asked otherwise.
    assert published(worker) == ["127.0.0.1:9464:9464"]
    assert "ports" not in proxy
    assert worker["build"]["context"] == str(ROOT)


def test_an_api_host_runs_the_api_behind_nginx_and_the_webhooks():
    found = services(API_FILE)
    assert {"api", "nginx", "webhooks"} <= set(found)
    api, nginx = found["api"], found["nginx"]
    assert {name: api["environment"][name] for name in SHARED} == SHARED
    assert api["environment"]["JWT_SECRET"] == JWT["JWT_SECRET"]
    assert str(ROOT / "deploy" / "nginx.conf") in volume_sources(nginx)
    assert published(nginx) == ["0.0.0.0:8080:80"]
    assert published(api) == ["127.0.0.1:8000:8000"]  # its /metrics, on loopback by default
    # The migrations run once, by hand: a profile keeps them out of `up`.
    assert found.get("migrate", {}).get("profiles", ["migrate"]) == ["migrate"]


@pytest.mark.parametrize(
    ("file", "missing"),
    [(WORKER_FILE, "AMQP_URL"), (API_FILE, "DATABASE_URL"), (API_FILE, "JWT_SECRET")],
)
def test_a_host_refuses_to_start_without_what_it_must_be_told(file, missing):
    env = {name: value for name, value in {**SHARED, **JWT}.items() if name != missing}
    done = compose_config(file, env)
    assert done.returncode != 0
    assert f"set {missing}" in done.stderr


def test_the_two_hosts_pass_every_setting_through():
    worker = services(WORKER_FILE)["worker"]["environment"]
    api = services(API_FILE)["api"]["environment"]
    missing = variables_read() - set(worker) - set(api)
    assert not missing, f"pass through in the host files' x-app-environment: {sorted(missing)}"
    assert "JWT_SECRET" not in worker  # a worker host cannot sign a login token


def test_the_host_files_pass_the_settings_docker_compose_yml_passes():
    # The same list as the single-host file, so a setting added there is not forgotten here.
    def passed(path: Path) -> set[str]:
        return set(yaml.safe_load(path.read_text())["x-app-environment"])

    single_host = passed(ROOT / "docker-compose.yml")
    assert passed(WORKER_FILE) == single_host
    assert passed(API_FILE) == single_host
