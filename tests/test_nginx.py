"""deploy/nginx.conf in a real nginx, in front of a real API (gunicorn) on loopback ports.

The file is the one Docker Compose mounts; here it is rendered with the loopback addresses of
this run (nginx's listen port, gunicorn's address, a log file of the test's own) and wrapped in
a minimal main configuration. nginx comes from Debian's nginx-light (scripts/ensure-nginx.sh,
run by `make test`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import TEST_JWT_SECRET
from tests.service import ROOT, ApiUser, free_port, running_service, wait_for_http

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
SPEC = ROOT / "openapi.yaml"
GUNICORN_CONF = ROOT / "src" / "taskservice" / "gunicorn_conf.py"


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    assert found, "nginx is not installed; run scripts/ensure-nginx.sh (make test does)"
    return found


def render(site: str, listen_port: int, upstream: str, logs: Path) -> str:
    """deploy/nginx.conf with this run's addresses; fails if a line it replaces is gone."""
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{listen_port};",
        "server api:8000;": f"server {upstream};",
        "access_log /var/log/nginx/access.log": f"access_log {logs}/access.log",
    }
    for old, new in replacements.items():
        # Directives only: the comments quote some of these lines too.
        site, count = re.subn(rf"^(\s*){re.escape(old)}", rf"\g<1>{new}", site, flags=re.M)
        assert count == 1, f"deploy/nginx.conf no longer has {old!r} once"
    return site


def main_conf(prefix: Path) -> str:
    # As root, nginx's workers would switch to `nobody`, who cannot enter the test's directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n{temp}\n    default_type application/octet-stream;\n"
        f"    include {prefix}/taskservice.conf;\n}}\n"
    )


@pytest.fixture(scope="module")
def api(config, tmp_path_factory):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path_factory.mktemp("nginx-api"),
        QUEUE_NAME=f"{config.queue_name}.nginx",
    ) as (base, _api, _worker):
        yield base


def configure(prefix: Path, upstream: str) -> Path:
    port = free_port()
    (prefix / "taskservice.conf").write_text(render(NGINX_CONF.read_text(), port, upstream, prefix))
    (prefix / "nginx.conf").write_text(main_conf(prefix))
    (prefix / "port").write_text(str(port))
    return prefix


@pytest.fixture(scope="module")
def nginx_prefix(api, tmp_path_factory) -> Path:
    return configure(tmp_path_factory.mktemp("nginx"), api.removeprefix("http://"))


def run_nginx(prefix: Path, *args: str) -> subprocess.CompletedProcess:
    command = [nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def serving(prefix: Path, status: int = 200) -> Iterator[str]:
    """nginx on the configuration in ``prefix``, up; yields its base URL."""
    process = subprocess.Popen(
        [nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{(prefix / 'port').read_text()}"
    try:
        error_log = prefix / "error.log"
        wait_for_http(
            base, lambda: process.poll() is None, lambda: error_log.read_text(), 30, status
        )
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def nginx(nginx_prefix):
    with serving(nginx_prefix) as base:
        yield base


def test_the_configuration_passes_nginx_t(nginx_prefix):
    checked = run_nginx(nginx_prefix, "-t")
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def assert_json_error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"title", "description"} and all(body.values()), body
    return body


def test_the_api_answers_through_nginx(nginx):
    user = ApiUser(nginx)
    result = user.run("print(6*7)")
    assert result["status"] == "succeeded" and result["stdout"] == "42\n"
    assert_json_error(requests.get(f"{nginx}/metrics", timeout=10), 404)


def test_the_playground_page_comes_through_nginx_whole(nginx):
    """The page, its editor and its policy pass unchanged; its API calls are same-origin."""
    redirect = requests.get(f"{nginx}/playground", allow_redirects=False, timeout=10)
    assert redirect.status_code == 301 and redirect.headers["Location"] == "/playground/"
    page = requests.get(f"{nginx}/playground/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    editor = requests.get(f"{nginx}/playground/editor.js", timeout=10)
    assert editor.headers["Content-Type"].startswith("text/javascript")
    assert editor.content == (ROOT / "static" / "playground" / "editor.js").read_bytes()


def test_logins_past_the_burst_get_a_json_429(nginx):
    """One address may try a few logins at once, then one every few seconds: brute force is
    slowed at the edge, before gunicorn spends a bcrypt hash on each guess."""
    body = {"username": "nobody-here", "password": "wrong password"}
    answers = [requests.post(f"{nginx}/login", json=body, timeout=10) for _ in range(12)]
    statuses = [answer.status_code for answer in answers]
    assert statuses[0] == 401, statuses  # the API's own answer: unknown user
    assert 429 in statuses, statuses
    refused = answers[statuses.index(429)]
    assert assert_json_error(refused, 429)["title"] == "Too many requests"
    assert int(refused.headers["Retry-After"]) > 0
    # /register counts against the same budget; other routes do not.
    assert_json_error(requests.post(f"{nginx}/register", json=body, timeout=10), 429)
    assert requests.get(f"{nginx}/", timeout=10).status_code == 200


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[unit]


def test_nginx_lets_go_of_idle_upstream_connections_before_gunicorn_does():
    """Otherwise nginx may send a request on a connection gunicorn is closing: a 502 for a
    POST, which nginx does not retry."""
    upstream = re.search(r"upstream taskservice_api \{(.*?)\}", NGINX_CONF.read_text(), re.S)
    nginx_idle = re.search(r"^\s*keepalive_timeout (\S+);", upstream.group(1), re.M)
    gunicorn_idle = re.search(r"^keepalive = (\d+)$", GUNICORN_CONF.read_text(), re.M)
    assert nginx_idle and gunicorn_idle, "keepalive_timeout or gunicorn's keepalive not found"
    assert _seconds(nginx_idle.group(1)) < int(gunicorn_idle.group(1))


def test_slow_clients_are_timed_out():
    conf = NGINX_CONF.read_text()
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        found = re.search(rf"^\s*{directive} (\S+);", conf, re.M)
        assert found, f"{directive} is not set"
        assert 0 < _seconds(found.group(1)) <= 30


# --- nginx's own answers, as openapi.yaml documents them ---------------------------------------


def nginx_own_answers() -> dict[int, dict]:
    """Status -> JSON body of each answer nginx makes itself (its ``return`` directives: the
    locations its error_page directives lead to, and /metrics)."""
    conf = NGINX_CONF.read_text()
    bodies = {
        int(status): json.loads(body)
        for status, body in re.findall(r"^\s*return (\d{3}) '(.*)';$", conf, re.M)
    }
    # Each error_page leads to a location that answers with one of those, not nginx's page.
    for codes, name in re.findall(r"^\s*error_page ([\d ]+) = (@\w+);", conf, re.M):
        location = re.search(rf"location {name} \{{[^}}]*?return (\d{{3}}) '", conf)
        assert location, f"error_page {codes} leads to {name}, which returns no JSON"
    assert bodies, "no return found in deploy/nginx.conf"
    return bodies


def _response(spec: dict, response: dict) -> dict:
    while "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response


def test_every_answer_of_nginx_is_json_and_documented_for_every_operation():
    spec = yaml.safe_load(SPEC.read_text())
    text = SPEC.read_text()
    answers = nginx_own_answers()
    assert {413, 429, 503, 404} <= set(answers), answers
    for status, body in answers.items():
        assert set(body) == {"title", "description"} and all(body.values()), body
        # Its words are in the spec (an example, or the description of the response).
        assert body["description"] in text, (status, body)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            responses = operation["responses"]
            if path == "/metrics":  # answered by nginx itself, never passed on
                assert (
                    _response(spec, responses["404"])["content"]["application/json"]["example"]
                    == answers[404]
                )
                continue
            for status in (429, 503):
                assert str(status) in responses, (method, path, status)
            if "requestBody" in operation:
                assert "413" in responses, (method, path)
    for name, status in (("ProxyUnavailable", 503), ("ProxyTooManyRequests", 429)):
        documented = spec["components"]["responses"][name]
        assert documented["content"]["application/json"]["example"] == answers[status]
        assert "Retry-After" in documented["headers"]


@pytest.fixture(scope="module")
def nginx_without_api(tmp_path_factory):
    """deploy/nginx.conf whose upstream is a port nothing listens on."""
    prefix = configure(tmp_path_factory.mktemp("nginx-alone"), f"127.0.0.1:{free_port()}")

    # GET / is a 503 here, which says nginx is up as well as a 200 would.
    with serving(prefix, status=503) as base:
        yield base


def test_nginx_answers_as_documented_when_the_api_is_away(nginx_without_api):
    spec = yaml.safe_load(SPEC.read_text())
    unavailable = spec["components"]["responses"]["ProxyUnavailable"]
    for method, path in (("GET", "/"), ("POST", "/login"), ("GET", "/task/x/events")):
        answer = requests.request(method, f"{nginx_without_api}{path}", json={}, timeout=10)
        body = assert_json_error(answer, 503)
        assert body == unavailable["content"]["application/json"]["example"], (method, path)
        assert int(answer.headers["Retry-After"]) > 0
    assert_json_error(requests.get(f"{nginx_without_api}/metrics", timeout=10), 404)
    # A body past client_max_body_size is refused on its Content-Length alone.
    host, port = nginx_without_api.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/task")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(65 * 1024 * 1024))
    connection.endheaders()
    answer = connection.getresponse()
    body = json.loads(answer.read())
    connection.close()
    assert (answer.status, answer.getheader("Content-Type")) == (413, "application/json")
    assert body == nginx_own_answers()[413]
