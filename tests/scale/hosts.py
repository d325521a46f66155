"""The whole many-hosts deployment on one machine, for the scale test.

On this host: a private PostgreSQL and Redis, a three-node RabbitMQ cluster, two API replicas
(gunicorn) behind one nginx. In namespaces of their own: the worker hosts, each one worker
process that reaches PostgreSQL, Redis and every broker node through its link only (the
sandboxes are started on this host's Docker engine, through its socket).

Everything is made under ``RUN_DIR`` and recorded there, under a lock: a run first removes what
one that died left, and removes what it made itself at the end, failed or not.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg2

from taskservice.config import Config
from taskservice.store.migrate import migrate
from tests.private_services import PrivatePostgres, PrivateRedis, _postgres_bin
from tests.scale import netns
from tests.scale.processes import HostProcess, end_recorded, record, run_lock
from tests.scale.rabbit_cluster import RabbitCluster, remove_stale_cluster
from tests.service import TEST_JWT_SECRET, free_port, service_env, wait_for_http
from tests.test_nginx import NGINX_CONF, main_conf, nginx_binary, render

RUN_DIR = Path(tempfile.gettempdir()) / "taskservice-scale"
LOCK = Path(tempfile.gettempdir()) / "taskservice-scale.lock"
QUEUE = "taskservice.scale"
BROKER_NODES = 3
API_REPLICAS = 2
# Fast fault timings, so that a cut-off worker is judged gone within seconds.
TIMINGS = {
    "WORKER_HEARTBEAT_SECONDS": "1",
    "WORKER_LEASE_SECONDS": "5",
    "SWEEP_INTERVAL_SECONDS": "2",
    "BROKER_TIMEOUT_SECONDS": "2",
}
LEASE_SECONDS = float(TIMINGS["WORKER_LEASE_SECONDS"])


@dataclass
class Deployment:
    config: Config
    postgres: PrivatePostgres
    redis: PrivateRedis
    cluster: RabbitCluster
    apis: list[HostProcess] = field(default_factory=list)
    api_bases: list[str] = field(default_factory=list)
    nginx_base: str = ""
    workers: list[HostProcess] = field(default_factory=list)
    hosts: list[netns.TestHost] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # how long each part took to start

    def worker_host(self, worker: HostProcess) -> netns.TestHost:
        return self.hosts[self.workers.index(worker)]

    def restart_postgres(self) -> None:
        self.postgres.stop()
        self.postgres.start()


def _remove_stale() -> None:
    netns.remove_stale()
    end_recorded(RUN_DIR / "pids")
    remove_stale_cluster(RUN_DIR / "rabbit")
    for data in RUN_DIR.glob("taskservice-postgres-*/data"):
        subprocess.run(
            [
                *("runuser", "-u", "postgres", "--", _postgres_bin("pg_ctl")),
                *("-D", str(data), "-m", "immediate", "-w", "stop"),
            ],
            capture_output=True,
            check=False,
        )
    subprocess.run(["rm", "-rf", str(RUN_DIR)], check=True)


def _start_nginx(logs: Path, api_bases: list[str]) -> tuple[str, subprocess.Popen]:
    prefix = RUN_DIR / "nginx"
    prefix.mkdir()
    port = free_port()
    servers = [base.removeprefix("http://") for base in api_bases]
    # deploy/nginx.conf's upstream with one `server` line per replica; nginx takes a replica
    # that refuses connections out of rotation and passes the request to the other.
    upstream = "; server ".join(f"{server} max_fails=1 fail_timeout=5s" for server in servers)
    (prefix / "taskservice.conf").write_text(render(NGINX_CONF.read_text(), port, upstream, logs))
    (prefix / "nginx.conf").write_text(main_conf(prefix))
    process = subprocess.Popen(
        [nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    record(RUN_DIR / "pids", "nginx", process.pid)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base, lambda: process.poll() is None, lambda: (prefix / "error.log").read_text())
    return base, process


def _with_host(url: str, host: str) -> str:
    return url.replace("127.0.0.1", host)


@contextlib.contextmanager
def deployment(base: Config, logs: Path, worker_hosts: int) -> Iterator[Deployment]:
    """The deployment, up; everything is removed at the end, whatever happened."""
    with run_lock(LOCK):
        _remove_stale()
        RUN_DIR.mkdir(mode=0o755)
        records = RUN_DIR / "pids"
        nginx = None
        postgres = redis = cluster = None
        stack: Deployment | None = None
        try:
            netns.create_bridge()
            hosts = [netns.TestHost(f"w{n}", 10 + n) for n in range(1, worker_hosts + 1)]
            began = time.monotonic()
            cluster = RabbitCluster(RUN_DIR / "rabbit", BROKER_NODES, [netns.HOST_ADDRESS])
            cluster_seconds = cluster.start()
            postgres = PrivatePostgres(addresses=(netns.HOST_ADDRESS,), parent=RUN_DIR)
            postgres.start()
            admin = psycopg2.connect(postgres.url())
            admin.autocommit = True
            admin.cursor().execute("CREATE DATABASE taskservice")
            admin.close()
            migrate(postgres.url("taskservice"))
            redis = PrivateRedis(addresses=(netns.HOST_ADDRESS,), parent=RUN_DIR)
            redis.start()
            record(records, "redis", redis.pid)
            config = replace(
                base,
                database_url=postgres.url("taskservice"),
                amqp_url=cluster.urls(),
                redis_url=redis.url,
                queue_name=QUEUE,
            )
            stack = Deployment(config, postgres, redis, cluster, hosts=hosts)
            stack.seconds["broker cluster"] = cluster_seconds
            env = service_env(
                config,
                TEST_JWT_SECRET,
                REDIS_URL=redis.url,
                QUEUE_TYPE="quorum",
                WORKER_CONCURRENCY="2",
                **TIMINGS,
            )
            for n in range(1, API_REPLICAS + 1):
                port = free_port()
                api = HostProcess("api", {**env, "PORT": str(port)}, logs / f"api-{n}.log", records)
                stack.apis.append(api)
                stack.api_bases.append(f"http://127.0.0.1:{port}")
            for api, api_base in zip(stack.apis, stack.api_bases, strict=True):
                wait_for_http(api_base, api.alive, api.log)
            stack.nginx_base, nginx = _start_nginx(logs, stack.api_bases)
            # The worker hosts reach every server through their link: the host's address.
            worker_env = {
                **env,
                "DATABASE_URL": _with_host(config.database_url, netns.HOST_ADDRESS),
                "AMQP_URL": cluster.urls(netns.HOST_ADDRESS),
                "REDIS_URL": _with_host(redis.url, netns.HOST_ADDRESS),
            }
            for n, host in enumerate(hosts, start=1):
                stack.workers.append(
                    HostProcess(
                        "worker", worker_env, logs / f"worker-{n}.log", records, host.command()
                    )
                )
            stack.seconds["whole deployment"] = time.monotonic() - began
            yield stack
        finally:
            if stack is not None:
                for worker in stack.workers:
                    worker.stop(timeout=90)  # finishes its running tasks, empties its pool
                for api in stack.apis:
                    api.stop(timeout=30)
            if nginx is not None:
                nginx.terminate()
                nginx.wait(timeout=30)
            for server in (cluster, redis, postgres):
                if server is not None:
                    with contextlib.suppress(Exception):
                        server.remove()
            netns.remove_stale()
            end_recorded(records)
            subprocess.run(["rm", "-rf", str(RUN_DIR)], check=False)
