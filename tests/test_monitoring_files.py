"""The monitoring files of the deployment: Prometheus's scrape configuration matches the compose
services, and every query of the Grafana dashboard parses (promtool) and names metrics the
service has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from taskservice.metrics.api import ApiMetrics
from taskservice.metrics.webhooks import DispatcherMetrics
from taskservice.metrics.worker import WorkerMetrics
from tests.service import ROOT

DEPLOY = ROOT / "deploy"


def promtool(*args: str) -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run scripts/ensure-promtool.sh (make test does)"
    checked = subprocess.run([path, *args], capture_output=True, text=True, timeout=60)
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    return output


def served_names() -> set[str]:
    """Every sample name the API, the worker and `taskservice webhooks` expose (histograms with
    their suffixes)."""
    names = set()
    for registry in (ApiMetrics().registry, WorkerMetrics().registry, DispatcherMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names |= {sample.name for sample in family.samples}
            # A family with labels has no samples until one is recorded: its names by type.
            if family.type == "counter":
                names.add(f"{family.name}_total")
            if family.type == "histogram":
                names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana-dashboard.json").read_text())


def queries(dashboard: dict) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_dashboard_queries_name_metrics_the_service_has(dashboard):
    known = served_names()
    assert "taskservice_task_run_seconds_bucket" in known  # the check below can fail
    for title, expr in queries(dashboard):
        used = set(re.findall(r"\btaskservice_[a-z_]+", expr))
        assert used, (title, expr)
        assert used <= known, (title, used - known)


def test_dashboard_has_the_panels_operators_need(dashboard):
    exprs = " ".join(expr for _, expr in queries(dashboard))
    for needed in (
        "max(taskservice_queue_messages)",  # every worker reads the same queue: not a sum
        "histogram_quantile(0.95, sum by (le) (rate(taskservice_task_queue_wait_seconds_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(taskservice_task_run_seconds_bucket",
        "sum by (status) (rate(taskservice_tasks_finished_total",
        "sum by (route) (rate(taskservice_http_requests_total",
        'taskservice_http_requests_total{status=~"5.."}',
        "sum by (dependency) (rate(taskservice_dependency_errors_total",
    ):
        assert needed in exprs, needed
    # Grafana asks which Prometheus on import, rather than assume a data source's name.
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_dashboard_queries_parse(dashboard, tmp_path):
    # promtool parses PromQL in recording rules: one rule per query of the dashboard.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{number}", "expr": expr}
                    for number, (_, expr) in enumerate(queries(dashboard))
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    assert "SUCCESS" in promtool("check", "rules", str(path))
    broken = tmp_path / "broken.yml"
    rules["groups"][0]["rules"][0]["expr"] = "sum by (le (rate(x[5m]))"
    broken.write_text(yaml.safe_dump(rules))
    with pytest.raises(AssertionError, match="parse error"):
        promtool("check", "rules", str(broken))


def test_prometheus_scrapes_the_compose_services():
    assert "SUCCESS" in promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    targets = {
        job["job_name"]: (sd["names"], sd["port"], job.get("metrics_path", "/metrics"))
        for job in scrape
        for sd in job["dns_sd_configs"]
    }
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    api, worker = compose["api"]["environment"], compose["worker"]["environment"]
    webhooks = compose["webhooks"]["environment"]
    assert targets == {
        "taskservice-api": (["api"], int(api["PORT"]), "/metrics"),
        "taskservice-worker": (["worker"], int(worker["WORKER_METRICS_PORT"]), "/metrics"),
        "taskservice-webhooks": (["webhooks"], int(webhooks["WORKER_METRICS_PORT"]), "/metrics"),
    }
    # Listening on the containers' networks, the one Prometheus shares internal only.
    assert worker["WORKER_METRICS_HOST"] == webhooks["WORKER_METRICS_HOST"] == "0.0.0.0"
    assert "ports" not in compose["worker"] and "ports" not in compose["prometheus"]
    assert "ports" not in compose["webhooks"]
    assert set(compose["prometheus"]["networks"]) & set(compose["webhooks"]["networks"])
    prometheus = compose["prometheus"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    shared = set(prometheus["networks"]) & set(compose["api"]["networks"])
    assert shared & set(compose["worker"]["networks"]), "Prometheus reaches neither"


def test_the_readme_table_lists_every_metric_of_the_service():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| metric | type, labels |") :].split("\n\n", 1)[0]
    registries = (ApiMetrics().registry, WorkerMetrics().registry, DispatcherMetrics().registry)
    names = {
        family.name + ("_total" if family.type == "counter" else "")
        for registry in registries
        for family in registry.collect()
        if family.name.startswith("taskservice_")
    }
    assert "taskservice_webhook_attempts_total" in names  # the check below can fail
    assert {name for name in names if f"| `{name}` |" not in table} == set()
