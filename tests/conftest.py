"""Shared fixtures. PostgreSQL, RabbitMQ and Docker are the real ones; none is mocked.

Each test run gets its own database and queue names, so runs never see each other's data; under
pytest-xdist (`make test`) each test process is such a run.
API tests run inside a transaction that is rolled back at the end of each test.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import docker
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.auth import PasswordHasher
from taskservice.config import Config
from taskservice.config_loader import load_config
from taskservice.queue import Publisher
from taskservice.store.migrate import migrate
from tests.fault_stack import Stack
from tests.private_services import PrivatePostgres, PrivateRabbitMQ, PrivateRedis
from tests.service import (
    GENEROUS_RATE_LIMITS,
    TEST_JWT_SECRET,
    delete_queues,
    own_database_and_queues,
)

RUN_ID = uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def base_config() -> Config:
    """The machine's settings (DATABASE_URL, AMQP_URL, SANDBOX_IMAGE, ...), with test overrides."""
    env = dict(os.environ)
    env.update(
        {
            "JWT_SECRET": TEST_JWT_SECRET,
            "BCRYPT_ROUNDS": "4",
            "QUEUE_NAME": f"taskservice.test.{RUN_ID}",
            **GENEROUS_RATE_LIMITS,
        }
    )
    return load_config(env)


@pytest.fixture(scope="session")
def config(base_config: Config) -> Config:
    """The config with a fresh, migrated database of its own, dropped after the run."""
    with own_database_and_queues(base_config, f"taskservice_test_{RUN_ID}") as config:
        yield config


class RolledBackDatabase:
    """One connection in a transaction that the test rolls back; each unit of work is a savepoint.

    Behaves like store.db.Database for the stores, so API tests run the real SQL.
    """

    def __init__(self, connection: psycopg2.extensions.connection):
        self._connection = connection

    @contextlib.contextmanager
    def transaction(self, first=None):
        with self._connection.cursor() as cursor:
            cursor.execute("SAVEPOINT unit")
            try:
                if first is not None:
                    cursor.execute(*first)
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK TO SAVEPOINT unit")
                raise
            cursor.execute("RELEASE SAVEPOINT unit")

    # A one-statement unit of work is a savepoint here too, so that the test can roll it back.
    def statement(self):
        return self.transaction()


@contextlib.contextmanager
def rolled_back(database_url: str) -> Iterator[RolledBackDatabase]:
    connection = psycopg2.connect(database_url, cursor_factory=psycopg2.extras.RealDictCursor)
    try:
        yield RolledBackDatabase(connection)
    finally:
        connection.rollback()
        connection.close()


@pytest.fixture
def db(config: Config):
    with rolled_back(config.database_url) as database:
        yield database


@pytest.fixture(scope="session")
def publisher(config: Config):
    publisher = Publisher(
        config.amqp_url,
        config.queue_name,
        config.broker_timeout_seconds,
        queue_type=config.queue_type,
    )
    yield publisher
    publisher.close()


@pytest.fixture(scope="session")
def hasher() -> PasswordHasher:
    return PasswordHasher(rounds=4)


class FixedClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))


@pytest.fixture
def client(config, db, publisher, hasher, clock) -> testing.TestClient:
    app = create_app(config, Collaborators(db=db, publisher=publisher, hasher=hasher, clock=clock))
    return testing.TestClient(app)


@pytest.fixture(scope="session")
def docker_client():
    client = docker.from_env(timeout=60)
    client.ping()  # fails the test (not skips it) when the engine is away
    yield client
    client.close()


@pytest.fixture
def rabbit():
    """A RabbitMQ node of the test's own, which it may stop and restart."""
    broker = PrivateRabbitMQ()
    broker.start()
    yield broker
    broker.remove()


@pytest.fixture
def redis_server(request):
    """A redis-server of the test's own, which it may stop, restart, flush and fill.

    Its options come from indirect parametrization, e.g. a Redis that fills up:
    ``@pytest.mark.parametrize("redis_server", [{"maxmemory": "1mb"}], indirect=True)``.
    """
    server = PrivateRedis(**getattr(request, "param", {}))
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def stack_factory(config, tmp_path):
    stacks = []

    def make(config=config, **overrides: str) -> Stack:
        stack = Stack(config, tmp_path, **overrides)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop_all()


@pytest.fixture
def queue_config(config):
    """The test config with a queue of its own, so no other worker takes these tasks; the queues
    are deleted afterwards (quorum queues are not free to keep)."""
    own = replace(config, queue_name=f"{config.queue_name}.fault.{uuid.uuid4().hex[:8]}")
    yield own
    delete_queues(own.amqp_url, own.queue_name)


@pytest.fixture
def postgres():
    """A PostgreSQL server of the test's own with a migrated `taskservice` database, which the
    test may stop and start; removed afterwards."""
    server = PrivatePostgres()
    try:
        server.start()
        admin = psycopg2.connect(server.url())
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE taskservice")
        admin.close()
        migrate(server.url("taskservice"))
        yield server
    finally:
        server.remove()
